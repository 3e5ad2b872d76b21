"""notebook.ipynb runs top to bottom in a fresh kernel (nbclient), and is kept in the repo without outputs."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebook.ipynb"


def test_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def test_runs_top_to_bottom(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbclient: pip install nbclient")
    nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient: pip install nbclient")
    pytest.importorskip("ipykernel", reason="the notebook test needs a Python kernel: pip install ipykernel")
    pytest.importorskip("matplotlib", reason="the notebook plots the loss: pip install matplotlib")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the kernel runs in tmp_path, so everything it writes lands there
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "done: 200 steps" in text and "done: 40 steps" in text and "Who are you? ->" in text
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert (tmp_path / "out/notebook/sft/ckpt.pt").is_file()


# editing constants by hand, as a notebook does: every assignment takes effect or is refused, never dropped

@pytest.fixture
def fresh_train():
    import configurator
    import train
    yield train
    if "_defaults" in vars(train):
        configurator.reset(vars(train))


def test_configure_keeps_what_was_assigned_by_hand_and_the_preset(fresh_train):
    train = fresh_train
    train.configure(preset="tiny")
    train.max_iters = 3
    cfg = train.configure(batch_size=4)
    assert cfg["max_iters"] == 3 and train.max_iters == 3 and cfg["batch_size"] == 4
    assert cfg["preset"] == "tiny" and cfg["n_layer"] == 4 and cfg["learning_rate"] == 8e-3  # tiny's, not the file's
    train.learning_rate = 1e-3
    cfg = train.configure(preset="gpt2_50m")  # a new recipe: its values, and the hand edit made since the last call
    assert cfg["preset"] == "gpt2_50m" and cfg["learning_rate"] == 1e-3 and cfg["n_layer"] != 4
