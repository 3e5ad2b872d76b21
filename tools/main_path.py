"""
How much of each script is its idea, and how much is armour: a reading measure, kept so a change can be
checked before and after.

    python tools/main_path.py                      # the scripts of this checkout
    python tools/main_path.py --root=../other      # another checkout, to compare

A code line is a non-blank line that is neither a comment nor a docstring. It is armour when it belongs to
a statement that only guards (a `raise`, an `if` whose body only raises, an `except` or `finally` block, an
`assert`) or to a definition whose name says it is a guarantee rather than the method (ARMOUR: checks, locks,
atomic writes, downloads, checkpoint files and resume, the sandbox). Everything else is the main path. Comment density is the number of lines holding a
comment per code line (nanoGPT's model.py and train.py: 0.43-0.52).
"""

import ast
import io
import os
import re
import sys
import tokenize

SCRIPTS = ("model.py", "data.py", "train.py", "sft.py", "sample.py", "eval.py")
ARMOUR = re.compile(r"_?(check_|require_|lock_|unlock_|write_atomic|download|fetch|save_checkpoint|read_checkpoint|"
                    r"rng_state|set_rng_state|stop_on_ctrl_c|fuse_|open_metrics|report_changes|isolation|run_program|"
                    r"SANDBOX|UNSHARE|URLS)")


def guard_lines(tree):
    """The line numbers of every statement that only guards (see the docstring)."""
    lines = set()

    def cover(node):
        lines.update(range(node.lineno, node.end_lineno + 1))

    for node in ast.walk(tree):
        named = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else [
            t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)] if isinstance(node, ast.Assign) else []
        if any(ARMOUR.match(n) for n in named):
            cover(node)
        elif isinstance(node, (ast.Raise, ast.Assert)):
            cover(node)
        elif isinstance(node, ast.If) and all(isinstance(s, ast.Raise) for s in node.body) and not node.orelse:
            cover(node)
        elif isinstance(node, ast.Try):
            for handler in node.handlers:
                cover(handler)
            for s in node.finalbody:
                cover(s)
    return lines


def docstring_lines(tree):
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def measure(path):
    source = open(path, encoding="utf-8").read()
    tree = ast.parse(source)
    comments, only_comment = set(), set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments.add(tok.start[0])
            if not tok.line[:tok.start[1]].strip():
                only_comment.add(tok.start[0])
    docs = docstring_lines(tree)
    code = {i for i, line in enumerate(source.splitlines(), 1) if line.strip()} - only_comment - docs
    armour = code & guard_lines(tree)
    return {"lines": len(source.splitlines()), "code": len(code), "main_path": 1 - len(armour) / max(1, len(code)),
            "comments_per_code_line": len(comments) / max(1, len(code))}


def main():
    root = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--root=")), ".")
    print(f"{'file':<10} {'lines':>6} {'code':>6} {'main path':>10} {'comments/code':>14}")
    for name in SCRIPTS:
        path = os.path.join(root, name)
        if os.path.exists(path):
            m = measure(path)
            print(f"{name:<10} {m['lines']:>6} {m['code']:>6} {m['main_path']:>9.0%} {m['comments_per_code_line']:>14.2f}")
    readme = os.path.join(root, "README.md")
    if os.path.exists(readme):
        print(f"README.md  {os.path.getsize(readme):,} bytes")


if __name__ == "__main__":
    main()
