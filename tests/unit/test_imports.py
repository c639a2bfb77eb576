"""The import rules of the code, read from the source (ast), not from a convention:

- no import circle in any package (module-level or inside a function: both run sooner or later);
- nothing imports a private (underscore) name from another module;
- the HTTP side (``serve.http_worker``, and what it stands on: ``serve.contract``, ``serve.usercode``)
  never imports the model side (``serve.model_process``) or TensorFlow, so an HTTP worker stays
  small and starts in well under 2 s. ``test_http_worker_imports_no_tensorflow`` checks the same
  at run time, in a fresh interpreter.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# sagemaker_tf_deploy (deploy/) joins once its circles are broken (issue 26, the deploy half).
PACKAGES = {"serve": REPO / "serve", "model_archive": REPO / "deploy" / "model_archive"}


def _modules() -> dict[str, Path]:
    found = {}
    for top, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("")
            parts = [top, *rel.parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    is_package = MODULES[module].name == "__init__.py"
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in MODULE."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                # "from pkg import module" imports a module; "from module import name" a name
                found.append((sub, None, node.lineno) if sub in MODULES else (target, alias.name, node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module in MODULES:
        edges = set()
        for target, _, _ in imports_of(module):
            while target and target not in MODULES:  # a submodule's parent package, or nothing of ours
                target = target.rpartition(".")[0]
            if target and target != module and not module.startswith(target + "."):
                edges.add(target)
        graph[module] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    cycles = _cycles(_graph())
    assert not cycles, "import circles (move the shared piece down a layer):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_names_from_other_modules():
    bad = [f"{module} (line {line}) takes {name} from {target}"
           for module in MODULES for target, name, line in imports_of(module)
           if name and name.startswith("_") and not name.startswith("__") and target != module]
    assert not bad, "private names imported from another module (make them public, or move them):\n" + "\n".join(bad)


HTTP_SIDE = ("serve.http_worker", "serve.contract", "serve.usercode")
FORBIDDEN = ("serve.model_process", "tensorflow", "keras", "tf_keras")


def _under(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_http_side_never_imports_the_model_side():
    bad = [f"{module} (line {line}) imports {target}"
           for module in MODULES if _under(module, HTTP_SIDE)
           for target, _, line in imports_of(module) if _under(target, FORBIDDEN)]
    assert not bad, ("the HTTP workers' code (and the contract it stands on) must not import the model "
                     "process's code or TensorFlow:\n" + "\n".join(bad))


def test_the_boundary_check_sees_an_import():
    assert _under("serve.model_process.model", FORBIDDEN) and _under("tensorflow.python", FORBIDDEN)
    assert any(target == "serve.contract.signature" for target, _, _ in imports_of("serve.http_worker.modelclient"))


@pytest.mark.timeout(120)
def test_http_worker_imports_no_tensorflow():
    """At run time too: every HTTP-side module imported in a fresh interpreter leaves no
    TensorFlow and no model-process module in sys.modules."""
    names = sorted(m for m in MODULES if _under(m, HTTP_SIDE))
    code = ("import importlib, sys\n"
            f"for name in {names!r}: importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras') "
            "or m.startswith('serve.model_process'))\n"
            "print(bad)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"imported on the HTTP side: {proc.stdout}"
