"""Every preset's whole recipe at toy size (dryrun.py), and the traps a new user met on the way (issue 11)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import configurator
import data
import dryrun
import eval as evaluate
import sample
import sft
import train

ROOT = Path(__file__).resolve().parent.parent
# a kernel's argv: a script that reads sys.argv from a notebook fails on it ("cannot read argument '-f'")
JUPYTER_ARGV = ["ipykernel_launcher.py", "-f", "/tmp/kernel-1.json"]


@pytest.fixture(scope="module")
def starcoder_like(tmp_path_factory):
    """A stand-in for StarCoder2's tokenizer.json (a download): byte-level BPE with its Digits + ByteLevel
    pre-tokenizers and its first special tokens, built by the `tokenizers` library, the reference."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    trainer = trainers.BpeTrainer(vocab_size=400, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"])
    tok.train_from_iterator([Path(p).read_text() for p in (data.stdlib_files()[:40])], trainer)
    path = tmp_path_factory.mktemp("starcoder2") / "tokenizer.json"
    tok.save(str(path))
    return path


def dry_run(preset, work_dir, monkeypatch, **overrides):
    monkeypatch.setattr(sys, "argv", JUPYTER_ARGV)  # the notebook API must never read it
    dryrun.configure(preset=preset, work_dir=str(work_dir), **overrides)
    out = dryrun.main()
    return out, json.loads((out / "eval.json").read_text())["results"]


def stage_config(out):
    return torch.load(Path(out) / "ckpt.pt", weights_only=True)["config"]


def test_dry_run_tiny(tmp_path, monkeypatch):
    out, results = dry_run("tiny", tmp_path, monkeypatch)
    assert set(results) == {"val_ppl"} and results["val_ppl"]["ppl"] > 1  # val_ppl of an SFT checkpoint (defect 1)


def test_dry_run_pycraft(tmp_path, monkeypatch, capsys):
    out, results = dry_run("pycraft_55m", tmp_path, monkeypatch)
    assert set(results) == {"val_ppl", "file_ppl", "humaneval"} and results["humaneval"]["n"] == 2
    meta = json.loads((tmp_path / "data" / "the_stack_python" / "meta.json").read_text())
    assert meta["config"]["quality_order"] and meta["config"]["fim_rate"] == 0.5 and "quality" in meta
    base, tuned = stage_config(tmp_path / "pycraft_55m"), stage_config(out)
    assert base["dtype"] == "bfloat16" and base["activation_checkpointing"] and base["data_order"] == "sequential"
    assert tuned["dtype"] == "float32" and tuned["chat_template"] == "magicoder"  # card 000: SFT in fp32
    text = capsys.readouterr()
    assert "=== fill in the middle" in text.out and "Ctrl-C quits" in text.err


@pytest.mark.parametrize("preset", ["gpt2_50m", "gpt2_150m", "gpt2_225m"])
def test_dry_run_gpt2(preset, tmp_path, monkeypatch, starcoder_like):
    # the three share every flag but the shape; the toy size makes their dry runs the same
    if preset != "gpt2_150m":
        assert {k: v for k, v in configurator.load_preset(preset).items() if k not in (
            "n_layer", "n_embd", "n_head", "max_iters", "learning_rate", "min_lr", "out_dir", "sft_init_from",
            "sft_out_dir")} == {k: v for k, v in configurator.load_preset("gpt2_150m").items() if k not in (
                "n_layer", "n_embd", "n_head", "max_iters", "learning_rate", "min_lr", "out_dir", "sft_init_from",
                "sft_out_dir")}
        return
    out, results = dry_run(preset, tmp_path, monkeypatch, tokenizer=str(starcoder_like))
    assert set(results) == {"val_ppl", "syntax"}
    base = stage_config(tmp_path / preset)
    assert base["dtype"] == "float16" and base["tokenizer"] == str(starcoder_like)  # card 001: fp16 + GradScaler
    assert "scale" in torch.load(tmp_path / preset / "ckpt.pt", weights_only=True)["scaler"]  # a live GradScaler
    meta = json.loads((tmp_path / "data" / "the_stack_python" / "meta.json").read_text())
    assert meta["config"]["filters"] == "card001" and meta["dtype"] == "uint16"


def test_dry_run_smallcoder(tmp_path, monkeypatch, starcoder_like):
    out, results = dry_run("smallcoder_303m", tmp_path, monkeypatch, tokenizer=str(starcoder_like))
    assert set(results) == {"humaneval", "mbpp", "gsm8k", "wikitext2", "arc_easy", "arc_challenge", "hellaswag"}
    code, math_ = stage_config(tmp_path / "smallcoder_303m_code"), stage_config(tmp_path / "smallcoder_303m_math")
    assert code["init_from"] == str(tmp_path / "smallcoder_303m") and code["dataset"] == "synthetic_code:0.6,starcoderdata:0.4"
    assert math_["init_from"] == str(tmp_path / "smallcoder_303m_code")
    assert stage_config(out)["init_from"] == str(tmp_path / "smallcoder_303m_math")


def test_dry_run_parchment(tmp_path, monkeypatch):
    # compile=False: torch.compile's first CPU compile alone takes ~30 s here (the CLI dry run keeps it)
    out, results = dry_run("parchment_166m", tmp_path, monkeypatch, compile=False)
    assert set(results) == {"val_ppl", "hellaswag", "arc_easy"}
    meta = json.loads((tmp_path / "data" / "fineweb_edu" / "meta.json").read_text())
    assert meta["tokenizer"] == "cl100k_base" and meta["dtype"] == "uint32"  # 100,277 ids do not fit uint16


def test_dry_run_picochat(tmp_path, monkeypatch):
    out, results = dry_run("picochat_335m", tmp_path, monkeypatch)
    assert set(results) == {"val_ppl", "arc_easy", "arc_challenge", "gsm8k", "hellaswag"}
    bins = tmp_path / "data" / "fineweb_edu"
    first = np.memmap(bins / "train.bin", dtype=np.uint16, mode="r")[0]
    assert first == data.load_tokenizer(bins)._special_tokens["<|bos|>"]  # card 004: <|bos|> opens each document
    mid = stage_config(tmp_path / "picochat_335m_mid")
    assert mid["midtrain_ratio"] == 0.5 and stage_config(out)["init_from"] == str(tmp_path / "picochat_335m_mid")
