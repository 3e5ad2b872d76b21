"""Measurements, not tests: deselected by default. Run with

    python -m pytest -m benchmark -s tests/test_benchmarks.py

Each prints its figures; the README quotes them with the machine they came from."""

import importlib.util
import math
import os
import statistics
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from model import GPT, GPTConfig

pytestmark = pytest.mark.benchmark

# GPT-2 shaped but small enough for a CPU: 6 layers, 384 wide, 6 heads, context 256
SHAPE = dict(vocab_size=8192, block_size=256, n_layer=6, n_embd=384, n_head=6)
BATCH = 8


class PlainBlock(nn.Module):
    """GPT-2's block the obvious way: separate q, k, v, a materialised mask, softmax, nn.GELU."""

    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        hx = self.ln1(x)
        q, k, v = (m(hx).view(B, T, self.h, C // self.h).transpose(1, 2) for m in (self.q, self.k, self.v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.h)
        att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf")).softmax(-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(B, T, C))
        return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class PlainGPT(nn.Module):

    def __init__(self, c):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(c["vocab_size"], c["n_embd"]), nn.Embedding(c["block_size"], c["n_embd"])
        self.blocks = nn.ModuleList(PlainBlock(c["n_embd"], c["n_head"]) for _ in range(c["n_layer"]))
        self.ln_f = nn.LayerNorm(c["n_embd"])
        self.head = nn.Linear(c["n_embd"], c["vocab_size"], bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.ln_f(x))
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def time_steps(model, n=6):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, SHAPE["vocab_size"], (BATCH, SHAPE["block_size"]))
    times = []
    for i in range(n + 2):
        t0 = time.perf_counter()
        _, loss = model(x, x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:  # the first steps allocate optimizer state
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def test_train_step_against_plain_pytorch():
    torch.manual_seed(0)
    ours = time_steps(GPT(GPTConfig(**SHAPE)))
    plain = time_steps(PlainGPT(SHAPE))
    tokens = BATCH * SHAPE["block_size"]
    print(f"\nCPU, {torch.get_num_threads()} threads, GPT-2 shape {SHAPE}, batch {BATCH}: "
          f"ours {ours * 1000:.0f} ms/step ({tokens / ours:,.0f} tok/s), "
          f"plain PyTorch {plain * 1000:.0f} ms/step ({tokens / plain:,.0f} tok/s), ratio {ours / plain:.2f}")
    assert ours < 1.5 * plain


def test_sampling_with_and_without_kv_cache():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SHAPE)).eval()
    prompt = torch.randint(0, SHAPE["vocab_size"], (1, 16))
    rates = {}
    for use_cache in (True, False):
        t0 = time.perf_counter()
        n = sum(1 for _ in model.generate(prompt, 200, temperature=0, use_cache=use_cache))
        rates[use_cache] = n / (time.perf_counter() - t0)
    print(f"\nCPU sampling, {SHAPE['n_layer']}L/{SHAPE['n_embd']}, 200 tokens: "
          f"{rates[True]:.0f} tok/s with the KV cache, {rates[False]:.0f} tok/s without")
    assert rates[True] > rates[False]


def test_host_time_against_nanogpt():
    """What a small micro-batch on a GPU waits for: the host's time to launch one forward + backward, measured at
    toy width on one CPU thread (12 layers, width 64, 16 tokens, bf16 autocast), ours against nanoGPT's model.py
    (NANOGPT_DIR, a checkout of github.com/karpathy/nanoGPT), 7 alternating rounds of 50 steps. BENCH_BEFORE=<a
    checkout of an older commit> adds that commit's model.py to each round, to measure a change."""
    if not os.environ.get("NANOGPT_DIR"):
        pytest.skip("set NANOGPT_DIR to a checkout of nanoGPT")

    def module(name, folder):
        spec = importlib.util.spec_from_file_location(name, Path(folder) / "model.py")
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
        return loaded
    nano = module("nanogpt_model", os.environ["NANOGPT_DIR"])
    shape = dict(vocab_size=512, block_size=16, n_layer=12, n_embd=64, n_head=4, bias=True)
    models = {"ours": GPT(GPTConfig(**shape)), "nanoGPT": nano.GPT(nano.GPTConfig(**shape, dropout=0.0))}
    if os.environ.get("BENCH_BEFORE"):
        before = module("model_before", os.environ["BENCH_BEFORE"])
        models["before"] = before.GPT(before.GPTConfig(**shape))
    x = torch.randint(0, 512, (1, 16))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def host_ms(model, n=50):
        t0 = time.perf_counter()
        for _ in range(n):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                _, loss = model(x, x)
            loss.backward()
        return (time.perf_counter() - t0) / n * 1000

    try:
        times = {name: [] for name in models}
        for name, model in models.items():
            host_ms(model, 10)
        for _ in range(7):
            for name, model in models.items():
                times[name].append(host_ms(model))
    finally:
        torch.set_num_threads(threads)
    ratio = statistics.median(a / b for a, b in zip(times["ours"], times["nanoGPT"]))
    print(f"\nhost ms per forward + backward: ours {statistics.median(times['ours']):.2f}, "
          f"nanoGPT {statistics.median(times['nanoGPT']):.2f}; ratio {ratio:.3f}")
    if "before" in times:
        print(f"before ({os.environ['BENCH_BEFORE']}): {statistics.median(times['before']):.2f} ms, "
              f"{statistics.median(a / b for a, b in zip(times['before'], times['nanoGPT'])):.3f}x nanoGPT's; "
              f"ours {statistics.median(a / b for a, b in zip(times['ours'], times['before'])):.3f}x its time")
    assert ratio < 2, "our forward + backward launches twice nanoGPT's work on the host"
