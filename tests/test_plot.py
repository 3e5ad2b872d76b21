"""plot.py: loss curves from metrics.jsonl, a torn last line tolerated, matplotlib optional."""

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


@pytest.fixture
def run_dir(tmp_path):
    text = "".join(json.dumps(r) + "\n" for r in ROWS) + '{"iter": 30, "tokens": 12'
    (tmp_path / "metrics.jsonl").write_text(text)
    return tmp_path


def test_curves_against_tokens_and_iterations(run_dir):
    curves = plot.loss_curves(plot.read_metrics(run_dir))
    assert curves["step"] == ([40960, 81920], [6.0, 5.0], [1e-3, 5e-4])
    assert curves["eval"] == ([0, 81920], [8.3, 5.1], [8.4, 5.3])
    assert plot.loss_curves(plot.read_metrics(run_dir), "iter")["eval"][0] == [0, 20]


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
