"""Every preset's whole recipe at toy size (dryrun.py), and the traps a new user meets on the way."""

import json
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
import sources
import dryrun
import eval as evaluate
import files
import sample
import sft
import train

ROOT = Path(__file__).resolve().parent.parent
# a kernel's argv: a script that reads sys.argv from a notebook fails on it ("cannot read argument '-f'")
JUPYTER_ARGV = ["ipykernel_launcher.py", "-f", "/tmp/kernel-1.json"]


@pytest.fixture(autouse=True)
def file_defaults_afterwards():
    """configure() sets module globals; the tests after these must find each script as its file sets it."""
    yield
    for module in (data, train, sft, sample, evaluate, dryrun):
        if "_defaults" in vars(module):
            configurator.reset(vars(module))


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
    tok.train_from_iterator([Path(p).read_text() for p in (sources.stdlib_files()[:40])], trainer)
    path = tmp_path_factory.mktemp("starcoder2") / "tokenizer.json"
    tok.save(str(path))
    return path


def dry_run(preset, work_dir, monkeypatch, **overrides):
    monkeypatch.setattr(sys, "argv", JUPYTER_ARGV)  # the notebook API must never read it
    dryrun.configure(preset=preset, work_dir=str(work_dir), **overrides)
    out = dryrun.main()
    assert stage_config(out)["chat_template"] == configurator.load_preset(preset)["chat_template"]
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


# what sets the three gpt2 presets apart: their shape, length, LR and folders (card 001's scaling study)
GPT2_OWN = ("n_layer", "n_embd", "n_head", "max_iters", "learning_rate", "min_lr", "out_dir", "sft_init_from",
            "sft_out_dir")


@pytest.mark.parametrize("preset", ["gpt2_50m", "gpt2_225m"])
def test_gpt2_presets_share_every_other_flag(preset):
    # so gpt2_150m's dry run, whose toy size replaces the shape, stands for all three
    def shared(name):
        return {k: v for k, v in configurator.load_preset(name).items() if k not in GPT2_OWN}
    assert shared(preset) == shared("gpt2_150m")


def test_dry_run_gpt2(tmp_path, monkeypatch, starcoder_like):
    preset = "gpt2_150m"
    out, results = dry_run(preset, tmp_path, monkeypatch, tokenizer=str(starcoder_like))
    assert set(results) == {"val_ppl", "syntax"}
    base = stage_config(tmp_path / preset)
    assert base["dtype"] == "float16" and base["tokenizer"] == str(starcoder_like)  # card 001: fp16 + GradScaler
    assert "scale" in torch.load(tmp_path / preset / "ckpt.pt", weights_only=True)["scaler"]  # a live GradScaler
    meta = json.loads((tmp_path / "data" / "the_stack_python" / "meta.json").read_text())
    assert meta["config"]["filters"] == "code_quality" and meta["dtype"] == "uint16"


def test_dry_run_smallcoder(tmp_path, monkeypatch, starcoder_like):
    out, results = dry_run("smallcoder_303m", tmp_path, monkeypatch, tokenizer=str(starcoder_like))
    assert set(results) == {"humaneval", "mbpp", "gsm8k", "wikitext2", "arc_easy", "arc_challenge", "hellaswag"}
    code, math_ = stage_config(tmp_path / "smallcoder_303m_code"), stage_config(tmp_path / "smallcoder_303m_math")
    assert code["init_from"] == str(tmp_path / "smallcoder_303m") and code["dataset"] == "synthetic_code:0.6,starcoderdata:0.4"
    assert math_["init_from"] == str(tmp_path / "smallcoder_303m_code")
    assert stage_config(out)["init_from"] == str(tmp_path / "smallcoder_303m_math")


def test_dry_run_parchment(tmp_path, monkeypatch):
    # compile=False: torch.compile's first CPU compile alone takes ~30 s here (the CLI dry run keeps it); float32:
    # bf16 autocast of its 100k-row head is ten times slower on a CPU without bf16 instructions (the other dry runs
    # keep their GPU's dtype)
    out, results = dry_run("parchment_166m", tmp_path, monkeypatch, compile=False, gpu_dtype=False)
    assert set(results) == {"val_ppl", "hellaswag", "arc_easy"}
    meta = json.loads((tmp_path / "data" / "fineweb_edu" / "meta.json").read_text())
    assert meta["tokenizer"] == "cl100k_base" and meta["dtype"] == "uint32"  # 100,277 ids do not fit uint16


@pytest.mark.benchmark
def test_dry_run_parchment_compiled(tmp_path, monkeypatch):
    """The CLI dry run's torch.compile path (card 003); ~30 s of compiling on 2 cores, so deselected by default."""
    t0 = time.time()
    out, results = dry_run("parchment_166m", tmp_path, monkeypatch)
    assert stage_config(tmp_path / "parchment_166m")["compile"] is True
    print(f"parchment_166m dry run with torch.compile: {time.time() - t0:.1f}s")


def test_dry_run_picochat(tmp_path, monkeypatch):
    out, results = dry_run("picochat_335m", tmp_path, monkeypatch)
    assert set(results) == {"val_ppl", "arc_easy", "arc_challenge", "gsm8k", "hellaswag"}
    bins = tmp_path / "data" / "fineweb_edu"
    first = np.memmap(bins / "train.bin", dtype=np.uint16, mode="r")[0]
    assert first == data.load_tokenizer(bins)._special_tokens["<|bos|>"]  # card 004: <|bos|> opens each document
    mid = stage_config(tmp_path / "picochat_335m_mid")
    assert mid["midtrain_ratio"] == 0.5 and stage_config(out)["init_from"] == str(tmp_path / "picochat_335m_mid")
    assert stage_config(out)["dataset"] == "fineweb_edu"  # SFT from a midtrained model still knows its bins


