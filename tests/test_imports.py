"""The import graph of vqtok/, read from the source (function-level imports included), has no cycle, and every
import runs down the floors of LAYERS (STYLE.md: cli -> pipelines / trainers / export -> codec -> tokenizer, prior,
data -> helpers)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vqtok"

# Floors, top first: a module imports its own floor's modules and lower floors' only. A name stands for that
# module and everything under it; the longest name that fits a module places it. data/ reads token files and
# tokenizers (data/tokens.py), so it sits above the models, and tokenizer/ and prior/ never import data/ but from
# their trainers. The registry reads safetensors headers only, below the models that look names up in it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("the public API and the CLI", ("vqtok", "vqtok.__main__", "vqtok.cli")),
    ("pipelines, trainers, export, integrations", (
        "vqtok.pipeline", "vqtok.corpus", "vqtok.evaluate", "vqtok.stages", "vqtok.integrations",
        "vqtok.pretrained.export", "vqtok.tokenizer.train", "vqtok.tokenizer.train_latent",
        "vqtok.tokenizer.recipe", "vqtok.prior.train", "vqtok.prior.recipe", "vqtok.prior.data")),
    ("the codec", ("vqtok.codec",)),
    ("modalities", ("vqtok.modality",)),
    ("datasets", ("vqtok.data",)),
    ("models", ("vqtok.tokenizer", "vqtok.prior")),
    ("the shipped-model registry", ("vqtok.registry", "vqtok.pretrained")),
    ("helpers", ("vqtok.errors", "vqtok.files", "vqtok.device", "vqtok.version", "vqtok.config", "vqtok.run",
                 "vqtok.codefile", "vqtok.speech_level",
                 "vqtok.metrics", "vqtok.losses", "vqtok.plots")),
]


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the vqtok modules it imports anywhere in its source (a package stands for its __init__)."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def write_package(root: Path, files: dict[str, str]) -> Path:
    """A package `vqtok` under `root` holding `files` (path -> source); returns its folder."""
    pkg = root / "vqtok"
    for name, text in {"__init__.py": "", **files}.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    return pkg


def test_the_graph_sees_function_level_and_package_imports(tmp_path):
    pkg = write_package(tmp_path, {"sub/__init__.py": "", "sub/a.py": "def f():\n    from vqtok.sub import b\n",
                                   "sub/b.py": "from vqtok.sub.a import f\n"})
    graph = import_graph(pkg)
    assert graph["vqtok.sub.a"] == {"vqtok.sub.b"} and graph["vqtok.sub.b"] == {"vqtok.sub.a"}
    assert find_cycle(graph) == ["vqtok.sub.a", "vqtok.sub.b", "vqtok.sub.a"]


def test_vqtok_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def floor(module: str, layers=LAYERS) -> int | None:
    """Index in `layers` of the floor that holds `module` (0 is the top), or None."""
    best, found = -1, None
    for index, (_, names) in enumerate(layers):
        for name in names:
            fits = module == name or (name != "vqtok" and module.startswith(name + "."))
            if fits and len(name) > best:
                best, found = len(name), index
    return found


def upward_imports(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """'a -> b (floor of a below floor of b)' for every import that climbs, and every module without a floor."""
    problems = [f"{m}: on no floor; add it to LAYERS in tests/test_imports.py" for m in sorted(graph)
                if floor(m, layers) is None]
    for a in sorted(graph):
        for b in sorted(graph[a]):
            fa, fb = floor(a, layers), floor(b, layers)
            if fa is not None and fb is not None and fb < fa:
                problems.append(f"{a} ({layers[fa][0]}) imports {b} ({layers[fb][0]}), a floor above it")
    return problems


def test_the_layer_check_finds_an_upward_import(tmp_path):
    pkg = write_package(tmp_path, {"tokenizer/__init__.py": "", "codec.py": "from vqtok.tokenizer import base\n",
                                   "errors.py": "",
                                   "tokenizer/base.py": "def f():\n    from vqtok import codec\n"})  # in a function
    graph = import_graph(pkg)
    assert upward_imports(graph) == [
        "vqtok.tokenizer.base (models) imports vqtok.codec (the codec), a floor above it"]
    (pkg / "stray.py").write_text("")
    assert upward_imports(import_graph(pkg))[0] == "vqtok.stray: on no floor; add it to LAYERS in tests/test_imports.py"


def test_vqtok_imports_run_down_the_floors():
    problems = upward_imports(import_graph())
    assert not problems, "\n".join(problems)
