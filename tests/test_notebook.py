"""``experiments/colab_tpu_search.ipynb`` runs top to bottom on a CPU with its tiny settings (so it never rots)."""

import pathlib

import nbformat
from nbclient import NotebookClient

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "colab_tpu_search.ipynb"


def test_colab_notebook_runs_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("ASOSE_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("ASOSE_NOTEBOOK_RUNS", str(tmp_path))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "validation" in text and "with flip TTA" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # three search plots and the training curves
    assert (tmp_path / "search-chain-cpu" / "genotype.json").is_file()
    assert (tmp_path / "train-cpu" / "summary.json").is_file()
