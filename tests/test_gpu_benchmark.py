"""The presets on a GPU: tokens/s, MFU and peak memory from train.py's own log. Measurements, not
tests, deselected by default; they need a CUDA GPU:

    python -m pytest -m benchmark -s tests/test_gpu_benchmark.py
    python -m pytest -m benchmark -s tests/test_gpu_benchmark.py -k nanogpt

tools/gpu_check.py measures what the GPU step is judged by in one command and holds the runner used here: each
run is train.py's main() at the preset's full size, micro-batch and accumulation (evaluation and checkpoint writes
left out), on the bins `python tools/gpu_check.py --prepare` makes into .bench/data: parchment's own cl100k_base,
and one 4,096-id BPE that gpt2_150m and picochat_335m read with the preset's vocab_size, so the model keeps its
rows (speed does not depend on the text). The step time is the median of the steps after the first quarter
(compilation and warm-up). nanoGPT's code is read from NANOGPT_DIR (default .bench/nanoGPT, which --prepare
--nanogpt_src=PATH fills). BENCH_FLAGS adds flags to every train.py run (`--device=cpu --n_layer=1 ...` checks
this file on a machine without a GPU), BENCH_NANO_FLAGS to every nanoGPT run."""

import gc
import os
import statistics
import time

import pytest
import torch
from torch import profiler

import configurator
from model import GPT, GPTConfig, apply_rope
from tools import gpu_check

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = [pytest.mark.benchmark,
              pytest.mark.skipif(DEVICE != "cuda" and not gpu_check.FLAGS, reason="needs a CUDA GPU")]


@pytest.fixture(scope="module", autouse=True)
def bins():
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    print(f"\n{name}, PyTorch {torch.__version__}, {os.cpu_count()} CPU cores")
    gpu_check.prepare_bins()


def train(name, preset, iters, *flags):
    """One run of ours (gpu_check.run_ours): its steps' median ms, wall ms, tokens/s and MFU, the peak memory,
    and the run's summary (iters, skipped steps, GradScaler skips)."""
    result = gpu_check.run_ours(name, preset, iters, *flags)
    assert "error" not in result, result["error"]
    print(f"\n{name}: {result['command']}\n  {result['ms']:.1f} ms/step, {result['tok_s']:,.0f} tokens/s, "
          f"MFU {result['mfu'] * 100:.1f}%, peak {result['peak_gib']:.1f} GiB")
    return {**result, **result["summary"]}


@pytest.mark.parametrize("preset,iters", [("parchment_166m", 24), ("picochat_335m", 80), ("gpt2_150m", 20)])
@pytest.mark.parametrize("compile", [False, True])
def test_preset_throughput(preset, iters, compile):
    train(f"{preset}_compile{compile}", preset, iters, f"--compile={compile}", "--dtype=bfloat16")


@pytest.mark.parametrize("compile", [False, True])
def test_parchment_vocab_padding(compile):
    """100,277 rows (cl100k as it is) against the preset's 100,352, alternating, medians of the per-pair ratios."""
    times = {1: [], 128: []}
    for _ in range(2):
        for pad in times:
            times[pad].append(train(f"parchment_pad{pad}", "parchment_166m", 16, f"--compile={compile}",
                                    f"--pad_vocab_multiple={pad}")["ms"])
    print(f"\nparchment_166m compile={compile}: unpadded/padded step time "
          f"{statistics.median(a / b for a, b in zip(times[1], times[128])):.2f}x")


def test_fp16_gradscaler_200_steps():
    """Card 001's T4 path (fp16 + GradScaler) at the card's settings: 200 steps, no step skipped, no overflow."""
    summary = train("gpt2_150m_fp16", "gpt2_150m", 200, "--dtype=float16", "--compile=False")
    assert summary["iters"] == 200 and summary["skipped"] == 0 and summary["scaler_skips"] == 0, summary


@pytest.mark.parametrize("compile", [True, False])
def test_gpt2_150m_against_nanogpt(compile):
    """Ours and nanoGPT's train.py, same shape (12 x 768, biases, tied, vocab 49,152), same micro-batch and
    accumulation, bf16, alternating A B B A; timed from one step's end to the next, as nanoGPT times its steps."""
    if not all((gpu_check.NANOGPT_DIR / f).exists() for f in gpu_check.NANOGPT_FILES):
        pytest.skip(f"no nanoGPT in {gpu_check.NANOGPT_DIR}: python tools/gpu_check.py --prepare --nanogpt_src=PATH")
    flags = (f"--compile={compile}", "--dtype=bfloat16")

    def ours():
        return train("gpt2_150m_vs", "gpt2_150m", 20, *flags)["wall_ms"]

    def theirs():
        result = gpu_check.run_nanogpt("nanogpt", 20, *flags)
        assert "error" not in result, result["error"]
        print(f"\nnanoGPT: {result['command']}\n  {result['wall_ms']:.1f} ms/step")
        return result["wall_ms"]

    times = {ours: [], theirs: []}
    for run in (ours, theirs, theirs, ours):
        times[run].append(run())
    print(f"\ngpt2_150m compile={compile}: our step time / nanoGPT's "
          f"{statistics.median(times[ours]) / statistics.median(times[theirs]):.2f}x")


