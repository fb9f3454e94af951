"""`layerwatch render` and `layerwatch info` on a stored run, without the model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import train_watched_run

from layerwatch import RunStore
from layerwatch.cli import main, summarize
from layerwatch.store import SnapshotKey
from layerwatch.measures.embeddings.files import load_layout, load_snapshot


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    return train_watched_run(tmp_path_factory.mktemp("cli"), 40, 24)


def test_render_rebuilds_gifs_from_embeddings_alone(run_copy):
    for split in ("train", "validation"):
        os.remove(run_copy / f"{split}.gif")
        shutil.rmtree(run_copy / "frames" / split)
    shutil.rmtree(run_copy / "layouts")
    assert main(["render", str(run_copy), "--method", "pca"]) == 0
    for split in ("train", "validation"):
        assert iio.improps(run_copy / f"{split}.gif", index=None).shape[0] == 3
        assert sorted(os.listdir(run_copy / "frames" / split)) == ["epoch_000.png", "epoch_001.png", "epoch_002.png"]


def test_render_layouts_match_a_direct_reduction(run_copy):
    from layerwatch.reduce import Reducer

    main(["render", str(run_copy), "--method", "pca", "--no-align"])
    store = RunStore(run_copy)
    snap = load_snapshot(store, "validation", SnapshotKey(1))
    layout = load_layout(store, "validation", SnapshotKey(1))
    expected = Reducer("pca", seed=0, align=False)(snap.pooled[2])
    np.testing.assert_allclose(layout["layout"][2], expected, atol=1e-4)
    assert bool(layout["aligned"]) is False


def test_render_selected_splits_and_layers(run_copy):
    assert main(["render", str(run_copy), "--method", "pca", "--splits", "validation", "--layers", "0,2"]) == 0
    layout = load_layout(RunStore(run_copy), "validation", SnapshotKey(2))
    assert layout["layers"].tolist() == [0, 2]
    assert layout["layout"].shape == (2, 24, 2)


def test_render_unknown_split_or_layer_is_a_clear_error(run_copy, capsys):
    assert main(["render", str(run_copy), "--splits", "test"]) == 2
    assert "no stored split 'test'; it has ['train', 'validation']" in capsys.readouterr().err
    assert main(["render", str(run_copy), "--layers", "7"]) == 2
    assert "layer 7 was not stored" in capsys.readouterr().err


def test_render_of_a_folder_that_is_no_run(tmp_path, capsys):
    assert main(["render", str(tmp_path)]) == 2
    assert "not a layerwatch run directory" in capsys.readouterr().err


def test_render_ignores_half_written_files(run_copy):
    (run_copy / "embeddings" / "train" / ".tmp-abc.npz").write_bytes(b"partial")
    (run_copy / "embeddings" / "train" / "epoch_003.npz.part").write_bytes(b"partial")
    assert [k.name for k in RunStore(run_copy).keys("train")] == ["epoch_000", "epoch_001", "epoch_002"]
    assert main(["render", str(run_copy), "--method", "pca"]) == 0


def test_info_summarises_the_run(stored_run, capsys):
    assert main(["info", str(stored_run)]) == 0
    text = capsys.readouterr().out
    assert "split 'train': 3 snapshots (epoch 0, epoch 1, epoch 2), 40 rows, layers [0, 1, 2], hidden 16" in text
    summary = summarize(str(stored_run))
    assert summary["splits"]["validation"]["rows"] == 24
    assert summary["splits"]["validation"]["frames"] == 3
    assert set(summary["best_knn_layer_at_last_snapshot"]) == {"train", "validation"}


def test_console_script_is_installed(stored_run):
    out = subprocess.run([sys.executable, "-m", "layerwatch.cli", "info", str(stored_run), "--json"],
                         capture_output=True, text=True, check=True)
    assert '"rows": 40' in out.stdout


def test_run_files_are_readable_by_others(stored_run):
    mask = os.umask(0)
    os.umask(mask)
    for name in ("train.gif", "metrics.csv", "run.json"):
        assert os.stat(stored_run / name).st_mode & 0o777 == 0o666 & ~mask


def test_a_partial_render_leaves_what_it_did_not_render_and_keeps_the_definitions(run_copy):
    store = RunStore(run_copy)
    before = {(r["split"], r["step"], r["layer"], r["metric"]): r["value"] for r in store.read_metrics()}
    assert main(["render", str(run_copy), "--method", "pca", "--splits", "validation", "--layers", "0,2"]) == 0
    after = {(r["split"], r["step"], r["layer"], r["metric"]): r["value"] for r in store.read_metrics()}
    # Nothing lost, nothing added, and every number the same: validation's kNN and probe
    # are still measured against train, as during training.
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert after[k] == pytest.approx(v, abs=1e-9), k
    # The train split was neither redrawn nor laid out again.
    assert load_layout(RunStore(run_copy), "train", SnapshotKey(2))["layers"].tolist() == [0, 1, 2]


def test_info_and_render_do_not_import_torch(stored_run):
    code = (
        "import sys; from layerwatch.cli import main; "
        f"main(['info', {str(stored_run)!r}]); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(m for m in sys.modules if m.startswith(('torch', 'transformers')))[:5]; "
        "print('no torch')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "no torch" in out.stdout
    code = "import sys, layerwatch.store, layerwatch.cli, layerwatch.reading; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
