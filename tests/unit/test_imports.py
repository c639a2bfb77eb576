"""The import rules of the code, read from the source (ast), not from a convention:

- no import circle in any package (module-level or inside a function: both run sooner or later);
- nothing imports a private (underscore) name from another module;
- the deploy tool's layers (commands -> operations -> local -> core) import only downward;
- the HTTP side (``serve.http_worker``, and what it stands on: ``serve.contract``, ``serve.usercode``)
  never imports the model side (``serve.model_process``) or TensorFlow, so an HTTP worker stays
  small and starts in well under 2 s. ``test_http_worker_imports_no_tensorflow`` checks the same
  at run time, in a fresh interpreter.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"serve": REPO / "serve", "model_archive": REPO / "deploy" / "model_archive",
            "sagemaker_tf_deploy": REPO / "deploy" / "sagemaker_tf_deploy"}


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


# --- the deploy tool's layers (issue 26) --------------------------------------------------------

DEPLOY = "sagemaker_tf_deploy"
DEPLOY_LAYERS = ("commands", "operations", "local", "core")    # top to bottom


def _deploy_layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == DEPLOY and len(parts) > 1 else None


def test_every_deploy_module_is_in_a_layer():
    stray = [m for m in MODULES if m != DEPLOY and _deploy_layer(m) and _deploy_layer(m) not in DEPLOY_LAYERS]
    assert not stray, f"deploy modules outside {DEPLOY_LAYERS}: {stray}"


def _upward(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        here = _deploy_layer(module)
        if here not in DEPLOY_LAYERS:
            continue
        for target in sorted(targets):
            there = _deploy_layer(target)
            if there in DEPLOY_LAYERS and DEPLOY_LAYERS.index(there) < DEPLOY_LAYERS.index(here):
                bad.append(f"{module} ({here}) imports {target} ({there})")
    return bad


def test_deploy_layers_import_only_downward():
    bad = _upward(_graph())
    assert not bad, (f"deploy's layers import only downward ({' -> '.join(DEPLOY_LAYERS)}); move the shared "
                     "piece down:\n" + "\n".join(bad))


def test_the_layer_check_sees_an_upward_import():
    assert _upward({f"{DEPLOY}.core.checks": {f"{DEPLOY}.operations.endpoint"}}) == [
        f"{DEPLOY}.core.checks (core) imports {DEPLOY}.operations.endpoint (operations)"]
    graph = _graph()
    assert f"{DEPLOY}.operations.endpoint" in graph[f"{DEPLOY}.commands.endpoint"]
    assert f"{DEPLOY}.local.container" in graph[f"{DEPLOY}.local.transform"]


def _private_attributes(module: str, source: str | None = None) -> list[str]:
    """MODULE's uses of `other._name`, where `other` is one of our modules it imported."""
    tree = ast.parse(MODULES[module].read_text() if source is None else source, str(MODULES[module]))
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{target}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    aliases[alias.asname] = alias.name
    return [f"{module} (line {node.lineno}) uses {aliases[node.value.id]}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
            and node.attr.startswith("_") and not node.attr.startswith("__")]


def test_no_private_attributes_of_other_modules():
    """`from . import other` then `other._name` takes a private name as surely as importing it."""
    bad = [line for m in MODULES for line in _private_attributes(m)]
    assert not bad, "private names of another module (make them public, or move them):\n" + "\n".join(bad)


def test_the_private_attribute_check_sees_one():
    source = "from ..local import container as local\nlocal._docker('ps')\nlocal.docker('ps')\n"
    assert _private_attributes(f"{DEPLOY}.commands.local", source) == [
        f"{DEPLOY}.commands.local (line 2) uses {DEPLOY}.local.container._docker"]


def test_the_deploy_package_docstring_lists_every_module():
    """deploy/sagemaker_tf_deploy/__init__.py is the map of the package: every module, under its layer."""
    doc = ast.get_docstring(ast.parse(MODULES[DEPLOY].read_text()))
    listed, layer = set(), None
    for line in doc.splitlines():
        if m := re.match(r"^(\w+)/\s", line):
            layer = m.group(1)
        elif (m := re.match(r"^  (\w+)\.py\s", line)) and layer:
            listed.add(f"{DEPLOY}.{layer}.{m.group(1)}")
    modules = {m for m in MODULES if m.startswith(DEPLOY + ".") and MODULES[m].name != "__init__.py"}
    assert listed == modules, (f"not in the package docstring: {sorted(modules - listed)}; "
                               f"listed but gone: {sorted(listed - modules)}")
