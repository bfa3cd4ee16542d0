"""The package's shape (issue: a layout that shows the data flow): imports between dali_asr's
modules go one way, function-level and TYPE_CHECKING imports included; few modules sit
directly in dali_asr/; every benchmark script imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "dali_asr"
SKIP = {"reference_child.py", "fairseq2_recipe.py"}
"""Run beside fairseq2 (the reference's virtualenv, or scripts/setup_fairseq2_env.sh's), never
in this one."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The dali_asr modules ``path`` imports anywhere in its body (``from pkg import sub``
    counts as importing ``pkg.sub`` when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dali_asr")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dali_asr"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    # a package's __init__ re-exports its modules: an edge into the package is an edge into it
    return {m: {d for d in _imports(p, modules) if d != m} for m, p in paths.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):
                continue  # a package importing its own modules
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_modules() -> None:
    graph = _graph()
    # the top-level package only re-exports; importing dali_asr.x runs dali_asr/__init__ first
    graph.pop("dali_asr", None)
    for deps in graph.values():
        deps.discard("dali_asr")
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_at_most_eight_modules_directly_in_the_package() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top


@pytest.mark.parametrize(
    "script", sorted(p.name for p in (REPO / "benchmarks").glob("*.py") if p.name not in SKIP)
)
def test_every_benchmark_script_imports(script: str) -> None:
    """A stale import after a move fails here, not in the next benchmark run."""
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, 'benchmarks'); "
         f"import {script[:-3]}"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-1500:]


def test_modules_stay_short() -> None:
    """Every module of the package under 400 lines, every benchmark script under 500."""
    long = [
        (p.relative_to(REPO).as_posix(), n)
        for folder, limit in ((PACKAGE, 400), (REPO / "benchmarks", 500))
        for p in folder.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) >= limit
    ]
    assert not long, long


# Lower layers know nothing of higher ones (the README's "Layout"): a module may import its own
# layer and those listed before it.
LAYERS = [
    {"dali_asr.errors", "dali_asr.keys", "dali_asr.report"},
    {"dali_asr.config", "dali_asr.storage", "dali_asr.text", "dali_asr.batching"},
    {"dali_asr.planning", "dali_asr.batch"},
    {"dali_asr.pipeline", "dali_asr.resume", "dali_asr.telemetry", "dali_asr.checkpoint"},
    {"dali_asr.loader"},
    {"dali_asr.tools", "dali_asr.fairseq2"},
]


def _layer(module: str) -> int:
    for i, layer in enumerate(LAYERS):
        if any(module == top or module.startswith(top + ".") for top in layer):
            return i
    raise AssertionError(f"{module} is in no layer")


def test_imports_go_down_the_layers() -> None:
    upward = [
        (m, d)
        for m, deps in _graph().items()
        if m != "dali_asr"
        for d in deps
        if d != "dali_asr" and _layer(d) > _layer(m)
    ]
    assert not upward, upward
