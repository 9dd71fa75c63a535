"""Command line: argument parsing and wiring only; pipelines are built in edge.compose, the service runs in edge.runtime."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Callable

from edge import config as config_mod
from edge import mask
from edge.models import registry
from edge.config import CameraConfig, Config, ConfigError
from edge.runtime.hardening import harden_tool

log = logging.getLogger("edge")

CAMERA_ID = re.compile(r"[A-Za-z0-9_-]+")  # the rule of [[cameras]] id, checked before anything loads
DEFAULT_WAIT_S = 60.0  # --wait-timeout's default


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _setup_logging(level: str, *, tool: bool = False, quiet: bool = False, log_file: str | None = None) -> None:
    """The log at `level` on stderr (the service: journald keeps it) and in `log_file` when given.

    `quiet` (a tool on a terminal, or one with a log file): stderr shows warnings and errors only, so a
    person sees the progress line and the summary, not the periodic stats; the log file gets everything.
    Raises OSError when the log file cannot be opened.
    """
    from edge.progress import LogHandler

    number = getattr(logging, level.upper())
    # a tool's records go above its progress line, never through it
    screen = LogHandler(sys.stderr) if tool else logging.StreamHandler(sys.stderr)
    screen.setLevel(max(number, logging.WARNING) if quiet else number)
    handlers: list[logging.Handler] = [screen]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(level=number, format=LOG_FORMAT, handlers=handlers)


def _tool_logging(command: str, level: str, args, *, quiet_off_terminal: bool = False) -> int | None:
    """Logging for a tool (replay, batch, eval): quiet on a terminal unless -v; None, or 2 for a bad --log-file."""
    quiet = not args.verbose and (bool(args.log_file) or quiet_off_terminal or sys.stderr.isatty())
    try:
        _setup_logging(level, tool=True, quiet=quiet, log_file=args.log_file)
    except OSError as e:
        print(f"edge-anon {command}: --log-file {args.log_file!r}: cannot write: {e.strerror or e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return None


def _apply(cfg: Config, **changes) -> Config:
    """Apply command-line flags (dotted keys) that were actually given."""
    given = {key.replace("__", "."): value for key, value in changes.items() if value is not None}
    return config_mod.override(cfg, given) if given else cfg


# Exit codes, the same for every command (the epilog of --help and the README say them too).
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INCOMPLETE = 0, 1, 2, 3
EPILOG = """exit codes:
  0    complete (replay: every frame of the feed handled; run: stopped by systemctl stop / SIGTERM)
  1    failed at run time (a frame loop died; subscribe: nothing arrived; replay: no subscriber in time)
  2    bad input: a wrong flag, key or value, a missing or corrupt file or model; nothing was processed
  3    incomplete (replay, batch): the feed ran to its end but not all of it reached the output: every
       frame dropped, a truncated video, unreadable images skipped, or a frame that could not be
       written; the summary line says which
  130  interrupted by Ctrl-C (SIGINT): 128 + the signal (replay, subscribe; the summary line says how far)
  143  interrupted by SIGTERM (replay, subscribe; `run` exits 0 on SIGTERM, systemd's normal stop)
"""


class Parser(argparse.ArgumentParser):
    """argparse that refuses a bad command line in one line (no usage block): `edge-anon replay: ...`."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see --help)\n")


def _serve(cfg: Config, prepare: Callable | None = None, tool_args=None) -> int:
    """Build and run the service; `prepare(service)` runs between start-up and the first frame and may
    return an exit code to stop there. `tool_args` (replay's): log as a tool does (_tool_logging)."""
    from edge.compose import StartupError
    from edge.runtime.service import build_service
    from edge.runtime.hardening import HardeningError, harden_process
    from edge.runtime.systemd import Notifier, StopFlag, install_stop_handlers

    if tool_args is None:
        _setup_logging(cfg.service.log_level)
    elif (rc := _tool_logging("replay", cfg.service.log_level, tool_args)) is not None:
        return rc
    stop = StopFlag()
    install_stop_handlers(stop)
    notifier = Notifier()
    try:
        harden_process(cfg.service.mlock)  # before any frame exists: no core dumps, optionally no swap
        service = build_service(cfg, stop, notifier)
    except (StartupError, HardeningError) as e:
        log.error("refusing to start: %s", e)
        notifier.status(f"refusing to start: {e}")
        return stop.exit_code() or EXIT_BAD_INPUT  # stopped by a signal during start-up: 128 + its number
    if prepare is not None:
        rc = prepare(service)
        if rc is not None:
            service.close()
            return rc
    return service.run()