# -----------------------------------------------------------------------------
# the traps, each checked directly


def test_sft_checkpoint_names_the_data_it_descends_from(tmp_path, monkeypatch):
    out, results = dry_run("tiny", tmp_path, monkeypatch)
    assert stage_config(out)["dataset"] == "stdlib_python" and stage_config(out)["data_dir"] == str(tmp_path / "data")
    evaluate.configure(out_dir=str(out), tasks="val_ppl", device="cpu")  # what the README's eval commands do
    evaluate.main()
    assert json.loads((out / "eval.json").read_text())["results"]["val_ppl"]["tokens"] > 0


@pytest.mark.parametrize("module", [data, train, sft, sample, evaluate, dryrun])
def test_one_notebook_api_for_every_script(module, monkeypatch):
    import inspect
    monkeypatch.setattr(sys, "argv", JUPYTER_ARGV)
    assert [p.kind for p in inspect.signature(module.configure).parameters.values()] == [inspect.Parameter.VAR_KEYWORD]
    cfg = module.configure(preset="tiny", seed=7)
    assert cfg["seed"] == 7


def script_globals(module):
    """A copy of a script's config constants, and GPTConfig where the script has architecture flags."""
    return {k: v for k, v in vars(module).items() if configurator._known_constant(k, v) or k == "GPTConfig"}


def test_bare_boolean_flags_mean_true():
    g = script_globals(train)
    assert configurator.configure(g, ["--compile", "--preset=tiny"])["compile"] is True
    g = script_globals(sft)
    assert configurator.configure(g, ["--show_example"])["show_example"] is True
    g = script_globals(evaluate)
    assert configurator.configure(g, ["--allow_code_execution"])["allow_code_execution"] is True
    with pytest.raises(configurator.UserError, match="--limit needs a value"):
        configurator.configure(g, ["--limit"])
    with pytest.raises(configurator.UserError, match="did you mean --compile"):
        configurator.configure(script_globals(train), ["--compil"])


def test_train_takes_a_tokenizer():
    g = script_globals(train)
    assert configurator.configure(g, ["--preset=gpt2_50m", "--tokenizer=path/tokenizer.json"])["tokenizer"] == "path/tokenizer.json"


@pytest.mark.parametrize("preset", configurator.list_presets())
def test_presets_decay_over_max_iters(preset):
    # a stage that raises --max_iters (README: smallcoder's stages 2 and 3) must decay over all of it
    assert configurator.load_preset(preset).get("lr_decay_iters", 0) == 0


def test_offline_messages_name_the_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "CACHE_DIR", tmp_path)
    monkeypatch.setitem(files.URLS, "hf_model_file", "http://127.0.0.1:9/{repo}/{path}")  # nothing listens
    with pytest.raises(configurator.UserError, match="--tokenizer=PATH/tokenizer.json"):
        data.load_tokenizer("hf:bigcode/starcoder2-15b")
    monkeypatch.setitem(files.URLS, "magicoder_oss_75k", "http://127.0.0.1:9/magicoder.jsonl")
    with pytest.raises(configurator.UserError, match="--sft_data=PATH.jsonl"):
        sft.load_conversations("magicoder_python", {"seed": 0, "max_examples": 0})


def read_line_until(stream, needle, timeout):
    """Lines of a child's pipe until one holds needle; None when it did not come in time."""
    import threading
    found = []

    def scan():
        for line in stream:
            if needle in line:
                found.append(line)
                return
    reader = threading.Thread(target=scan, daemon=True)
    reader.start()
    reader.join(timeout)
    return found[0] if found else None



def ctrl_c_after(cmd, stream, line, timeout, why):
    """Starts cmd, waits for a line holding `line` on stream, sends SIGINT: (exit code, stderr)."""
    child = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert read_line_until(getattr(child, stream), line, timeout=timeout), why
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    return child.returncode, err

def test_ctrl_c_saves_and_says_how_to_resume_and_logs_reach_a_pipe(tmp_path):
    data.prepare({"dataset": "stdlib_python", "data_dir": str(tmp_path), "max_chars": 40_000, "vocab_size": 300,
                  "tokenizer_train_chars": 40_000})
    out = tmp_path / "run"
    cmd = [sys.executable, "train.py", "--dataset=stdlib_python", f"--data_dir={tmp_path}", f"--out_dir={out}",
           "--n_layer=1", "--n_embd=32", "--n_head=2", "--block_size=32", "--batch_size=2", "--max_iters=1000000",
           "--eval_interval=1", "--eval_iters=100", "--log_interval=1", "--device=cpu", "--dtype=float32"]
    # a slow evaluation every step makes a few short lines a second: a block-buffered pipe would hold them for
    # minutes, a line-buffered one passes each on as it is printed
    returncode, err = ctrl_c_after(cmd, "stdout", "iter 1:", 30, "no log line reached the pipe")
    assert returncode == 130 and "Traceback" not in err and "--init_from=resume" in err
    stopped = torch.load(out / "ckpt.pt", weights_only=True)["iter_num"]
    assert stopped >= 1
    overrides = dict(arg[2:].split("=", 1) for arg in cmd[2:])
    configurator.configure(vars(train), [f"--{k}={v}" for k, v in overrides.items() if k != "max_iters"]
                           + [f"--max_iters={stopped + 1}", "--init_from=resume", "--eval_iters=1"])
    assert train.main()["iters"] == stopped + 1  # the advice works

    returncode, err = ctrl_c_after([sys.executable, "sample.py", f"--out_dir={out}", "--chat",
                                    "--chat_template=user_assistant", "--device=cpu"],
                                   "stderr", "Ctrl-C quits", 60, "chat did not say how to quit")
    assert returncode == 0 and "Traceback" not in err
