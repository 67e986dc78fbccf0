"""The layout's rules, checked: imports run one way (kernels <- models <- weights <- pipeline <-
cli/bench/server/batch; audio and schedulers know no model), no import cycles, and every module
imports on its own in a fresh interpreter."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT

# package (or module) -> the minriff packages it must never import, directly or lazily
FORBIDDEN = {
    "minriff.kernels": ["minriff.models", "minriff.weights", "minriff.audio", "minriff.schedulers", "minriff.pipeline",
                        "minriff.cli", "minriff.bench", "minriff.server", "minriff.batch"],
    "minriff.models": ["minriff.weights", "minriff.audio", "minriff.schedulers", "minriff.pipeline", "minriff.cli",
                       "minriff.bench", "minriff.server", "minriff.batch"],
    "minriff.weights": ["minriff.audio", "minriff.pipeline", "minriff.cli", "minriff.bench", "minriff.server",
                        "minriff.batch"],
    "minriff.audio": ["minriff.kernels", "minriff.models", "minriff.weights", "minriff.schedulers",
                      "minriff.pipeline", "minriff.cli", "minriff.bench", "minriff.server", "minriff.batch"],
    "minriff.schedulers": ["minriff.kernels", "minriff.models", "minriff.weights", "minriff.audio",
                           "minriff.pipeline", "minriff.cli", "minriff.bench", "minriff.server", "minriff.batch"],
    "minriff.pipeline": ["minriff.cli", "minriff.bench", "minriff.server", "minriff.batch"],
    # the streaming loop is pipeline-level plain Python: the server uses it, never the reverse
    "minriff.stream": ["minriff.cli", "minriff.bench", "minriff.server", "minriff.batch"],
    "minriff.server": ["minriff.cli", "minriff.bench", "minriff.batch"],
    "minriff.batch": ["minriff.cli", "minriff.bench", "minriff.server"],
}
# the small shared modules at the top of minriff/ sit below everything that is not the pipeline
for leaf in ("minriff.errors", "minriff.atomic", "minriff.configs", "minriff.rng", "minriff.progress",
             "minriff.values", "minriff.images", "minriff.deepcache", "minriff.presets", "minriff.sysinfo"):
    FORBIDDEN[leaf] = FORBIDDEN["minriff.models"] + ["minriff.kernels", "minriff.models"]


def module_files() -> dict[str, Path]:
    """minriff module name -> file, for minriff/ and kernels/ (installed as minriff.kernels)."""
    out = {}
    for base, prefix in ((ROOT / "minriff", "minriff"), (ROOT / "kernels", "minriff.kernels")):
        for f in sorted(base.rglob("*.py")):
            parts = list(f.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = f
    return out


MODULES = module_files()


def imports_of(name: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported minriff module, line, at module top?) for every import in a file, lazy ones too."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            # `from pkg import sub` imports the submodule; `from pkg import name` the package
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            if t in MODULES:
                found.append((t, node.lineno, id(node) in top))
    return found


def rule_for(name: str):
    for owner in sorted(FORBIDDEN, key=len, reverse=True):
        if name == owner or name.startswith(owner + "."):
            return owner, FORBIDDEN[owner]
    return None, []


def test_imports_run_one_way():
    wrong = []
    for name, path in MODULES.items():
        owner, forbidden = rule_for(name)
        for target, line, _ in imports_of(name, path):
            if any(target == f or target.startswith(f + ".") for f in forbidden):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {name} imports {target} ({owner} must not)")
    assert not wrong, "\n".join(wrong)


def module_graph(modules: dict[str, Path]) -> dict[str, set]:
    """name -> the minriff modules it imports at module top (these run at import time)."""
    graph = {name: {t for t, _, top in imports_of(name, path) if top and t != name} for name, path in modules.items()}
    # importing a package's submodule runs the package's __init__ first
    for name in list(graph):
        for t in list(graph[name]):
            parent = t.rsplit(".", 1)[0]
            if parent in graph and parent != name and not name.startswith(parent + "."):
                graph[name].add(parent)
    return graph


def find_cycles(graph: dict[str, set]) -> list[str]:
    state, stack, cycles = {}, [], []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == "open":
                cycles.append(" -> ".join(stack[stack.index(m):] + [m]))
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return cycles


def test_no_import_cycles_at_module_top():
    cycles = find_cycles(module_graph(MODULES))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_rules_can_fail():
    """The checker sees lazy imports and relative ones (so the rules above are not vacuous)."""
    fake = ROOT / "minriff" / "models" / "_layout_probe.py"
    name = "minriff.models._layout_probe"
    try:
        fake.write_text("from minriff.models import nn\n\n\ndef f():\n    from minriff import pipeline\n"
                        "    from ..weights import format\n")
        MODULES[name] = fake
        targets = {t for t, _, _ in imports_of(name, fake)}
        assert {"minriff.models.nn", "minriff.pipeline", "minriff.weights.format"} <= targets
        assert rule_for(name)[0] == "minriff.models"
        # and a cycle through it (nn importing the probe at its top) is found
        graph = module_graph(MODULES)
        graph["minriff.models.nn"].add(name)
        assert any(name in c for c in find_cycles(graph))
    finally:
        MODULES.pop(name, None)
        fake.unlink(missing_ok=True)


GROUPS = ("kernels", "models", "weights", "audio", "schedulers", "cli", "bench", "server")


def group_of(name: str) -> str:
    part = name.split(".")[1] if "." in name else ""
    return part if part in GROUPS else "top"


@pytest.mark.parametrize("group", [*GROUPS, "top"])
def test_every_module_imports_alone(group):
    """Each module imported first (all of minriff unloaded before it) in one fresh interpreter per group."""
    names = [n for n in MODULES if group_of(n) == group and not n.endswith("__main__")]
    assert names, group
    code = "import sys, importlib\nfor n in sys.argv[1:]:\n" \
           "    for k in [k for k in sys.modules if k == 'minriff' or k.startswith('minriff.')]:\n" \
           "        del sys.modules[k]\n" \
           "    importlib.import_module(n)\n"
    r = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def test_import_minriff_is_light():
    """`import minriff` loads neither numpy nor Numba (so nothing is compiled or even imported
    until a model or kernel is asked for); the pipeline comes on first use of minriff.Riffusion."""
    code = ("import sys, minriff\n"
            "heavy = sorted(m for m in ('numpy', 'numba', 'scipy', 'PIL', 'minriff.pipeline') if m in sys.modules)\n"
            "print(heavy)\n"
            "minriff.Riffusion\n"
            "print('minriff.pipeline' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[]", "True"], r.stdout
