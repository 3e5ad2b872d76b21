"""
Files, downloads, locks and atomic writes: what every script relies on to lose nothing, kept out of the scripts
so they read as their method.

- `URLS`: every real URL the project downloads from, in one place; `download` and `fetch` get them once,
  resumably, into CACHE_DIR.
- `write_atomic`, `build_folder`, `save_atomic`: a file or folder is replaced only when the new one is whole,
  and a full disk is one sentence that says so.
- `lock_folder`: one run per folder; a second is refused, naming the first.
- `read_json`, `read_jsonl`: a malformed file is one sentence naming its line.
"""

import errno
import gzip
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from configurator import UserError

CACHE_DIR = Path(os.environ.get("SLM_CACHE_DIR", Path.home() / ".cache" / "slm"))  # downloads land here

# -----------------------------------------------------------------------------
# downloads

URLS = {
    # pretraining corpora (parquet, optional pyarrow)
    "fineweb_edu": "https://huggingface.co/datasets/HuggingFaceFW/fineweb-edu/resolve/main/sample/10BT/{shard:03d}_00000.parquet",
    "the_stack_python": "https://huggingface.co/datasets/bigcode/the-stack-dedup/resolve/main/data/python/data-{shard:05d}-of-00144.parquet",
    "hf_file": "https://huggingface.co/datasets/{repo}/resolve/main/{path}",
    "hf_model_file": "https://huggingface.co/{repo}/resolve/main/{path}",  # a model repo's file: tokenizer.json, --init_from=hf:
    # fine-tuning sets (sft.py); parquet ones come from the hub's auto-converted parquet branch
    "dolly_15k_cleaned": "https://huggingface.co/datasets/Cleanlab/databricks-dolly-15k-cleaned/resolve/refs%2Fconvert%2Fparquet/default/train/0000.parquet",
    "python_code_instructions_18k": "https://huggingface.co/datasets/iamtarun/python_code_instructions_18k_alpaca/resolve/refs%2Fconvert%2Fparquet/default/train/0000.parquet",
    "magicoder_oss_75k": "https://huggingface.co/datasets/ise-uiuc/Magicoder-OSS-Instruct-75K/resolve/main/data-oss_instruct-decontaminated.jsonl",
    "smoltalk": "https://huggingface.co/datasets/HuggingFaceTB/smoltalk/resolve/refs%2Fconvert%2Fparquet/all/train/0000.parquet",
    "mmlu_aux": "https://huggingface.co/datasets/cais/mmlu/resolve/refs%2Fconvert%2Fparquet/auxiliary_train/train/0000.parquet",
    "gsm8k_train": "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/train.jsonl",
    # benchmarks (eval.py)
    "gsm8k_test": "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/test.jsonl",
    "humaneval": "https://github.com/openai/human-eval/raw/master/data/HumanEval.jsonl.gz",
    "mbpp": "https://raw.githubusercontent.com/google-research/google-research/master/mbpp/mbpp.jsonl",
    "hellaswag_val": "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
    "arc": "https://ai2-public-datasets.s3.amazonaws.com/arc/ARC-V1-Feb2018.zip",
    "wikitext2": "https://wikitext.smerity.com/wikitext-2-raw-v1.zip",  # the raw release lm-eval's wikitext task scores
}


def download(url, dest, headers=None, desc=None, retries=2, local="use local data (--dataset=files:PATH, --data_path for benchmarks)"):
    """Streams url to dest through dest.part, resuming with an HTTP Range; an existing dest is a cache hit.
    Offline, the error says `local`: the flag that replaces this download."""
    import requests  # here: ~0.2 s of data.py's import, and only downloads need it
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    headers = dict(headers or {})
    if "huggingface.co" in url and os.environ.get("HF_TOKEN") and "Authorization" not in headers:
        headers["Authorization"] = f"Bearer {os.environ['HF_TOKEN']}"
    desc = desc or dest.name
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with requests.get(url, headers=headers, stream=True, timeout=(10, 60)) as r:
                if r.status_code == 416 and have:  # the .part already holds the whole file
                    os.replace(part, dest)
                    return dest
                if r.status_code in (401, 403):
                    raise UserError(f"{desc}: access denied (HTTP {r.status_code}); for a gated Hugging Face dataset accept "
                                    "its terms on huggingface.co and set HF_TOKEN to an access token")
                if r.status_code >= 400:
                    raise UserError(f"{desc}: download failed with HTTP {r.status_code} {r.reason} from {url}")
                if r.status_code != 206:
                    have = 0  # the server ignored the Range header: start over
                total = have + int(r.headers.get("Content-Length", 0))
                done, t0, shown = have, time.time(), 0.0
                with open(part, "ab" if have else "wb") as f:
                    for chunk in r.iter_content(1 << 20):
                        f.write(chunk)
                        done += len(chunk)
                        if time.time() - shown > 0.5:
                            shown = time.time()
                            size = f"/{total / 1e6:.1f}" if total else ""
                            rate = (done - have) / 1e6 / max(shown - t0, 1e-9)
                            print(f"\r{desc}: {done / 1e6:.1f}{size} MB ({rate:.1f} MB/s)", end="", file=sys.stderr)
            print(f"\r{desc}: {done / 1e6:.1f} MB done" + " " * 20, file=sys.stderr)
            os.replace(part, dest)
            return dest
        except requests.RequestException as e:
            error = e
    size = part.stat().st_size if part.exists() else 0
    if not size:
        raise UserError(f"{desc}: cannot reach {url.split('/')[2]} ({type(error).__name__}); check the connection, "
                        f"or {local}")
    raise UserError(f"{desc}: download interrupted ({type(error).__name__}); run the same command again to resume from "
                    f"{size / 1e6:.1f} MB")


