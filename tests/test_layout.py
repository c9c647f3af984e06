"""The package's shape: layers that import only downward, no import circles, docs/architecture.md matching the tree.

Every `import` / `from … import` in frafer's source counts, inside functions too (a lazy import is a dependency all
the same); only `if TYPE_CHECKING:` blocks are left out, as they never run.
"""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "frafer"
ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

# Lowest first: a module may import its own layer and the layers before it, never one after it.
LAYERS = [
    ("base", ["frafer", "frafer.errors", "frafer.collectives", "frafer.files", "frafer.precision"]),
    ("config schema", ["frafer.config.schema"]),
    ("data", ["frafer.data"]),
    ("models, losses, optimisers", ["frafer.models", "frafer.losses", "frafer.optim"]),
    ("methods and heads", ["frafer.methods"]),
    ("config loader", ["frafer.config"]),
    ("artifacts", ["frafer.artifacts"]),
    ("built-in models", ["frafer.pretrained"]),
    ("eval", ["frafer.eval"]),
    ("inference", ["frafer.infer"]),
    ("service", ["frafer.serve"]),
    ("engine", ["frafer.engine"]),
    ("train", ["frafer.train"]),
    ("demo", ["frafer.demo"]),
    ("experiments", ["frafer.experiments"]),
    ("entry points", ["frafer.cli", "frafer.__main__"]),
]


def module_name(path: Path) -> str:
    parts = ["frafer", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The frafer modules `path` imports (for `from pkg import name`, the submodule when `name` is one)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
               for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "frafer"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "frafer":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return found


def layer_of(module: str) -> int:
    best, depth = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")
    return best


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in SRC.rglob("*.py")}
    return {m: imports_of(p, set(paths)) - {m} for m, p in paths.items()}


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
              for m, deps in sorted(import_graph().items()) for d in sorted(deps) if layer_of(d) > layer_of(m)]
    assert not upward, "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " → ".join(cycle)


def test_the_checks_catch_what_they_look_for():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("frafer.config.schema") < layer_of("frafer.data.fer.splits") < layer_of("frafer.methods.fra")
    assert layer_of("frafer.methods.fra") < layer_of("frafer.config.loader") < layer_of("frafer.train.finetune")


def test_no_two_modules_share_a_file_name():
    """`eval/metrics.py` beside `train/metrics.py` made readers guess which one a name came from."""
    stems: dict[str, list[str]] = {}
    for p in SRC.rglob("*.py"):
        if p.name not in ("__init__.py", "__main__.py"):
            stems.setdefault(p.stem, []).append(str(p.relative_to(SRC)))
    assert not {k: v for k, v in stems.items() if len(v) > 1}


def _documented_layout() -> set[str]:
    text = ARCHITECTURE.read_text()
    block = re.search(r"```\n(src/frafer/.*?)```", text, re.S)
    assert block, "docs/architecture.md has no layout code block"
    return {m.group(1) for m in re.finditer(r"^\s{2,}([\w/]+(?:\.py)?/?)\s", block.group(1), re.M)}


@pytest.mark.parametrize("kind", ["packages", "modules"])
def test_documented_layout_names_every_package_and_top_level_module(kind):
    """Every package (listed itself or through what is in it: `config/schema.py`, `data/fer/`) and top-level module
    is in the layout, and everything the layout lists exists."""
    listed = _documented_layout()
    missing = sorted(x for x in listed if "/" in x and not (SRC / x).exists())
    assert not missing, f"docs/architecture.md's layout lists what is not there: {missing}"
    if kind == "packages":
        actual = {f"{p.relative_to(SRC)}/" for p in SRC.iterdir() if (p / "__init__.py").is_file()}
        documented = {x.split("/")[0] + "/" for x in listed if "/" in x}
    else:
        actual = {p.name for p in SRC.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
        documented = {x for x in listed if x.endswith(".py") and "/" not in x}
    assert actual <= documented, f"missing from docs/architecture.md's layout: {sorted(actual - documented)}"
    assert documented <= actual, f"docs/architecture.md's layout lists what is not there: {sorted(documented - actual)}"


TESTS = Path(__file__).resolve().parent


def test_test_folders_mirror_the_source_and_import_only_conftest():
    """tests/<package>/ for src/frafer/<package>/; a test module's shared pieces come from conftest.py, never from
    another test module (which would run its tests twice and tie their fixtures together)."""
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    assert folders <= packages, f"test folders with no package of that name: {sorted(folders - packages)}"
    crossing = []
    for path in TESTS.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            crossing += [f"{path.relative_to(TESTS)} imports {n}" for n in names
                         if n.startswith("tests.") and n != "tests.conftest"]
    assert not crossing, crossing
