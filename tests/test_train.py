"""train.py: the loop learns, resumes bit-exactly after a kill, skips bad steps, runs under DDP."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import checkpoint
import data
import muon
import train

ROOT = Path(__file__).resolve().parent.parent

# a model small enough that a 30-step run takes about a second on one core
MICRO = ["--n_layer=2", "--n_embd=32", "--n_head=4", "--n_kv_head=2", "--pos=rope", "--norm=rmsnorm",
         "--mlp=swiglu", "--block_size=32", "--batch_size=4", "--eval_iters=2", "--log_interval=1",
         "--learning_rate=3e-3", "--min_lr=3e-4", "--warmup_iters=5", "--device=cpu", "--dtype=float32",
         "--grad_skip_factor=0"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    data.prepare({"dataset": "stdlib_python", "data_dir": str(root), "max_chars": 300_000,
                  "tokenizer": "bpe", "vocab_size": 320, "tokenizer_train_chars": 100_000,
                  "special_tokens": ["<|endoftext|>"], "filters": "none", "fim_rate": 0.0, "val_fraction": 0.05})
    return root


def args(data_dir, out_dir, *extra):
    return [f"--data_dir={data_dir}", "--dataset=stdlib_python", f"--out_dir={out_dir}", *MICRO, *extra]


def run_in_process(argv):
    train.configurator.configure(vars(train), argv)
    return train.main()


def metrics(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def test_an_architecture_flag_assigned_by_hand_builds_the_model(data_dir, tmp_path):
    """A notebook's `train.n_layer = 1` is the model's depth, as nanoGPT's module constants are."""
    train.configurator.configure(vars(train), args(data_dir, tmp_path, "--max_iters=1"))
    try:
        train.n_layer = 1
        train.main()
    finally:
        train.configurator.reset(vars(train))
    model, _, _ = checkpoint.load_checkpoint(tmp_path)
    assert len(model.blocks) == 1 and model.config.n_layer == 1


def test_loss_falls_and_notebook_can_run_twice(data_dir, tmp_path, capsys):
    first = run_in_process(args(data_dir, tmp_path / "a", "--max_iters=40", "--eval_interval=20"))
    last_line = capsys.readouterr().out.splitlines()[-1]
    evals = [r for r in metrics(tmp_path / "a") if "val_loss" in r]
    assert [r["iter"] for r in evals] == [0, 20, 40]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.7  # from ln(320) = 5.77
    assert first["iters"] == 40 and first["tokens"] == 40 * 4 * 32
    assert [r["tokens"] for r in evals] == [0, 20 * 4 * 32, 40 * 4 * 32]  # plot.py draws loss against these
    # bits per byte: nats per token times the data's tokens per byte, over ln 2 (meta.json counts both)
    meta = data.read_meta(data_dir / "stdlib_python")
    for row in evals:
        for split in ("train", "val"):
            expected = row[f"{split}_loss"] * meta[f"{split}_tokens"] / meta[f"{split}_bytes"] / math.log(2)
            assert row[f"{split}_bpb"] == pytest.approx(expected, rel=1e-12)
    assert evals[0]["compressors_bpb"] == meta["val_compressed_bpb"] and "compressors_bpb" not in evals[1]
    assert first["val_bpb"] == evals[-1]["val_bpb"]
    xz = meta["val_compressed_bpb"]["xz"]
    assert last_line.startswith(f"your model compresses unseen stdlib_python to {first['val_bpb']:.3f} bits per byte; ")
    assert last_line.endswith(f"xz: {xz:.3f}")
    # a second call in the same process: fresh state, same numbers (seeded)
    second = run_in_process(args(data_dir, tmp_path / "b", "--max_iters=40", "--eval_interval=20"))
    assert second["val_loss"] == first["val_loss"]
    ckpt = torch.load(tmp_path / "a" / "ckpt.pt", weights_only=True)
    assert ckpt["iter_num"] == 40 and ckpt["config"]["max_iters"] == 40
    model, enc, _ = checkpoint.load_checkpoint(tmp_path / "a")
    assert enc.n_vocab == 320 and model.config.n_layer == 2


