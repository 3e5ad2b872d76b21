"""plot.py: loss and bits-per-byte curves from metrics.jsonl, a torn last line tolerated, matplotlib optional."""

import json
import sys

import pytest

import plot
from configurator import UserError

# rows in the shape train.py writes them: eval rows, step rows, the summary; the last line torn by a kill
ROWS = [{"iter": 0, "tokens": 0, "train_loss": 8.3, "val_loss": 8.4},
        {"iter": 10, "tokens": 40960, "loss": 6.0, "lr": 1e-3, "grad_norm": 1.0},
        {"iter": 20, "tokens": 81920, "loss": 5.0, "lr": 5e-4, "grad_norm": 0.9},
        {"iter": 20, "tokens": 81920, "train_loss": 5.1, "val_loss": 5.3},
        {"summary": {"iters": 20, "tokens": 81920}}]


# the same run where train.py measured bytes: bits per byte on the eval rows, the compressors once (at the first)
COMPRESSORS = {"zlib": 2.9, "bz2": 2.6, "xz": 2.5}
BPB_ROWS = [dict(ROWS[0], train_bpb=4.6, val_bpb=4.7, compressors_bpb=COMPRESSORS), *ROWS[1:3],
            dict(ROWS[3], train_bpb=2.8, val_bpb=None), ROWS[4]]


def write_metrics(folder, rows, torn=""):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + torn)
    return folder


@pytest.fixture
def run_dir(tmp_path):
    return write_metrics(tmp_path, ROWS, torn='{"iter": 30, "tokens": 12')


def test_curves_against_tokens_and_iterations(run_dir):
    curves = plot.loss_curves(plot.read_metrics(run_dir))
    assert curves["step"] == ([40960, 81920], [6.0, 5.0], [1e-3, 5e-4])
    assert curves["eval"] == ([0, 81920], [8.3, 5.1], [8.4, 5.3])
    assert plot.loss_curves(plot.read_metrics(run_dir), "iter")["eval"][0] == [0, 20]


def test_bits_per_byte_curves_and_the_compressors(tmp_path, run_dir):
    curves = plot.loss_curves(BPB_ROWS)
    assert curves["bpb"] == ([0, 81920], [4.6, 2.8], [4.7, None]) and curves["compressors"] == COMPRESSORS
    old = plot.loss_curves(plot.read_metrics(run_dir))
    assert old["bpb"] == ([0, 81920], [None, None], [None, None]) and old["compressors"] == {}


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_bits_per_byte_panel_with_dashed_compressor_lines(tmp_path):
    pytest.importorskip("matplotlib", reason="plotting is an optional extra: pip install matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    run = write_metrics(tmp_path / "run", BPB_ROWS)
    same_data = write_metrics(tmp_path / "again", BPB_ROWS)  # the same validation bytes: one line per compressor
    fig = plot.plot_runs([run, same_data])
    bpb_ax, = [ax for ax in fig.axes if ax.get_ylabel() == "bits per byte"]
    loss_ax, = [ax for ax in fig.axes if ax.get_ylabel() == "loss (nats/token)"]
    lines = lines_by_label(bpb_ax)
    assert list(lines["run train bpb"].get_ydata()) == [4.6, 2.8]
    assert list(lines["run val bpb"].get_ydata()) == [4.7]  # a null is left out, not drawn as 0
    assert "again val bpb" in lines and "run val" in lines_by_label(loss_ax)  # the loss in nats stays
    for name, bpb in COMPRESSORS.items():
        assert list(lines[name].get_ydata()) == [bpb, bpb] and lines[name].get_linestyle() == "--"
    assert len([label for label in lines if label in COMPRESSORS]) == 3


def test_metrics_without_bits_per_byte_plot_the_loss_alone(run_dir):
    pytest.importorskip("matplotlib", reason="plotting is an optional extra: pip install matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    fig = plot.plot_runs([run_dir])
    assert sorted(ax.get_ylabel() for ax in fig.axes) == ["learning rate (dotted)", "loss (nats/token)"]
    loss_ax, = [ax for ax in fig.axes if ax.get_ylabel() == "loss (nats/token)"]
    name = run_dir.name
    assert set(lines_by_label(loss_ax)) == {f"{name} train (step)", f"{name} train (eval)", f"{name} val"}


def test_damage_before_the_last_line_is_one_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iter": 0\n{"iter": 1}\n')
    with pytest.raises(UserError, match="line 1 is not JSON"):
        plot.read_metrics(tmp_path)
    with pytest.raises(UserError, match="no metrics.jsonl"):
        plot.read_metrics(tmp_path / "missing")


def test_writes_a_png_for_several_runs(run_dir, tmp_path):
    pytest.importorskip("matplotlib", reason="plotting is an optional extra: pip install matplotlib")
    out = tmp_path / "both.png"
    plot.configure(out_dir=f"{run_dir},{run_dir}", plot_file=str(out))
    assert plot.main() == out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_without_matplotlib_one_line_names_the_install(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    with pytest.raises(UserError, match="pip install matplotlib"):
        plot.plot_runs([run_dir])
