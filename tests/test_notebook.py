"""notebooks/sagemaker.ipynb runs top to bottom in a kernel of this Python (nbclient) on a small slice of the
ABID development copy, every AWS step a dry run without credentials, and shows its plots."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from bincount.paths import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "notebooks" / "sagemaker.ipynb"


@pytest.mark.slow  # ~75 s on 2 cores: a kernel and three Python processes each importing torch and Lightning
def test_notebook_runs_top_to_bottom_and_shows_its_plots(abid, tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("BINCOUNT_ABID", str(abid))
    monkeypatch.setenv("BINCOUNT_NOTEBOOK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("BINCOUNT_NOTEBOOK_PER_COUNT", "10")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # kernel python3: jupyter_client starts it with this interpreter (sys.executable, the project's .venv)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    # eda (2), curves + confusion (2), debugger (>= 1), utilization + time per epoch (2)
    assert len(pngs) >= 7
    text = "".join(o.get("text", "") for o in outputs) + "".join(
        o.get("data", {}).get("text/markdown", "") for o in outputs
    )
    assert "bins per count: {1: 10, 2: 10, 3: 10, 4: 10, 5: 10}" in text
    assert "Recommended:" in text  # the cost report
    assert "x ml.c5.xlarge" in text  # the SageMaker request of the dry run
    assert "endpoint answer" in text
    work = tmp_path / "work"
    assert (work / "run" / "cost_report.md").is_file() and (work / "model" / "model.tar.gz").is_file()