def test_resume_after_sigkill_is_bit_exact(data_dir, tmp_path):
    common = [a for a in args(data_dir, "", "--max_iters=30", "--eval_interval=10", "--dropout=0.1")
              if not a.startswith("--out_dir")]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run_in_process([f"--out_dir={whole}", *common])
    # -u: unbuffered, so the line arrives as it is printed and the kill lands mid-run
    proc = subprocess.Popen([sys.executable, "-u", "train.py", f"--out_dir={cut}", *common], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # the checkpoint of iteration 20 is written before step 21 is logged
        if line.startswith("iter 21:"):
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(cut / "ckpt.pt", weights_only=True)["iter_num"] == 20
    run_in_process([f"--out_dir={cut}", "--init_from=resume", *common])
    losses = lambda d: [(r["iter"], r.get("loss"), r.get("val_loss")) for r in metrics(d) if "iter" in r]
    assert losses(cut) == losses(whole)  # every train and val loss, bit for bit
    assert len(losses(whole)) == 30 + 4


def test_a_run_with_muon_resumes_exactly(data_dir, tmp_path):
    """Every loss of a Muon run cut at step 4 and resumed equals the uninterrupted run's, bit for bit: the
    schedule reaches the optimizer groups that load_state_dict put in place, and the momentum comes back."""
    common = [a for a in args(data_dir, "", "--eval_interval=4", "--muon_lr=0.02", "--lr_decay_iters=8")
              if not a.startswith("--out_dir")]
    run_in_process([f"--out_dir={tmp_path / 'whole'}", "--max_iters=8", *common])
    run_in_process([f"--out_dir={tmp_path / 'cut'}", "--max_iters=4", *common])
    run_in_process([f"--out_dir={tmp_path / 'cut'}", "--init_from=resume", "--max_iters=8", *common])
    losses = lambda d: [(r["iter"], r.get("loss"), r.get("val_loss")) for r in metrics(d) if "iter" in r]  # noqa: E731
    assert losses(tmp_path / "cut") == losses(tmp_path / "whole")


class Sabotaged(torch.nn.Module):
    """Wraps a GPT and corrupts the loss of chosen optimizer steps, as a bad batch or overflow would."""

    def __init__(self, model, bad_steps, how):
        super().__init__()
        self.model, self.bad_steps, self.how, self.calls = model, bad_steps, how, 0

    def forward(self, x, y):
        logits, loss = self.model(x, y)
        if self.training:
            if self.calls in self.bad_steps:
                loss = loss * float("nan") if self.how == "nan" else loss * 1e4
            self.calls += 1
        return logits, loss

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)


def loop_cfg(out_dir, **kw):
    train.configurator.configure(vars(train), args("unused", out_dir))
    cfg = train.configurator.effective_config(vars(train))
    return {**cfg, "eval_interval": 1000, **kw}


def make_run(data_dir, out_dir, bad_steps, how, **kw):
    cfg = loop_cfg(out_dir, **kw)
    loaders = {s: data.Loader(str(data_dir / "stdlib_python"), s, 4, 32, seed=1) for s in ("train", "val")}
    enc = data.load_tokenizer(str(data_dir / "stdlib_python"))
    torch.manual_seed(0)
    model = train.GPT(train.GPTConfig(vocab_size=320, block_size=32, n_layer=2, n_embd=32, n_head=4))
    return cfg, Sabotaged(model, bad_steps, how), enc, loaders


def test_non_finite_loss_is_skipped_and_leaves_weights_untouched(data_dir, tmp_path):
    cfg, model, enc, loaders = make_run(data_dir, tmp_path, {0}, "nan", max_iters=1)
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    summary = train.train(cfg, model, enc, loaders)
    assert summary["skipped"] == 1 and summary["iters"] == 1
    assert all(torch.equal(before[k], v) for k, v in model.model.state_dict().items())
    rows = metrics(tmp_path)
    assert any(r.get("skipped_step") == "non-finite loss" for r in rows)


