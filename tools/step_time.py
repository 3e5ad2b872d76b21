"""
Median time of one training step of config/tiny.py's model and of variants of it, alternating the variants
step by step in one process (a shared machine's load then falls on all of them alike). The CPU speedrun's
step-time table in BENCHMARKS.md comes from this.

    python tools/step_time.py                      # every variant
    python tools/step_time.py base,b8,d128         # some
"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import configurator  # noqa: E402
import train  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

TINY = configurator.load_preset("tiny")
VARIANTS = {"base": {}, "b16": dict(batch_size=16), "b4": dict(batch_size=4), "vocab2048": dict(vocab_size=2048),
            "tied": dict(tie_embeddings=True), "d128": dict(n_embd=128, ffn_hidden=352), "l6": dict(n_layer=6),
            "block128": dict(block_size=128)}


def main(names, steps=12, warm=2):
    runs = {}
    for name in names:
        cfg = {**TINY, **VARIANTS[name]}
        torch.manual_seed(0)
        model = GPT(GPTConfig.from_dict(train.model_flags(cfg)))
        opt = train.configure_optimizer(model, cfg["weight_decay"], cfg["learning_rate"], (cfg["beta1"], cfg["beta2"]),
                                        1e-8, "cpu", cfg["muon_lr"])
        rows = cfg["batch_size"] * TINY["block_size"] // cfg["block_size"]  # the same tokens per step at any context
        x, y = (torch.randint(0, cfg["vocab_size"], (rows, cfg["block_size"])) for _ in range(2))
        runs[name] = (model, opt, x, y, [])
    for _ in range(steps):
        for model, opt, x, y, times in runs.values():
            t = time.perf_counter()
            _, loss = model(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t)
    first = statistics.median(runs[names[0]][4][warm:])
    for name, (model, _, x, _, times) in runs.items():
        med = statistics.median(times[warm:])
        print(f"{name:10s} {med * 1000:6.0f} ms/step  {x.numel() / med:7,.0f} tokens/s  "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params  {med / first:.3f}x {names[0]}'s step")


if __name__ == "__main__":
    main(sys.argv[1].split(",") if len(sys.argv) > 1 else list(VARIANTS))
