"""The package's shape, checked from its source: no import cycles, the runtime never reaches the tooling,
and nobody imports another module's private names.

Every import statement counts, function-level ones included (a lazy import still ties two modules
together), and importing a submodule counts as importing its parent packages (Python runs their
__init__ first).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edge"
# The service, the library it is built from, and everything they import: never the evaluation, fetching
# or the fleet batch (Ray).
RUNTIME_ROOTS = ("edge.runtime.service", "edge.compose", "edge.pipeline")
TOOLING = ("edge.eval", "edge.models.fetch", "edge.fleet")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_names(tree: ast.AST, importer: str, is_package: bool):
    """(module, names) for every import statement in the tree, relative imports resolved."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = importer.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, tuple(a.name for a in node.names)


def parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for target, names in imported_names(tree, name, path.name == "__init__.py"):
            hits = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            if target in modules and len(hits) < len(names or (None,)):
                hits.append(target)  # `from pkg import name` where name is not a submodule imports pkg itself
            for hit in hits:
                graph[name].update(m for m in (*parents(hit), hit) if m in modules and m != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def reachable(graph: dict[str, set[str]], roots: tuple[str, ...]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return seen


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(project_modules())


def test_the_checker_finds_a_cycle_and_a_lazy_import() -> None:
    """The checker itself: a two-module cycle made only of a function-level import is found."""
    g = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert cycles(g) == [["a", "b"]]
    tree = ast.parse("def f():\n    from edge.eval import evaluate\n")
    assert list(imported_names(tree, "edge.cli", False)) == [("edge.eval", ("evaluate",))]


def test_no_import_cycles(graph) -> None:
    assert cycles(graph) == []


def test_the_runtime_never_imports_the_tooling(graph) -> None:
    for root in RUNTIME_ROOTS:
        assert root in graph, f"{root} is gone: update RUNTIME_ROOTS"
    tooling = sorted(m for m in reachable(graph, RUNTIME_ROOTS) if m.startswith(TOOLING))
    assert tooling == []


@pytest.mark.parametrize("folder", ["edge", "scripts", "calibration", "tests"])
def test_no_private_name_is_imported_across_modules(folder) -> None:
    offenders = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("edge", "calibration"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}: {', '.join(private)}")
    assert offenders == []


def test_the_command_line_loads_neither_ray_nor_the_fleet_code_at_import() -> None:
    code = "import sys, edge.cli; edge.cli.build_parser(); print([m for m in ('ray', 'edge.fleet') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_the_command_line_switches_telemetry_off_before_onnxruntime_loads() -> None:
    """onnxruntime reads ORT_DISABLE_TELEMETRY once, at import: the CLI module must not import it."""
    code = "import sys, edge.cli; edge.cli.build_parser(); print('onnxruntime' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.stdout.strip() == "False", r.stderr
    r = subprocess.run([sys.executable, "-m", "edge", "check-config", "--no-models", "configs/gpu-1080p.toml"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0 and "telemetry" not in r.stderr, r.stderr


def test_the_runtime_imports_onnx_only_to_rewrite_a_model() -> None:
    """onnx takes most of a second to import: the service's start-up, and every command, pays it only when a
    model is rewritten (graph preprocessing, fp16, fixed input dims), never to decode outputs."""
    code = "import sys, edge.cli, edge.runtime.service, edge.detect.families.yunet; print('onnx' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.stdout.strip() == "False", r.stderr
