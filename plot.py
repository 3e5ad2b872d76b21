"""
Loss curves from metrics.jsonl: train and val loss against tokens seen, the learning rate on a second axis; above
them, where train.py logged them, train and val bits per byte beside zlib, bz2 and xz on the same validation bytes.

    python plot.py --out_dir=out/tiny                                   # writes out/tiny/loss.png
    python plot.py --out_dir=out/tiny,out/tiny_sft --plot_file=runs.png  # several runs on one figure

From a notebook: `import plot; plot.plot_runs(["out/tiny"])` draws inline and returns the matplotlib figure.
matplotlib is an optional extra (pip install matplotlib); reading the metrics needs nothing but json.
"""

import json
from pathlib import Path

import configurator
from configurator import UserError

# -----------------------------------------------------------------------------
# config

out_dir = "out/tiny"        # a run's folder (train.py's or sft.py's out_dir), or several separated by commas
plot_file = ""              # empty: loss.png in the first out_dir
x_axis = "tokens"           # "tokens" seen (runs of different batch sizes line up) | "iter"


def configure(**overrides):
    """For notebooks: plot.configure(out_dir="out/tiny"), then plot.main()."""
    return configurator.configure(globals(), [], cumulative=True, **overrides)

# -----------------------------------------------------------------------------


def read_metrics(run_dir):
    """The rows of run_dir/metrics.jsonl. A torn last line (a run killed mid-write) is skipped, not fatal."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"no metrics.jsonl in {run_dir}; train a run there first (python train.py --preset=tiny)")
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise UserError(f"{path} line {i + 1} is not JSON; the file is damaged") from None
    return rows


def loss_curves(rows, x_axis="tokens"):
    """{"step": (x, loss, lr), "eval": (x, train_loss, val_loss), "bpb": (x, train_bpb, val_bpb), "compressors":
    {name: bits per byte}}: lists ready to plot. Bits per byte are None, and compressors empty, where train.py did
    not measure them (bins prepared without their byte counts)."""
    if x_axis not in ("tokens", "iter"):
        raise UserError(f"x_axis={x_axis!r} is not one of tokens, iter")
    steps = [r for r in rows if "loss" in r and "summary" not in r]
    evals = [r for r in rows if "train_loss" in r]
    x = lambda r: r.get(x_axis, r["iter"])  # rows written before train.py logged tokens have only iter
    return {"step": ([x(r) for r in steps], [r["loss"] for r in steps], [r["lr"] for r in steps]),
            "eval": ([x(r) for r in evals], [r["train_loss"] for r in evals], [r.get("val_loss") for r in evals]),
            "bpb": ([x(r) for r in evals], [r.get("train_bpb") for r in evals], [r.get("val_bpb") for r in evals]),
            "compressors": next((r["compressors_bpb"] for r in rows if r.get("compressors_bpb")), {})}


def plot_runs(run_dirs, x_axis="tokens"):
    """One figure: each run's step loss (thin), eval train/val loss (markers), and its lr on the right axis. Where
    the runs logged bits per byte, a panel above shows them (plot_bits_per_byte)."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plotting needs matplotlib: pip install matplotlib") from None
    runs = [(Path(d).name, loss_curves(read_metrics(d), x_axis)) for d in run_dirs]
    with_bpb = any(v is not None for _, curves in runs for v in curves["bpb"][1] + curves["bpb"][2])
    if with_bpb:
        fig, (bpb_ax, ax) = plt.subplots(2, 1, sharex=True, figsize=(8, 8))
    else:
        fig, ax = plt.subplots(figsize=(8, 4.5))
    lr_ax = ax.twinx()
    compressors = set()  # (name, bits per byte) drawn: runs on the same validation bytes share the lines
    for i, (name, curves) in enumerate(runs):
        color = f"C{i}"
        if with_bpb:
            plot_bits_per_byte(bpb_ax, curves, name, color, compressors)
        xs, loss, lr = curves["step"]
        ax.plot(xs, loss, color=color, alpha=0.4, linewidth=1, label=f"{name} train (step)")
        xs, train_loss, val_loss = curves["eval"]
        ax.plot(xs, train_loss, "o-", color=color, markersize=3, label=f"{name} train (eval)")
        val = [(a, v) for a, v in zip(xs, val_loss) if v is not None]
        if val:
            ax.plot(*zip(*val), "s--", color=color, markersize=3, label=f"{name} val")
        lr_ax.plot(curves["step"][0], lr, ":", color=color, linewidth=1)
    ax.set_xlabel("tokens seen" if x_axis == "tokens" else "iteration")
    ax.set_ylabel("loss (nats/token)")
    lr_ax.set_ylabel("learning rate (dotted)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


COMPRESSOR_SHADES = {"zlib": "0.7", "bz2": "0.45", "xz": "0.2"}  # greys, darker for the stronger compressor


def plot_bits_per_byte(ax, curves, name, color, drawn):
    """A run's train/val bits per byte, and the compressors as dashed lines: a model above xz's line predicts its
    validation bytes no better than a general-purpose compressor does."""
    xs, train_bpb, val_bpb = curves["bpb"]
    for split, values, style in (("train", train_bpb, "o-"), ("val", val_bpb, "s--")):
        points = [(a, v) for a, v in zip(xs, values) if v is not None]
        if points:
            ax.plot(*zip(*points), style, color=color, markersize=3, label=f"{name} {split} bpb")
    for compressor, bpb in curves["compressors"].items():
        if (compressor, bpb) in drawn:
            continue
        label = f"{compressor} ({name})" if any(c == compressor for c, _ in drawn) else compressor
        drawn.add((compressor, bpb))
        shade = COMPRESSOR_SHADES.get(compressor, "0.5")
        ax.axhline(bpb, color=shade, linestyle="--", linewidth=1, label=label)
    ax.set_ylabel("bits per byte")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def main():
    cfg = configurator.effective_config(globals())
    run_dirs = [d.strip() for d in cfg["out_dir"].split(",") if d.strip()]
    if not run_dirs:
        raise UserError("out_dir is empty; pass --out_dir=out/RUN (several separated by commas)")
    try:
        import matplotlib
        matplotlib.use("Agg")  # the command line writes a file: no display needed on a server or in CI
    except ImportError:
        pass  # plot_runs says what to install
    fig = plot_runs(run_dirs, cfg["x_axis"])
    path = Path(cfg["plot_file"] or Path(run_dirs[0]) / "loss.png")
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    configurator.configure(globals())
    main()
