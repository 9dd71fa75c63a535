#!/usr/bin/env bash
# Install edge-anon as a systemd service on a vehicle computer.
#
#   sudo scripts/install-service.sh --models DIR [--instance NAME --config FILE] [--gpu] [--start]
#   scripts/install-service.sh --dry-run ...      # print every step, change nothing (no root needed)
#
# Steps: system user edge-anon (group video for the cameras); a virtualenv in PREFIX/venv with the
# project installed (--wheels DIR for an offline install); model weights (verified by sha256 at every
# start) in PREFIX/models and their cards in PREFIX/cards; the template unit edge-anon@.service;
# /etc/edge-anon for the configs. With --instance/--config: the config as /etc/edge-anon/NAME.toml
# (validated first), the folders and files it writes created for the service user, and the drop-in
# that makes exactly those writable (edge-anon unit-paths --dropin); then the unit is enabled.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
prefix=/opt/edge-anon
etc=/etc/edge-anon
unit_dir=/etc/systemd/system
user=edge-anon
python=${PYTHON:-python3}
dry_run=0 gpu=0 start=0
models="" wheels="" instance="" config=""

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "install-service: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --prefix) prefix=${2:?}; shift ;;
        --models) models=${2:?}; shift ;;
        --wheels) wheels=${2:?}; shift ;;
        --instance) instance=${2:?}; shift ;;
        --config) config=${2:?}; shift ;;
        --unit-dir) unit_dir=${2:?}; shift ;;
        --etc) etc=${2:?}; shift ;;
        --gpu) gpu=1 ;;
        --start) start=1 ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
    shift
done

# run CMD...: execute, or in dry-run print it shell-quoted
run() {
    if [ "$dry_run" = 1 ]; then
        printf '+'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

# write_file PATH MODE < content
write_file() {
    local content; content=$(cat)
    if [ "$dry_run" = 1 ]; then
        printf '+ write %s (mode %s):\n%s\n' "$1" "$2" "$content" | sed '2,$s/^/|   /'
    else
        printf '%s\n' "$content" > "$1.new" && chmod "$2" "$1.new" && mv "$1.new" "$1"
    fi
}

# edge CMD...: the project's CLI from the source tree (read-only commands, also in dry-run)
edge() { PYTHONPATH="$src" "$python" -m edge "$@"; }

[ -n "$instance" ] && [ -z "$config" ] && die "--instance needs --config"
[ -n "$config" ] && [ -z "$instance" ] && die "--config needs --instance"
[ -n "$instance" ] && ! [[ "$instance" =~ ^[A-Za-z0-9_-]+$ ]] && die "--instance: letters, digits, '-' and '_' only"
[ "$dry_run" = 1 ] || [ "$(id -u)" = 0 ] || die "run as root (or with --dry-run)"
[ -n "$models" ] && [ ! -d "$models" ] && die "--models $models: no such folder"
if [ -n "$config" ]; then
    # refuse early, with the service's own message, rather than install something that cannot start
    edge check-config --no-models "$config" >/dev/null || die "$config does not validate"
fi

echo "# user and group"
if ! id "$user" >/dev/null 2>&1; then
    run useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --user-group "$user"
fi
run usermod --append --groups video "$user"

echo "# virtualenv in $prefix/venv"
run install -d -m 0755 "$prefix" "$prefix/models" "$prefix/cards"
run "$python" -m venv "$prefix/venv"
if [ -n "$wheels" ]; then
    run "$prefix/venv/bin/pip" install --no-index --find-links "$wheels" "$src"
else
    run "$prefix/venv/bin/pip" install "$src"
fi

echo "# model cards and weights"
for card in "$src"/models/*.toml; do
    run install -m 0644 "$card" "$prefix/cards/"
done
if [ -n "$models" ]; then
    for weights in "$models"/*.onnx; do
        [ -e "$weights" ] && run install -m 0644 "$weights" "$prefix/models/"
    done
fi

echo "# unit"
if [ "$prefix" = /opt/edge-anon ]; then
    run install -m 0644 "$src/systemd/edge-anon@.service" "$unit_dir/edge-anon@.service"
else
    sed "s#/opt/edge-anon#$prefix#g" "$src/systemd/edge-anon@.service" | write_file "$unit_dir/edge-anon@.service" 0644
fi
run install -d -m 0750 -o root -g "$user" "$etc"

if [ -n "$instance" ]; then
    echo "# instance $instance"
    dropin_dir="$unit_dir/edge-anon@$instance.service.d"
    run install -m 0640 -o root -g "$user" "$config" "$etc/$instance.toml"
    # relative paths in a config are relative to its file: read the installed copy (use absolute paths)
    installed="$etc/$instance.toml"
    [ "$dry_run" = 1 ] && installed=$config
    # what the config writes: created for the service user, then made writable by the drop-in
    while IFS=$'\t' read -r kind path; do
        if [ "$kind" = dir ]; then
            run install -d -m 0750 -o "$user" -g "$user" "$path"
        else
            run install -d -m 0750 -o "$user" -g "$user" "$(dirname "$path")"
            [ -e "$path" ] || run install -m 0640 -o "$user" -g "$user" /dev/null "$path"
        fi
    done < <(edge unit-paths "$installed")
    run install -d -m 0755 "$dropin_dir"
    edge unit-paths --dropin "$installed" | write_file "$dropin_dir/paths.conf" 0644
    if [ "$gpu" = 1 ]; then
        run install -m 0644 "$src/systemd/gpu.conf" "$dropin_dir/gpu.conf"
    fi
    run systemctl daemon-reload
    run systemctl enable "edge-anon@$instance.service"
    if [ "$start" = 1 ]; then
        run systemctl restart "edge-anon@$instance.service"
    fi
else
    run systemctl daemon-reload
fi
if [ "$dry_run" = 1 ]; then echo "# dry run: nothing was changed"; else echo "# installed"; fi
