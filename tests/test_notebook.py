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