def preset_config(preset, **overrides):
    """The preset's GPTConfig; on a CPU (the BENCH_FLAGS check) one layer of 64 at context 64."""
    toy = {} if DEVICE == "cuda" else dict(n_layer=1, n_embd=64, n_head=2, n_kv_head=0, block_size=64)
    return GPTConfig.from_dict({**configurator.load_preset(preset), **overrides, **toy})


def training_step(config, batch, compile=False):
    """(step, model): step() is one micro-batch of random ids through forward under bf16 autocast, backward and
    a fused AdamW step, as train.py takes it."""
    with torch.device(DEVICE):
        model = GPT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=DEVICE == "cuda")
    forward = torch.compile(model) if compile else model
    x = torch.randint(0, config.vocab_size, (batch, config.block_size), device=DEVICE)

    def step():
        with torch.autocast(device_type=DEVICE, dtype=torch.bfloat16):
            _, loss = forward(x, x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step, model


def fits(config, batch):
    """Peak GiB of two training steps at this micro-batch (not compiled), or None when it runs out of memory."""
    step = None
    try:
        if DEVICE == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step, _ = training_step(config, batch)
        step()
        step()
        return torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else 0.0
    except torch.OutOfMemoryError:
        return None
    finally:
        del step
        gc.collect()
        if DEVICE == "cuda":
            torch.cuda.empty_cache()


@pytest.mark.parametrize("preset", ["parchment_166m", "picochat_335m", "gpt2_150m"])
def test_largest_micro_batch(preset):
    """Doubling from the preset's micro-batch until one does not fit, then bisecting to a multiple of 4."""
    config, own = preset_config(preset), configurator.load_preset(preset)["batch_size"]
    lo = own
    assert fits(config, lo) is not None, "the preset's own micro-batch does not fit"
    hi = None
    while hi is None and lo < (4096 if DEVICE == "cuda" else 16):
        lo, hi = (lo * 2, None) if fits(config, lo * 2) is not None else (lo, lo * 2)
    while hi and hi - lo > 4:
        mid = (lo + hi) // 8 * 4
        lo, hi = (mid, hi) if fits(config, mid) is not None else (lo, mid)
    print(f"\n{preset}: micro-batch {own} peaks at {fits(config, own):.1f} GiB; "
          f"the largest that fits is {lo} ({fits(config, lo):.1f} GiB), {hi} does not")


def drain():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed_ms(fn, n=5):
    """Mean ms of fn over n calls, the device drained before and after."""
    drain()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    drain()
    return (time.perf_counter() - t0) / n * 1000


@pytest.mark.parametrize("pad", [1, 128])
@pytest.mark.parametrize("compile", [False, True])
def test_where_the_parchment_step_goes(pad, compile):
    """The profiler's kernels of parchment_166m's micro-step (16 x 1024 tokens, bf16 autocast, fused AdamW) by GPU
    time, unpadded and padded; eager, also the head + loss with and without the fp32 copy of the logits, and
    RoPE upcast to fp32 against model.apply_rope's rotation in bf16, forward and backward of q."""
    config = preset_config("parchment_166m", pad_vocab_multiple=pad)
    B, T = (16 if DEVICE == "cuda" else 2), config.block_size
    step, model = training_step(config, B, compile)
    x = torch.randint(0, config.vocab_size, (B, T), device=DEVICE)
    autocast = lambda: torch.autocast(device_type=DEVICE, dtype=torch.bfloat16)  # noqa: E731
    for _ in range(3):  # compiles, allocates the optimizer state
        step()
    activities = [profiler.ProfilerActivity.CPU] + ([profiler.ProfilerActivity.CUDA] if DEVICE == "cuda" else [])
    with profiler.profile(activities=activities) as prof:
        for _ in range(3):
            step()
        drain()
    key = "self_cuda_time_total" if DEVICE == "cuda" else "self_cpu_time_total"
    print(f"\nparchment_166m, pad_vocab_multiple={pad}, compile={compile}: {timed_ms(step):.1f} ms per "
          f"micro-step\n" + prof.key_averages().table(sort_by=key, row_limit=20, max_name_column_width=70))
    if compile:
        return
    h = torch.randn(B, T, config.n_embd, device=DEVICE, requires_grad=True)

    def head_and_loss(fp32_copy):
        with autocast():
            logits = model.lm_head(model.ln_f(h))[..., :config.vocab_size]
            logits = logits.float() if fp32_copy else logits
            torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), x.view(-1)).backward()

    q = torch.randn(B, config.n_head, T, config.head_size, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]

    def rope_fp32():  # model.apply_rope before it rotated in q's dtype
        q1, q2 = q.float().chunk(2, dim=-1)
        torch.cat([q1 * cos - q2 * sin, q1 * sin + q2 * cos], dim=-1).type_as(q).sum().backward()

    print(f"head + loss, forward and backward: {timed_ms(lambda: head_and_loss(True)):.1f} ms with the fp32 "
          f"copy, {timed_ms(lambda: head_and_loss(False)):.1f} ms without; RoPE on q: "
          f"{timed_ms(rope_fp32):.2f} ms in fp32, {timed_ms(lambda: apply_rope(q, cos, sin).sum().backward()):.2f} ms "
          f"in bf16 (model.apply_rope)")
