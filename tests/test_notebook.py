"""``experiments/colab_tpu_search.ipynb`` runs top to bottom on a CPU with its tiny settings (so it never rots),
in a fresh run folder, and never deletes one."""

import pathlib
import re

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "experiments" / "colab_tpu_search.ipynb"


def code_of(notebook) -> str:
    return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")


def test_colab_notebook_runs_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("ASOSE_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("ASOSE_NOTEBOOK_RUNS", str(tmp_path))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    (tmp_path / "earlier-run").mkdir()  # what is there already stays
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "supernet: validation" in text and "; derived architecture: validation" in text
    assert "with flip TTA" in text
    assert "This runtime has no TPU (JAX sees cpu)" in text and "Change runtime type" in text  # and it went on
    jax_pin = re.search(r"^jax==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)
    assert f"skipping pip install jax[tpu]=={jax_pin} flax==" in text  # the Colab install, pinned
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # three search plots and the training curves
    (run,) = tmp_path.glob("smoke-*")  # a fresh folder per execution
    assert (run / "search-smoke-cpu" / "genotype.json").is_file()
    assert (run / "search-smoke-cpu-train" / "summary.json").is_file()
    assert (tmp_path / "earlier-run").is_dir()


def test_the_notebook_deletes_nothing_and_checks_the_backend():
    code = code_of(nbformat.read(NOTEBOOK, as_version=4))
    assert not re.search(r"rmtree|\.unlink\(|os\.remove|rm -r", code)
    assert "jax.default_backend()" in code and 'if backend != "tpu":' in code
    assert 'REPO_URL = ""  # @param {type:"string"}' in code and "REPO_URL is empty" in code
    assert "USE_DRIVE = False  # @param" in code and "/content/drive/MyDrive/asose_runs" in code
    assert 'data="cifar10"' in code  # no TensorFlow on Colab's TPU runtimes
