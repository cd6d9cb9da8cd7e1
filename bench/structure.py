"""Where vqtok still decides audio versus image (or one kind of thing versus another) by hand: a table of `dims` /
`kind` branches per file, and the length of the two training loops.

What counts as one branch, read from the source with `ast` (comments and strings are not code, so they never count):
- the condition of an `if` or `elif` statement, of a conditional expression (`a if cond else b`), of a `while`
  loop, and of a comprehension's `if` filter;
- a comparison (`==`, `!=`, `<`, `in`, `is`, ...) or a boolean operation (`and`, `or`) that stands anywhere else,
  such as `return dims == 2` or `flag = kind in (...)`;
each counted once when it reads `dims` or `kind`: as a bare name, as an attribute (`config.dims`, `model.kind`), as a
string key (`cfg["kind"]`) or through `.get("kind")`. Not counted: numpy's `x.dtype.kind` (numpy's word, not
vqtok's), and a word that is only an argument of a call in the condition (`max_pool(self.dims, x) > 0` hands
`dims` on and compares something else). A condition inside another counted condition is part of it,
not a second branch. A table lookup such as `BUILDERS[kind]` or `modality_of(config)` is not a branch: that is
the point of the registries.

Files are grouped: the modality and builder files, where the branch on a kind belongs (vqtok/modality.py; the
builders: data/build.py for datasets, tokenizer/build.py for a tokenizer and its config checks, tokenizer/nets.py
for layers by number of axes, tokenizer/heads.py for decoder heads); vqtok/prior/, counted on its own; and the
rest, the figure to keep small.

    python bench/structure.py              # the table
    python bench/structure.py --all        # every file, zeros included
    python bench/structure.py --root ../other-checkout   # another tree (an older commit's, for before/after)
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = {"dims", "kind"}
HOMES = ("vqtok/modality.py", "vqtok/data/build.py", "vqtok/tokenizer/build.py", "vqtok/tokenizer/nets.py",
         "vqtok/tokenizer/heads.py")
LOOPS = (("train_tokenizer", "vqtok/tokenizer/train.py"), ("train_prior", "vqtok/prior/train.py"))


def walk_outside_calls(node: ast.AST):
    """`ast.walk`, but not into the arguments of a call: there a word is handed on, not tested."""
    todo = [node]
    while todo:
        sub = todo.pop()
        yield sub
        if isinstance(sub, ast.Call):
            todo.append(sub.func)
            if isinstance(sub.func, ast.Attribute) and sub.func.attr == "get":
                todo.extend(sub.args[:1])  # d.get("kind") reads the key
        else:
            todo.extend(ast.iter_child_nodes(sub))


def reads(node: ast.AST) -> set[str]:
    """The words of WORDS that `node` reads (as a name, an attribute, a string key or a .get key)."""
    found = set()
    for sub in walk_outside_calls(node):
        if isinstance(sub, ast.Name) and sub.id in WORDS:
            found.add(sub.id)
        elif isinstance(sub, ast.Attribute) and sub.attr in WORDS:
            if not (isinstance(sub.value, ast.Attribute) and sub.value.attr == "dtype"):
                found.add(sub.attr)
        elif isinstance(sub, ast.Subscript) and isinstance(sub.slice, ast.Constant) and sub.slice.value in WORDS:
            found.add(sub.slice.value)
        elif (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "get"
              and sub.args and isinstance(sub.args[0], ast.Constant) and sub.args[0].value in WORDS):
            found.add(sub.args[0].value)
    return found


def conditions(tree: ast.AST) -> list[ast.AST]:
    """Every condition expression in `tree`, outermost only (see the module doc)."""
    found: list[ast.AST] = []
    inside: set[int] = set()  # ids of nodes that sit inside a condition already taken

    def take(node: ast.AST) -> None:
        if id(node) in inside:
            return
        found.append(node)
        inside.update(id(sub) for sub in ast.walk(node))

    for node in ast.walk(tree):  # breadth first: an outer condition is met before what it holds
        if isinstance(node, (ast.If, ast.While, ast.IfExp)):
            take(node.test)
        elif isinstance(node, ast.comprehension):
            for cond in node.ifs:
                take(cond)
        elif isinstance(node, (ast.Compare, ast.BoolOp)):
            take(node)
    return found


def count(path: Path) -> dict[str, int]:
    tree = ast.parse(path.read_text(), str(path))
    counts = dict.fromkeys(sorted(WORDS), 0)
    for cond in conditions(tree):
        for word in reads(cond):
            counts[word] += 1
    return counts


def function_lines(path: Path, name: str) -> int:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node.end_lineno - node.lineno + 1
    return 0


def group(rel: str) -> str:
    if rel in HOMES:
        return "modality / builders"
    if rel.startswith("vqtok/prior/"):
        return "prior/"
    return "elsewhere"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="list files without any branch too")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to read (default: this one)")
    args = parser.parse_args()
    rows = []
    for path in sorted((args.root / "vqtok").rglob("*.py")):
        rel = path.relative_to(args.root).as_posix()
        c = count(path)
        if args.all or any(c.values()):
            rows.append((group(rel), rel, c["dims"], c["kind"]))
    order = ["elsewhere", "prior/", "modality / builders"]
    rows.sort(key=lambda r: (order.index(r[0]), -(r[2] + r[3]), r[1]))
    width = max(max(len(r[1]) for r in rows), 42)
    print(f"{'file':<{width}}  {'dims':>4}  {'kind':>4}")
    for name in order:
        part = [r for r in rows if r[0] == name]
        for _, rel, d, k in part:
            print(f"{rel:<{width}}  {d:>4}  {k:>4}")
        d, k = sum(r[2] for r in part), sum(r[3] for r in part)
        files = sum(1 for r in part if r[2] + r[3])
        print(f"{'  total, ' + name + f' ({files} files)':<{width}}  {d:>4}  {k:>4}")
        print()
    for func, rel in LOOPS:
        print(f"{func} ({rel}): {function_lines(args.root / rel, func)} lines")


if __name__ == "__main__":
    main()