def cmd_run(args) -> int:
    from edge.compose import load_config  # here, not at the top: it imports onnxruntime (see main)

    return _serve(load_config(args.config, args.set))


class UsageError(ValueError):
    """A command line that cannot mean what the user wants; its message names the flag."""


def check_replay_args(args) -> None:
    """Refuse, naming the flag, what argparse cannot see: conflicts, addresses, non-finite numbers."""
    from edge import wire

    given = [flag for flag, value in (("--bind", args.bind), ("--output-dir", args.output_dir),
                                      ("--output", args.output)) if value]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)}: choose one output (ZeroMQ, a folder or a video)")
    if args.output and Path(args.output).suffix.lower() not in config_mod.VIDEO_SUFFIXES:
        raise UsageError(f"--output: a {' or '.join(config_mod.VIDEO_SUFFIXES)} file (FFV1 lossless or mp4v), "
                         f"got {args.output!r}")
    if args.bind:
        try:
            wire.check_endpoint(args.bind, bind=True)
        except wire.WireError as e:
            raise UsageError(f"--bind {e}") from None
    if args.annotate and not args.output_dir:
        other = " instead of --bind" if args.bind else " instead of --output" if args.output else ""
        raise UsageError(f"--annotate: outlines the painted regions on PNG frames for a person to look at; "
                         f"give --output-dir DIR{other}")
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise UsageError(f"--fps: must be a number > 0, got {args.fps:g}")
    if args.wait_subscribers is not None:
        if args.wait_subscribers < 1:
            raise UsageError(f"--wait-subscribers: must be >= 1, got {args.wait_subscribers}")
        if args.output_dir or args.output:
            raise UsageError("--wait-subscribers: needs a ZeroMQ output (--bind ADDRESS), not a file output")
    if args.wait_timeout is not None:
        if args.wait_subscribers is None:
            raise UsageError("--wait-timeout: only with --wait-subscribers N")
        if not (math.isfinite(args.wait_timeout) and args.wait_timeout >= 0):
            raise UsageError(f"--wait-timeout: must be a number of seconds >= 0 (0: no limit), got {args.wait_timeout:g}")
    if not CAMERA_ID.fullmatch(args.camera_id):
        raise UsageError(f"--camera-id: letters, digits, '-' and '_' only, got {args.camera_id!r}")


