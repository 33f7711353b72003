"""The package's import graph: no cycle, no layer importing a layer above it, and production code
never importing the test oracles. Read from the source (function-level imports too), so a lazy
import inside a function cannot hide a cycle."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "bayesirl"

# Bottom to top. A module may import its own layer and the layers below it. The inference layer
# sits above the posterior layer because a target builds the posterior object from its draws.
LAYERS = {
    "_validation": -1,  # argument checks, used by every layer
    "core": 0,
    "datasets": 1,
    "planning": 2,
    "model": 3,
    "posterior": 4,
    "inference": 5,
    "decisions": 6,
    "baselines": 6,
    "metrics": 6,
    "plots": 6,
    "sbc": 6,
    "sweep": 7,        # a grid over a spec: it reads specs with the cli layer's parser
    "cli": 7,
    "testing": 8,      # tiny MDPs and oracles for the tests: above everything it checks
    "diagnostics": 9,  # public facades over the layers
    "__init__": 9,
}


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (an import of ``a.b.c`` names the deepest
    module that exists)."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in names:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    targets.add(target)
        graph[name] = targets
    return graph


def _layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    if key not in LAYERS:
        raise AssertionError(f"{module} is in no layer: add {key!r} to LAYERS in {__file__}")
    return key, LAYERS[key]


def test_the_package_has_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(v, path):
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                cycle = path[path.index(w):] + [w]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if w not in state:
                visit(w, path)
        path.pop()
        state[v] = 2

    for v in sorted(graph):
        if v not in state:
            visit(v, [])


def test_no_layer_imports_a_layer_above_it():
    upward = []
    for module, targets in _graph().items():
        key, rank = _layer(module)
        for target in targets:
            if target == "bayesirl":
                if key not in ("__init__",):
                    upward.append(f"{module} imports the facade 'bayesirl'")
                continue
            tkey, trank = _layer(target)
            if trank > rank:
                upward.append(f"{module} ({key}) imports {target} ({tkey})")
    assert not upward, "imports upward:\n" + "\n".join(sorted(upward))


def test_production_code_never_imports_the_test_oracles():
    users = sorted(m for m, targets in _graph().items()
                   if "bayesirl.testing" in targets and m != "bayesirl.testing")
    assert not users, f"production modules importing bayesirl.testing: {users}"


def test_the_checks_see_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The graph reader itself: a two-module cycle through a function-level import is found."""
    pkg = tmp_path / "bayesirl"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("def f():\n    from bayesirl.cli import b\n")
    (pkg / "cli").mkdir()
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "cli" / "b.py").write_text("from bayesirl.core import a\n")
    monkeypatch.setitem(globals(), "ROOT", pkg)
    graph = _graph()
    assert graph["bayesirl.core.a"] == {"bayesirl.cli", "bayesirl.cli.b"}
    assert graph["bayesirl.cli.b"] == {"bayesirl.core", "bayesirl.core.a"}
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_the_package_has_no_import_cycle()
    with pytest.raises(AssertionError, match=r"bayesirl.core.a \(core\) imports bayesirl.cli.b"):
        test_no_layer_imports_a_layer_above_it()
