"""The notebooks in notebooks/ run top to bottom without an error, as a reader would run them:
in a Jupyter kernel, with notebooks/ as the working directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = (
    "01_quickstart.ipynb",
    "02_sweep_with_optuna.ipynb",
    "03_custom_env_and_model.ipynb",
    "04_custom_algorithm.ipynb",
    "05_multi_agent.ipynb",
    "06_offline.ipynb",
)
CELL_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def kernel_name(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A "python3" kernel that runs this interpreter: a kernel spec written into a temporary
    directory put first on JUPYTER_PATH, so an installed spec pointing at another Python (or
    none at all) does not matter."""
    from ipykernel.kernelspec import write_kernel_spec

    jupyter_dir = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(jupyter_dir / "kernels" / "python3")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(jupyter_dir))
        yield "python3"


def _logdirs_setup_cell(logdir_root: Path) -> nbformat.NotebookNode:
    # An algorithm built outside Tune makes a log directory under ~/ray_results; the tests
    # keep it in a temporary directory instead (as tests/conftest.py does in-process).
    return nbformat.v4.new_code_cell(
        "import ray.tune.trainable.trainable\n"
        f"ray.tune.trainable.trainable.DEFAULT_STORAGE_PATH = {str(logdir_root)!r}"
    )


@pytest.mark.slow  # each trains to its printed figures: 11-56 s
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name: str, kernel_name: str, tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    notebook.cells.insert(0, _logdirs_setup_cell(tmp_path / "ray_results"))
    client = NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    # A cell that raises makes execute() raise CellExecutionError, naming the cell and the
    # traceback; nothing else is checked, as the outputs (returns, timings) vary.
    client.execute()