def test_grad_spike_is_skipped_and_training_continues(data_dir, tmp_path):
    cfg, model, enc, loaders = make_run(data_dir, tmp_path, {15}, "spike", max_iters=25, grad_skip_factor=10.0)
    summary = train.train(cfg, model, enc, loaders)
    skipped = [r for r in metrics(tmp_path) if "skipped_step" in r]
    assert summary["skipped"] == 1 and [r["iter"] for r in skipped] == [15]
    assert "median" in skipped[0]["skipped_step"]
    assert math.isfinite(summary["train_loss"]) and summary["iters"] == 25


def test_too_many_skips_in_a_row_stop_with_a_checkpoint(data_dir, tmp_path):
    cfg, model, enc, loaders = make_run(data_dir, tmp_path, set(range(100)), "nan", max_iters=50, max_skips_in_row=3)
    with pytest.raises(SystemExit, match="3 steps in a row were skipped"):
        train.train(cfg, model, enc, loaders)
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["skipped_total"] == 3


def test_fp16_with_grad_scaler(data_dir, tmp_path, fp16_autocast):
    summary = run_in_process(args(data_dir, tmp_path, "--max_iters=10", "--eval_interval=10", "--dtype=float16"))
    scale = torch.load(tmp_path / "ckpt.pt", weights_only=True)["scaler"]["scale"]
    assert math.isfinite(summary["val_loss"]) and 0 < scale <= 65536.0


def test_lr_schedules():
    cfg = {"learning_rate": 1.0, "min_lr": 0.1, "warmup_iters": 10, "lr_decay_iters": 110, "max_iters": 110,
           "warmdown_frac": 0.2}
    cos = [train.get_lr(i, {**cfg, "lr_schedule": "cosine"}) for i in range(120)]
    assert cos[0] < cos[5] < cos[9] <= 1.0 and abs(cos[60] - 0.55) < 1e-9 and cos[115] == 0.1
    wsd = [train.get_lr(i, {**cfg, "lr_schedule": "wsd"}) for i in range(111)]
    assert wsd[50] == wsd[88] == 1.0 and abs(wsd[99] - (0.1 + 0.9 * 11 / 22)) < 1e-9 and wsd[110] == 0.1
    lin = train.get_lr(60, {**cfg, "lr_schedule": "linear"})
    assert abs(lin - 0.55) < 1e-9


def test_ddp_two_processes_with_gloo(data_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "train.py", *args(data_dir, tmp_path, "--max_iters=6", "--eval_interval=3",
                                          "--gradient_accumulation_steps=2")],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("done:") == 1  # rank 0 logs alone
    assert "2 process(es)" in r.stdout and f"{4 * 32 * 2 * 2} tokens/step" in r.stdout
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert len(ckpt["ranks"]) == 2 and ckpt["ranks"][0]["loaders"] != ckpt["ranks"][1]["loaders"]