def fetch(key, folder=None, name=None, **kwargs):
    """The file behind URLS[key], downloaded once into folder (default CACHE_DIR/downloads) as name (default:
    the key plus the URL's extensions, since many hub URLs end in the same 0000.parquet)."""
    if key not in URLS:
        raise UserError(f"files.URLS has no '{key}'; add its URL there, or pass a local copy of the file")
    url = URLS[key]
    name = name or key + "".join(Path(url.split("?")[0]).suffixes)
    return download(url, Path(folder or CACHE_DIR / "downloads") / name, desc=key, **kwargs)



# -----------------------------------------------------------------------------
# reading JSON

def read_jsonl(path):
    """(line number, row) of each non-blank line of a JSONL file (gzipped when it ends in .gz)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield n, json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UserError(f"{path}:{n} is not valid JSON ({e.msg}); fix or delete line {n}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; convert it (iconv -t utf-8) or pass another file") from None
    except (IsADirectoryError, gzip.BadGzipFile) as e:
        raise UserError(f"{path} is not a JSONL file ({e})") from None


def read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None

# -----------------------------------------------------------------------------
# atomic writes and folder locks

_LOCKS = {}  # lock file path -> open file holding the flock


def write_atomic(path, content):
    """A temp file renamed over path: a kill mid-write leaves the old file whole, never half of the new one."""
    tmp = Path(f"{path}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def lock_folder(folder, name=".lock"):
    """Holds an exclusive lock on folder/name while this process works there; a second run is refused,
    naming the process that holds it (two runs on one out_dir garbled metrics.jsonl and lost files)."""
    import fcntl  # here: POSIX only, and only locking needs it
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    unlock_folder(folder, name)  # this process's earlier holder: a notebook calling main() again
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = (f.read().split() or ["unknown"])[-1]
        f.close()
        raise UserError(f"{folder} is in use by another run (process {holder} holds {path}); wait for it to finish "
                        "or use another folder") from None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    _LOCKS[str(path.resolve())] = f


def unlock_folder(folder, name=".lock"):
    f = _LOCKS.pop(str((Path(folder) / name).resolve()), None)
    if f is not None:
        f.close()




def disk_full(e):
    return isinstance(e, OSError) and e.errno == errno.ENOSPC or "file write failed" in str(e)


def save_atomic(path, save, need_bytes=0):
    """save(tmp) writes the file, then it is renamed over path: a crash mid-save leaves the previous one intact.
    torch.save reports a full disk as "RuntimeError: ... file write failed", so both kinds are caught."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        if not disk_full(e) and free > need_bytes:
            raise
        raise UserError(f"the disk holding {path.parent.resolve()} is full: {free / 2**20:,.1f} MiB free, {path.name} "
                        f"needs about {need_bytes / 2**20:,.1f} MiB; free space there and run again (the previous "
                        f"{path.name} is intact)") from None


@contextmanager
def build_folder(folder):
    """Yields folder.tmp to fill; when the block ends without error it replaces folder whole. A typo, a full
    disk or a kill leaves the old folder as it was. The parent's lock keeps a second process out meanwhile."""
    folder = Path(folder)
    lock = f".{folder.name}.lock"
    lock_folder(folder.parent, lock)
    build = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(build, ignore_errors=True)  # left by a killed run: ours alone, we hold the lock
    try:
        yield build
    except BaseException as e:
        written = sum(f.stat().st_size for f in build.glob("*")) if build.is_dir() else 0
        shutil.rmtree(build, ignore_errors=True)
        unlock_folder(folder.parent, lock)
        if disk_full(e):
            free = shutil.disk_usage(folder.parent).free
            raise UserError(f"the disk holding {folder.parent.resolve()} is full ({free / 2**20:,.1f} MiB free; more "
                            f"than the {written / 2**20:,.1f} MiB written is needed): free space or pass another "
                            f"--data_dir; {folder} is unchanged") from None
        raise
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(build, folder)
    shutil.rmtree(old, ignore_errors=True)
    unlock_folder(folder.parent, lock)
