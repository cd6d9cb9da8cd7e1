"""bench/structure.py counts what its docstring says: conditions that test `dims` / `kind`, once each."""

import ast
import textwrap

from structure import conditions, count, function_lines, reads

SOURCE = textwrap.dedent('''
    def f(tok, config, card, source, x, mask):
        if tok.dims == 1:                       # dims: one
            pass
        elif config.dims == 2 and x:            # dims: two (an elif is its own branch)
            pass
        y = "a" if card["kind"] == "audio" else "b"   # kind: one (a string key)
        flag = source.get("kind") == "image"    # kind: two (.get key, a comparison outside any if)
        while kind != "done":                   # kind: three (a bare name)
            break
        names = [n for n in x if n.kind]        # kind: four (a comprehension filter)
        if x.dtype.kind != "f":                 # numpy's word: not counted
            pass
        if max_pool(tok.dims, mask) > 0:        # handed to a call: not counted
            pass
        shape = (tok.dims, 3)                   # no condition: not counted
        return BUILDERS[config.kind]            # a table lookup: not counted
''')


def test_the_counts_follow_the_docstring(tmp_path):
    path = tmp_path / "example.py"
    path.write_text(SOURCE)
    assert count(path) == {"dims": 2, "kind": 4}


def test_a_condition_inside_a_counted_one_is_not_a_second_branch():
    tree = ast.parse("if (a.dims == 1) == (b.dims == 1):\n    pass\n")
    found = [c for c in conditions(tree) if reads(c)]
    assert len(found) == 1


def test_function_lines(tmp_path):
    path = tmp_path / "loop.py"
    path.write_text("def other():\n    pass\n\n\ndef train_tokenizer(recipe):\n    a = 1\n    return a\n")
    assert function_lines(path, "train_tokenizer") == 3
    assert function_lines(path, "missing") == 0