@pytest.mark.parametrize("extra,words", [
    (["--dataset=files:/no/such/dir"], "no files match /no/such/dir"),
    (["--vocab_size=100"], "vocab_size=100"),
    (["--block_size=100000"], "fewer than one context window"),
    (["--device=cuda"], "no CUDA GPU"),
    (["--eval_interval=0"], "eval_interval=0 must be at least 1"),
    (["--gradient_accumulation_steps=0"], "gradient_accumulation_steps=0 must be at least 1"),
])
def test_bad_input_is_one_line(data_dir, tmp_path, extra, words):
    r = subprocess.run([sys.executable, "train.py", *args(data_dir, tmp_path, "--max_iters=1"), *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    if extra[0].startswith("--device=cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert words in r.stderr


class FixedBatches:
    """A loader that hands out rows of one fixed tensor, batch_size at a time, cycling."""

    def __init__(self, data, batch_size):
        self.data, self.batch_size, self.pos = data, batch_size, 0

    def next_batch(self):
        rows = self.data[self.pos:self.pos + self.batch_size]
        self.pos = (self.pos + self.batch_size) % len(self.data)
        return rows[:, :-1], rows[:, 1:]

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, sd):
        self.pos = sd["pos"]


def test_gradient_accumulation_equals_the_full_batch(tmp_path):
    """Two micro-batches of 2 must step exactly like one batch of 4: same loss, same gradient norm
    (the loss is divided by the accumulation), same weights after the step."""
    tokens = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(3))
    weights, logged = [], []
    for batch, accum in ((4, 1), (2, 2)):
        torch.manual_seed(0)
        model = train.GPT(train.GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_embd=16, n_head=2))
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        cfg = loop_cfg(tmp_path / f"{batch}", batch_size=batch, gradient_accumulation_steps=accum, block_size=16,
                       max_iters=1, eval_iters=1, warmup_iters=0, grad_clip=0.0)
        loaders = {"train": FixedBatches(tokens, batch), "val": FixedBatches(tokens, batch)}
        train.train(cfg, model, data.load_tokenizer("cl100k_base"), loaders)
        weights.append(model.state_dict())
        logged.append(next(r for r in metrics(tmp_path / f"{batch}") if "grad_norm" in r))
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-6) for k in weights[0])
    assert not torch.equal(weights[0]["blocks.0.mlp.c_fc.weight"], initial["blocks.0.mlp.c_fc.weight"])
    assert abs(logged[0]["loss"] - logged[1]["loss"]) < 1e-5
    assert abs(logged[0]["grad_norm"] - logged[1]["grad_norm"]) < 1e-5


def test_orthogonalize_flattens_the_spectrum():
    G = torch.randn(32, 64) @ torch.diag(torch.logspace(-2, 1, 64))  # singular values spread over 3 decades
    s = torch.linalg.svdvals(muon.orthogonalize(G).float())
    assert s.min() > 0.5 and s.max() < 1.3
    assert muon.orthogonalize(G.T).shape == (64, 32)


def test_muon_orthogonalizes_a_fused_weight_block_by_block():
    """Attention's qkv weight is three matrices to Muon (nanochat's c_q, c_k, c_v): a block whose gradient is a
    thousandth of the others still moves by a full, flat step, as it would on its own."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(16, 16))
    w.grad = torch.cat([torch.randn(8, 16), 1e-3 * torch.randn(4, 16), torch.randn(4, 16)])
    muon.Muon([w], lr=0.1, row_blocks={id(w): [8, 4, 4]}).step()
    for block in w.detach().split([8, 4, 4]):
        s = torch.linalg.svdvals(block / 0.1)
        assert s.min() > 0.5 and s.max() < 1.3, s


def test_muon_trains_and_its_state_round_trips(data_dir, tmp_path):
    summary = run_in_process(args(data_dir, tmp_path, "--max_iters=30", "--eval_interval=30", "--muon_lr=0.02"))
    evals = [r["val_loss"] for r in metrics(tmp_path) if "val_loss" in r]
    assert evals[-1] < evals[0] - 0.7 and summary["skipped"] == 0
    sd = torch.load(tmp_path / "ckpt.pt", weights_only=True)["optimizer"]
    model, _, _ = checkpoint.load_checkpoint(tmp_path)
    fresh = train.configure_optimizer(model, 0.1, 3e-3, (0.9, 0.95), 1e-8, "cpu", muon_lr=0.02)
    fresh.load_state_dict(sd)
    muon = fresh.optimizers[1]
    assert len(muon.state) == len(muon.param_groups[0]["params"]) > 0
    assert muon.param_groups[0]["lr_scale"] == pytest.approx(0.02 / 3e-3)


def test_bf16_autocast_keeps_fp32_weights(data_dir, tmp_path):
    summary = run_in_process(args(data_dir, tmp_path, "--max_iters=5", "--eval_interval=5", "--dtype=bfloat16"))
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert math.isfinite(summary["val_loss"]) and ckpt["config"]["dtype"] == "bfloat16"
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())
