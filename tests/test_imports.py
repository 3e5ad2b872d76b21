"""The scripts import each other one way, in the order the README draws: each file imports only files to its
left in ORDER, so a reader can take them in that order. Read from the source with ast, so a cycle hidden in a
function counts too."""

import ast
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["configurator", "files", "model", "muon", "bpe", "sources", "data", "hf", "checkpoint", "train", "sft", "sample", "serve",
         "sandbox", "benchmarks", "eval", "export", "plot", "dryrun"]
# imported inside a function on purpose: optional extras, and what data preparation must not wait for
LAZY = {"requests", "torch", "pyarrow", "wandb", "matplotlib", "fcntl", "pydoc_data", "jinja2"}


def imports(path):
    """(module, inside a function?) for every import in the file."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        for name in names:
            yield name.split(".")[0], id(node) not in top


def test_every_script_has_a_place_in_the_order():
    assert sorted(p.stem for p in ROOT.glob("*.py")) == sorted(ORDER)


def test_scripts_import_only_those_before_them():
    for rank, name in enumerate(ORDER):
        for module, _ in imports(ROOT / f"{name}.py"):
            if module in ORDER:
                assert ORDER.index(module) < rank, f"{name}.py imports {module}.py, which comes after it"


def test_imports_inside_functions_are_optional_extras_only():
    for name in ORDER:
        hidden = {m for m, inside in imports(ROOT / f"{name}.py") if inside} - LAZY
        assert not hidden, f"{name}.py imports {sorted(hidden)} inside a function; import them at the top"


def test_every_file_compiles_without_warnings():
    """An invalid escape such as "\\S" in a docstring is a SyntaxWarning from Python 3.12 on, printed at a user's
    first import; as an error here it fails on any Python."""
    for path in sorted(ROOT.glob("*.py")) + sorted((ROOT / "tests").glob("*.py")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            compile(path.read_text(), str(path), "exec")
