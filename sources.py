"""
Where data.py's documents come from: the running interpreter's standard library (code, or its docstrings as
prose), files on disk (text, JSONL, parquet), and the shards and hub files it downloads (URLs in files.URLS).
Each source yields raw text; an unreadable file is counted in stats and skipped, never fatal.
"""

import ast
import glob
import os
import sysconfig
import warnings
from pathlib import Path

import files
from configurator import UserError

SHARDS = {"fineweb_edu": 14, "the_stack_python": 144}
TEXT_FIELDS = ("text", "content")  # the document column of a JSONL/parquet file (FineWeb: text, The Stack: content)


def stdlib_files():
    """Every .py file of the running interpreter's standard library (site-packages excluded)."""
    paths = sysconfig.get_paths()
    site = {os.path.realpath(paths["purelib"]), os.path.realpath(paths["platlib"])}
    found = []
    for folder, dirs, names in os.walk(paths["stdlib"]):
        # by name too: inside a venv, purelib is the venv's, and the base interpreter's site-packages
        # still sits under the stdlib folder
        dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(folder, d)) not in site
                   and d not in ("site-packages", "dist-packages")]
        found += [Path(folder) / f for f in names if f.endswith(".py")]
    return sorted(found)


def read_text(path, stats):
    try:
        return Path(path).read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        stats["dropped"]["unreadable"] = stats["dropped"].get("unreadable", 0) + 1
        return None


def stdlib_docs(stats):
    """English prose: the pydoc topics, then each stdlib module's docstrings (parsed with ast, never imported)."""
    from pydoc_data.topics import topics  # here: a large module only this source reads
    for key in sorted(topics):
        yield topics[key]
    for path in stdlib_files():
        text = read_text(path, stats)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(text or "")
        except (SyntaxError, ValueError):
            continue
        docs = [ast.get_docstring(node) for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        if any(docs):
            yield "\n\n".join(d for d in docs if d)


def read_records(path, stats):
    """Documents of a file: a JSONL record's text field, a parquet row's, or a whole text file."""
    path = Path(path)
    name = path.name.removesuffix(".gz")
    if name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(f"reading {path.name} needs pyarrow: pip install pyarrow") from None
        pf = pq.ParquetFile(path)
        field = next((f for f in TEXT_FIELDS if f in pf.schema_arrow.names), None)
        if field is None:
            raise UserError(f"{path} has no {' or '.join(TEXT_FIELDS)} column")
        for batch in pf.iter_batches(columns=[field], batch_size=1024):
            yield from (t for t in batch.column(0).to_pylist() if t)
    elif name.endswith((".jsonl", ".json")):
        for n, record in files.read_jsonl(path):
            text = next((record[k] for k in TEXT_FIELDS if k in record), None) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise UserError(f"{path} line {n}: expected a JSON object with a 'text' field")
            yield text
    else:
        text = read_text(path, stats)
        if text is not None:
            yield text


def iter_source(name, stats, shard_limit=0):
    """Yields the raw documents of a dataset name; unreadable files are counted in stats, never fatal."""
    kind, _, arg = name.partition(":")
    if name == "stdlib_python":
        for path in stdlib_files():
            text = read_text(path, stats)
            if text is not None:
                yield text
    elif name == "stdlib_docs":
        yield from stdlib_docs(stats)
    elif name in SHARDS:
        yield from download_shards(name, stats, shard_limit)
    elif kind == "files" and arg:
        root = Path(arg).expanduser()
        if root.is_dir():
            paths = sorted(p for p in root.rglob("*") if p.is_file())
        elif root.is_file():
            paths = [root]
        else:
            paths = sorted(Path(p) for p in glob.glob(str(root), recursive=True) if os.path.isfile(p))
        if not paths:
            raise UserError(f"no files match {arg}; pass files:DIRECTORY, files:'GLOB' or files:FILE.jsonl")
        for path in paths:
            yield from read_records(path, stats)
    elif kind == "hf" and arg.count("/") >= 2:
        owner, repo, file = arg.split("/", 2)
        url = files.URLS["hf_file"].format(repo=f"{owner}/{repo}", path=file)
        yield from read_records(files.download(url, files.CACHE_DIR / "hf" / owner / repo / file), stats)
    else:
        raise UserError(f"unknown dataset '{name}'; use stdlib_python, stdlib_docs, files:PATH, fineweb_edu, "
                        "the_stack_python or hf:OWNER/REPO/FILE")


def download_shards(kind, stats, limit):
    if kind == "the_stack_python" and not os.environ.get("HF_TOKEN"):
        raise UserError("The Stack dedup is gated: accept its terms at https://huggingface.co/datasets/bigcode/the-stack-dedup "
                        "and set HF_TOKEN to a Hugging Face access token")
    for shard in range(min(limit, SHARDS[kind]) if limit else SHARDS[kind]):
        url = files.URLS[kind].format(shard=shard)
        path = files.download(url, files.CACHE_DIR / kind / url.rsplit("/", 1)[1], desc=f"{kind} shard {shard}")
        yield from read_records(path, stats)