def cmd_replay(args) -> int:
    from edge.compose import load_config

    try:
        check_replay_args(args)
    except UsageError as e:
        print(f"edge-anon replay: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    cfg = load_config(args.config, args.set)
    try:
        # realpath, not Path.resolve: a symlink loop is the source's refusal (one line), not a RuntimeError here
        cam = CameraConfig(id=args.camera_id, source=os.path.realpath(args.source), kind="replay",
                           realtime=args.realtime, loop=args.loop, fps=args.fps or 0.0)
    except ValueError as e:  # the camera's own bounds (fps): the flag that set it is named
        print(f"edge-anon replay: --{e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    cfg = dataclasses.replace(cfg, cameras=(cam,))
    if args.output_dir:
        cfg = _apply(cfg, output__kind="folder", output__dir=str(Path(args.output_dir).resolve()))
    elif args.output:
        cfg = _apply(cfg, output__kind="video", output__file=str(Path(args.output).resolve()), output__records="")
    elif args.bind:
        cfg = _apply(cfg, output__kind="zmq", output__bind=args.bind)
    if args.annotate:
        cfg = _apply(cfg, output__annotate=True)
    if not args.realtime:
        cfg = _apply(cfg, service__deadline_ms=0.0)  # as fast as possible: every frame comes out
    cfg = _apply(cfg, mask__style=args.mask, runtime__provider=args.provider, service__log_level=args.log_level)
    if args.wait_subscribers and cfg.output.kind != "zmq":
        print(f"edge-anon replay: --wait-subscribers: needs a ZeroMQ output (--bind ADDRESS); the output is "
              f"{cfg.output.kind!r}", file=sys.stderr)
        return EXIT_BAD_INPUT

    def prepare(service) -> int | None:
        from edge.progress import Progress

        service.signal_exit = True
        service.incomplete_exit = EXIT_INCOMPLETE
        service.report, service.report_label = sys.stderr, "replay"
        if args.wait_subscribers:
            limit = args.wait_timeout if args.wait_timeout is not None else DEFAULT_WAIT_S
            endpoint = service.sink.stats().get("endpoint", cfg.output.bind)
            print(f"replay: waiting for {args.wait_subscribers} subscriber(s) on {endpoint}"
                  + (f" (up to {limit:g} s)" if limit else ""), file=sys.stderr, flush=True)
            if not service.wait_for_subscribers(args.wait_subscribers, limit):
                if service.stop.is_set():
                    print("replay: interrupted while waiting for subscribers; nothing was sent", file=sys.stderr)
                    return service.stop.exit_code()
                got = service.sink.stats().get("subscriptions", 0)
                print(f"replay: {got} of {args.wait_subscribers} subscriber(s) connected within {limit:g} s "
                      f"(--wait-timeout); nothing was sent", file=sys.stderr)
                return EXIT_FAILED
        service.progress = Progress(service.total_frames(), sys.stderr, label="replay")
        return None

    return _serve(cfg, prepare, tool_args=args)


BATCH_FORMATS = ("png", "mkv", "mp4")


def run_self_test(cfg: Config, say: Callable[[str], None]) -> str | None:
    """Build the config's detectors, run the start-up self-test (edge.selftest) on them and close them:
    None when it passed (each result said through `say`) or was skipped (warned), else the one line that
    refuses (a model that does not load included). For `batch` (before Ray starts) and `check-config`."""
    from edge import compose
    from edge.checks import one_line

    if cfg.selftest.skip:
        say(f"warning: {compose.selftest.skip_warning(cfg)}")
        return None
    built = []
    try:
        detector = compose.build_detector(cfg)
        built.append(detector)
        compose.warm_up(detector)
        camera_detectors = compose.build_camera_detectors(cfg)
        built += camera_detectors.values()
        for result in compose.self_test(cfg, detector, camera_detectors):
            say(f"self-test: {result.line()} ({result.seconds:.1f} s)")
    except Exception as e:  # a model that does not load, a reference set that does not read, a floor not met
        return one_line(e)
    finally:
        for det in {id(d): d for d in built}.values():
            det.close()
    return None


def cmd_batch(args) -> int:
    harden_tool()  # the driver: before onnxruntime or a decoder loads; every Ray worker hardens itself
    from edge.compose import load_config

    if args.max_chunks is not None and args.max_chunks < 1:
        print(f"edge-anon batch: --max-chunks: must be >= 1, got {args.max_chunks}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not CAMERA_ID.fullmatch(args.camera_id):
        print(f"edge-anon batch: --camera-id: letters, digits, '-' and '_' only, got {args.camera_id!r}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    cfg = load_config(args.config, args.set)
    if args.format != "png":
        cfg = _apply(cfg, output__kind="video", output__file=f"batch.{args.format}")
    cfg = _apply(cfg, mask__style=args.mask, runtime__provider=args.provider, service__log_level=args.log_level)
    from edge.compose import start_problems

    # what the actors would refuse, found before Ray starts: one line each instead of their tracebacks; weights
    # are resolved here only for the embedded instance (a cluster's nodes have their own)
    problems = start_problems(dataclasses.replace(cfg, cameras=()), for_replay=True, resolve=not args.address)
    if problems:
        for p in problems:
            print(f"edge-anon batch: {p}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if (rc := _tool_logging("batch", cfg.service.log_level, args)) is not None:
        return rc
    # in the driver, before Ray starts and before any input is read; the actors load the same models
    # from the same config (by sha256) and do not rerun it
    refused = run_self_test(dataclasses.replace(cfg, cameras=()), lambda line: print(f"batch: {line}", file=sys.stderr))
    if refused is not None:
        print(f"edge-anon batch: refusing to start: {refused}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        from edge.fleet.run import BatchError, connect, interrupts, run_batch
        from edge.fleet.plan import PlanError
    except ImportError as e:
        print(f"edge-anon batch: needs Ray: pip install 'edge-anon[fleet]' ({e})", file=sys.stderr)
        return EXIT_BAD_INPUT
    import signal
    import time

    try:
        t0 = time.monotonic()
        # SIGTERM ends a batch as Ctrl-C does, during Ray's start-up too (ray.init puts its own handler in
        # place: ours goes back on top once connected)
        with interrupts(), connect(cfg, args.address), interrupts():
            started = time.monotonic() - t0
            result = run_batch(cfg, args.inputs, args.output_dir, camera_id=args.camera_id,
                               max_chunks=args.max_chunks, ray_start_s=started)
    except (BatchError, PlanError, OSError, UnicodeDecodeError) as e:
        print(f"edge-anon batch: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as e:  # before the run began, or a second signal while it ended
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"batch: interrupted ({signal.Signals(signum).name}); finished chunks are in the ledger, rerun the "
              f"same command to go on", file=sys.stderr)
        return 128 + signum
    print(f"batch: {result.summary()} (Ray start-up {started:.1f} s)", file=sys.stderr, flush=True)
    if result.interrupted:
        print(f"batch: interrupted ({signal.Signals(result.interrupted).name}); finished chunks are in the ledger, "
              f"rerun the same command to go on", file=sys.stderr)
    elif result.stopped_early:
        print(f"batch: stopped after {args.max_chunks} chunk(s) (--max-chunks); rerun to finish", file=sys.stderr)
    rc = result.exit_code()
    return EXIT_INCOMPLETE if rc == EXIT_OK and result.incomplete() else rc


def _client_hook(args):
    """The CURVE client hook the key flags ask for; None when neither is given."""
    from edge.security import SecurityError, client_hook

    if not (args.server_key or args.client_key):
        return None
    if not (args.server_key and args.client_key):
        raise SecurityError("CURVE needs both --server-key and --client-key")
    return client_hook(args.server_key, args.client_key)


def cmd_subscribe(args) -> int:
    from edge.security import SecurityError
    from edge.runtime.systemd import StopFlag, install_stop_handlers
    from edge.sinks.folder import FolderSinkError
    from edge.subscribe import SubscribeError, run_subscribe

    stop = StopFlag()
    install_stop_handlers(stop)
    try:
        hook = _client_hook(args)
        counts = run_subscribe(args.connect, save_dir=args.save, count=args.count, timeout_s=args.timeout or None,
                               topics=tuple(args.topic) or ("",), socket_options_hook=hook, stop=stop,
                               on_ready=lambda: print(f"subscribe: waiting for frames from {args.connect}",
                                                      file=sys.stderr, flush=True))
    except (SecurityError, SubscribeError, FolderSinkError) as e:
        print(f"subscribe: {e}", file=sys.stderr)
        return 2
    if "silence" in counts:
        print(f"subscribe: {counts['silence']}", file=sys.stderr)
    print(json.dumps(counts), file=sys.stderr)
    if counts["ended"] == "interrupted":
        return stop.exit_code()
    return 1 if "silence" in counts else 0


def cmd_check_config(args) -> int:
    from edge.compose import load_config, start_problems

    try:
        cfg = load_config(args.config, args.set)
        problems = start_problems(cfg, for_replay=args.replay, resolve=args.models)
    except ConfigError as e:
        print(f"invalid: {e}", file=sys.stderr)
        return 2
    if problems:
        for p in problems:
            print(f"invalid: {p}", file=sys.stderr)
        return 2
    said: list[str] = []
    if args.models:  # `run` runs it on the models it loads: so does its check
        refused = run_self_test(cfg, said.append)
        if refused is not None:
            print(f"invalid: {refused}", file=sys.stderr)
            return 2
    else:
        said.append("self-test: not run (--no-models: no model is loaded)")
    print(f"ok: {args.config}: {len(cfg.cameras)} camera(s), output {cfg.output.kind}, "
          + ", ".join(f"{name}s {'on' if c.enabled else 'off'}" for name, c in cfg.detect.classes()))
    from edge.compose import stages

    from edge.compose import stage_warnings

    for cam_id in [c.id for c in cfg.cameras] or [None]:
        print(f"  {cam_id or 'default'}: {stages(cfg, cam_id)}")
    for warning in dict.fromkeys(w for cam_id in [c.id for c in cfg.cameras] or [None]
                                 for w in stage_warnings(cfg, cam_id)):
        print(f"  warning: {warning}")
    for line in said:
        print(f"  {line}")
    if args.dump:
        print(json.dumps(config_mod.to_dict(cfg), indent=2))
    return 0


def cmd_models(args) -> int:
    cards = registry.load_cards(args.cards_dir)
    names = args.names or sorted(cards)
    unknown = [n for n in names if n not in cards]
    if unknown:
        print(f"unknown model(s) {unknown}; known: {sorted(cards)}", file=sys.stderr)
        return 2
    rc = 0
    for name in names:
        c = cards[name]
        try:
            if args.action == "fetch":
                from edge.models import fetch  # the downloader: loaded for this action only, never by the service

                path = fetch.fetch(c, cache_dir=args.cache_dir, mirrors=args.mirror)
                print(f"{name}\t{path}")
            elif args.action == "path":
                print(registry.resolve(c, cache_dir=args.cache_dir, mirrors=args.mirror))
            elif args.action == "verify":
                path = registry.resolve(c, cache_dir=args.cache_dir, mirrors=args.mirror)
                print(f"ok\t{name}\t{c.sha256}\t{path}")
            else:
                d = registry.describe(c, cache_dir=args.cache_dir, mirrors=args.mirror)
                print(f"{name:16s} {c.family:13s} {','.join(c.classes):6s} {c.licence:11s} "
                      f"{d.get('status', '?'):9s} {d.get('path') or '-'}\n"
                      f"{'':16s} trained on: {c.training_data_terms}")
        except registry.ModelError as e:
            print(f"error\t{name}\t{e}", file=sys.stderr)
            rc = 2
    return rc


def cmd_keygen(args) -> int:
    from edge.security import SecurityError, keygen

    try:
        public, secret = keygen(args.dir, args.name)
    except (SecurityError, OSError) as e:
        print(f"keygen: {e}", file=sys.stderr)
        return 2
    print(f"public\t{public}\nsecret\t{secret}")
    return 0


def cmd_unit_paths(args) -> int:
    from edge.runtime.systemd import unit_dropin, writable_entries

    cfg = config_mod.load(args.config)
    if args.dropin:
        print(unit_dropin(cfg), end="")
    else:
        for kind, path in writable_entries(cfg):
            print(f"{kind}\t{path}")
    return 0


# `eval`'s --dataset choices: the keys of edge.eval.evaluate.DEFAULT_SETS (a test holds them equal), spelled
# here because the evaluation is tooling that only this subcommand may load.
EVAL_DATASETS = ("faces", "plates")


def cmd_eval(args) -> int:
    harden_tool()  # before onnxruntime loads and before any image is decoded
    from edge.compose import load_config
    from edge.eval import evaluate, footage
    from edge.progress import track

    if args.all and args.dataset:
        print("eval: --all runs every set; --dataset picks one, give one of them", file=sys.stderr)
        return 2
    if args.only and not (args.all or args.clips):
        print("eval: --only selects sets of --all (or clips of --clips)", file=sys.stderr)
        return 2
    if args.clips and args.dataset:
        print("eval: --clips runs the unlabelled clips; --dataset picks one labelled set, give one of them",
              file=sys.stderr)
        return 2
    if not (math.isfinite(args.shrink) and 0 < args.shrink <= 1):
        print(f"eval: --shrink {args.shrink}: expected a factor in (0, 1]", file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 1:
        print(f"eval: --limit {args.limit}: expected at least 1", file=sys.stderr)
        return 2
    if args.json:
        why = unwritable(args.json)
        if why:  # before the evaluation, not after it has run for minutes
            print(f"eval: --json {args.json}: {why}", file=sys.stderr)
            return 2
    cfg = load_config(args.config, args.set)
    # the evaluation's stderr has always been warnings only, on a terminal or not: -v or --log-file for more
    if (rc := _tool_logging("eval", cfg.service.log_level, args, quiet_off_terminal=True)) is not None:
        return rc
    collector = None
    if args.report:
        from edge.compose import class_table
        from edge.eval import report

        try:  # before minutes of evaluation, not after
            Path(args.report).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            print(f"eval: --report {args.report}: cannot make the folder ({e.strerror or e})", file=sys.stderr)
            return 2
        collector = report.Collector(classes=class_table(cfg), style=cfg.mask)
    try:
        if args.all or args.clips:
            sets, clips = evaluate.select(args.all, args.clips, args.only, args.data, args.clips_dir)
            result = evaluate.run_all(cfg, [s.limited(args.limit) for s in sets], shrink=args.shrink,
                                      keep_per_image=args.per_image, config_file=args.config, overrides=args.set,
                                      utility=args.utility, clips=clips, clip_limit=args.limit, progress=log.info,
                                      on_image=collector.on_image if collector else None,
                                      on_frame=collector.on_frame if collector else None)
            page = result
            if result["sets"]:
                print(evaluate.format_sets_table(result))
            if "wider_dev_face_targets" in result:
                print(evaluate.format_targets(result["sets"]["wider_dev"]["classes"]["face"]))
            if result.get("clips"):
                print(footage.format_clips_table(result["clips"]))
            print(f"{sum(s['images'] for s in result['sets'].values())} images, "
                  f"{sum(c['frames'] for c in result.get('clips', {}).values())} clip frames in {result['wall_s']} s")
        else:
            dataset = args.dataset or "faces"
            cfg = evaluate.for_dataset(cfg, dataset, args.all_classes)
            items = evaluate.load_items(dataset, args.data)[: args.limit]
            result = evaluate.run(cfg, track(items, f"eval {dataset}"), dataset, shrink=args.shrink, keep_per_image=args.per_image,
                                  config_file=args.config, overrides=args.set, utility=args.utility,
                                  on_image=collector.on_image if collector else None)
            if collector is not None:
                page = report.dataset_page(result, evaluate.DEFAULT_SETS[dataset][0], evaluate.DATASET_CLASS[dataset])
            name = args.name or f"{dataset}{'' if args.shrink == 1 else f' x{args.shrink:g}'}"
            print(evaluate.format_table({name: result}))
            if "targets" in result:
                print(evaluate.format_targets(result))
    except (evaluate.DatasetError, footage.ClipError) as e:
        print(f"eval: {e}", file=sys.stderr)
        return 2
    if collector is not None:
        result["report"] = str(report.write(args.report, page, collector,
                                            f"edge-anon eval: {args.config or 'the defaults'}"))
        print(f"report: {result['report']}")
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(result, indent=2))
        except OSError as e:  # it was writable when checked: something changed meanwhile
            print(f"eval: --json {args.json}: cannot be written ({e.strerror or e}); the tables above are the results",
                  file=sys.stderr)
            return EXIT_FAILED
    return 0


def add_log_flags(sp) -> None:
    sp.add_argument("--log-file", metavar="PATH",
                    help="append the log (start-up, periodic stats JSON, warnings) to PATH; stderr keeps the "
                         "warnings")
    sp.add_argument("-v", "--verbose", action="store_true",
                    help="the log on stderr too (on a terminal, stderr shows only the progress line, the summary "
                         "and warnings)")


def unwritable(path: str) -> str | None:
    """Why a file cannot be written at `path`, found by trying (root passes every access() check); None if it
    can. Creates its missing parent folders, leaves no file behind."""
    p = Path(path)
    if p.is_dir():
        return "is a folder"
    above = next((a for a in p.parents if a.exists()), None)
    if above is not None and not above.is_dir():
        return f"cannot be written ({above} is not a folder)"
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        # a probe file opened by name (tempfile's wrapper would first open the folder itself for writing, which
        # the tools' audit counts as a write outside their outputs)
        probe = p.parent / f".{p.name}.{os.getpid()}.probe"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
        if p.exists():
            with open(p, "r+b"):
                pass
    except OSError as e:
        return f"cannot be written ({(e.strerror or str(e)).lower()})"
    return None


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="edge-anon", description=__doc__, epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp, required: bool) -> None:
        sp.add_argument("--config", "-c", required=required, help="TOML configuration file")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                        help="override a config key, e.g. --set detect.face.score_threshold=0.4")

    sp = sub.add_parser("run", help="run the service from a config file (cameras, output)")
    with_config(sp, True)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("replay", help="anonymize a recorded feed (video file or image folder)", epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="A progress line on stderr while it runs (only on a terminal), then one summary "
                                    "line: frames in, masked, masked whole, dropped with reasons, output.")
    sp.add_argument("source", help="video file or folder of images")
    with_config(sp, False)
    sp.add_argument("--output-dir", help="write masked frames as PNG + detections.jsonl here")
    sp.add_argument("--output", metavar="FILE", help="write one masked video: FILE.mkv (FFV1, lossless) or FILE.mp4 "
                                                     "(mp4v, lossy); its records beside it, FILE with .jsonl")
    sp.add_argument("--bind", help="publish over ZeroMQ on this address instead (tcp://HOST:PORT or ipc://PATH)")
    sp.add_argument("--annotate", action="store_true",
                    help="with --output-dir: outline and label each painted region on the PNGs (class, score, "
                         "'held' when the tracker held it), to see why it was painted")
    sp.add_argument("--wait-subscribers", type=int, metavar="N",
                    help="with --bind: send nothing until N subscribers are connected")
    sp.add_argument("--wait-timeout", type=float, metavar="S",
                    help=f"give up (exit 1, nothing sent) when they are not there after S seconds "
                         f"(default {DEFAULT_WAIT_S:g}; 0 = wait until stopped)")
    sp.add_argument("--realtime", action="store_true", help="pace frames at the recording's fps")
    sp.add_argument("--loop", action="store_true", help="start again at the end")
    sp.add_argument("--fps", type=float, help="replay rate (needed for image folders with --realtime)")
    sp.add_argument("--mask", choices=mask.STYLES)
    sp.add_argument("--provider", choices=config_mod.PROVIDER_NAMES)
    sp.add_argument("--camera-id", default="replay")
    sp.add_argument("--log-level", choices=config_mod.LOG_LEVELS)
    add_log_flags(sp)
    sp.set_defaults(func=cmd_replay)

    sp = sub.add_parser("batch", help="anonymize many recordings on Ray (local by default, or a cluster)",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Inputs are video files, image folders or text files listing them (.txt, "
                                    ".list, .lst). Per input a folder in --output-dir with its masked frames (PNGs, "
                                    "or one video with --format mkv/mp4), detections.jsonl and audit.jsonl, the same "
                                    "as `replay` writes. A rerun does only what a ledger in --output-dir lacks.")
    sp.add_argument("inputs", nargs="+", metavar="INPUT")
    sp.add_argument("--output-dir", required=True, help="one folder per input is made here")
    with_config(sp, False)
    sp.add_argument("--address", help="join a Ray cluster (auto, or ray://HOST:PORT); default: a local instance "
                                      "inside this process, sized by [fleet] num_cpus or the machine's cores")
    sp.add_argument("--format", choices=BATCH_FORMATS, default="png",
                    help="png: a folder of PNG frames; mkv: FFV1 video (lossless); mp4: mp4v video (lossy)")
    sp.add_argument("--mask", choices=mask.STYLES)
    sp.add_argument("--provider", choices=config_mod.PROVIDER_NAMES)
    sp.add_argument("--camera-id", default="replay", help="camera id of the records (as replay's --camera-id)")
    sp.add_argument("--log-level", choices=config_mod.LOG_LEVELS)
    add_log_flags(sp)
    sp.add_argument("--max-chunks", type=int, metavar="N",
                    help="stop after N detection chunks (a partial run; the next run goes on from the ledger)")
    sp.set_defaults(func=cmd_batch)

    sp = sub.add_parser("subscribe", help="receive clean frames; optionally save them")
    sp.add_argument("--connect", default="tcp://127.0.0.1:5555")
    sp.add_argument("--save", metavar="DIR", help="save masked frames as PNG here")
    sp.add_argument("--count", type=int, help="stop after this many frames")
    sp.add_argument("--timeout", type=float, default=10.0,
                    help="stop when no frame arrived for this many seconds (default 10; 0 = wait forever)")
    sp.add_argument("--topic", action="append", default=[], help="camera id to subscribe to (default: all)")
    sp.add_argument("--server-key", metavar="FILE", help="CURVE: the publisher's public certificate (server.key)")
    sp.add_argument("--client-key", metavar="FILE", help="CURVE: this client's secret certificate (NAME.key_secret)")
    sp.set_defaults(func=cmd_subscribe)

    sp = sub.add_parser("check-config", help="validate a config file (and its models) without starting anything")
    sp.add_argument("config")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", default=[])
    sp.add_argument("--no-models", dest="models", action="store_false",
                    help="do not resolve and verify model weights (the model cards are still checked)")
    sp.add_argument("--replay", action="store_true",
                    help="the config is for `replay`, which adds its own camera: no [[cameras]] is fine")
    sp.add_argument("--dump", action="store_true", help="print the effective configuration as JSON")
    sp.set_defaults(func=cmd_check_config)

    sp = sub.add_parser("models", help="list, verify, locate or fetch model weights (by sha256)")
    sp.add_argument("action", choices=("list", "verify", "path", "fetch"))
    sp.add_argument("names", nargs="*")
    sp.add_argument("--cache-dir")
    sp.add_argument("--mirror", action="append", default=[], help="extra folder to search (EDGE_MODEL_PATH adds more)")
    sp.add_argument("--cards-dir")
    sp.set_defaults(func=cmd_models)

    sp = sub.add_parser("keygen", help="make a CURVE key pair (server, or one per client) for the output")
    sp.add_argument("dir", help="folder for NAME.key (public) and NAME.key_secret (mode 0600)")
    sp.add_argument("--name", default="server", help="file name stem (default: server)")
    sp.set_defaults(func=cmd_keygen)

    sp = sub.add_parser("unit-paths", help="the paths a config writes (systemd ReadWritePaths drop-in)")
    sp.add_argument("config")
    sp.add_argument("--dropin", action="store_true",
                    help="print a [Service] drop-in instead of one 'dir|file<TAB>path' line per path")
    sp.set_defaults(func=cmd_unit_paths)

    sp = sub.add_parser("eval", help="measure protected share per size bucket on annotated image sets")
    sp.add_argument("--all", action="store_true",
                    help="every dev set under the eval root (faces/, plates/, dashcam/), faces and plates per "
                         "size bucket, with the config as it is (every enabled stage on), and the clips (--clips)")
    sp.add_argument("--only", action="append", default=[], metavar="SET",
                    help="with --all or --clips: only this set (e.g. berlin_dev) or clip (file name or stem); "
                         "may be repeated")
    sp.add_argument("--dataset", choices=EVAL_DATASETS,
                    help="one set with only its class on (default faces): faces = wider_dev, plates = openalpr_dev")
    sp.add_argument("--data", help="--dataset: gt file (faces) or folder (plates); --all: the eval root "
                                   "(default ../shared/data/eval)")
    sp.add_argument("--config", "-c", help="TOML config (its detect/mask/runtime sections are used)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set detect.face.scales=[1.0,2.0]")
    sp.add_argument("--shrink", type=float, default=1.0, help="resize images (and boxes) by this factor first")
    sp.add_argument("--limit", type=int, help="only the first N images (of each set with --all; frames of each clip)")
    sp.add_argument("--json", help="write the results here")
    sp.add_argument("--name", help="row label in the table (--dataset)")
    sp.add_argument("--all-classes", action="store_true",
                    help="--dataset: keep the config's other detectors on (their masks count as over-masking)")
    sp.add_argument("--per-image", action="store_true", help="add per-image counts to the JSON")
    add_log_flags(sp)
    sp.add_argument("--clips", action="store_true",
                    help="the unlabelled clips (video files and image folders in --clips-dir), each through the "
                         "replay pipeline with its hold: painted share of the frame (mean, max, per class) and "
                         "utility; --all includes them")
    sp.add_argument("--clips-dir", help="where the clips are (default ../shared/data/video)")
    sp.add_argument("--report", metavar="DIR",
                    help="write a static HTML report here (index.html + img/): plots, then each set's and clip's "
                         "worst frames, masked, with painted regions, labels and lost objects drawn")
    sp.add_argument("--no-utility", dest="utility", action="store_false",
                    help="skip utility retention (the COCO judge's two passes per image)")
    sp.set_defaults(func=cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    from edge.runtime.hardening import disable_runtime_telemetry

    disable_runtime_telemetry()  # before anything imports onnxruntime (it writes under ~/.cache otherwise)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"invalid configuration: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
