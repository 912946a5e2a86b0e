"""`koemorph train` on a real small store: loss falls, exact resume, MLflow contents, checkpoints, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from koemorph.blendshapes import ARKIT_NAMES
from koemorph.config import load_config
from koemorph.training.checkpoint import load_checkpoint
from koemorph.training.loop import train
from koemorph.training.step import read_epoch_rows
from tests.storekit import build_store

SMALL = [
    "model.d_model=32",
    "model.num_heads=4",
    "model.mel_bands=4",
    "model.decoder_hidden=32",
    "model.context_s=1.0",
    "model.emotion_context_s=2.0",
    "sampling.dense_block_frames=16",
    "sampling.sparse_block_frames=64",
    "sampling.sparse_stride=8",
    "sampling.dense_fraction=0.3",
    "optim.lr=3e-3",
    "train.log_every=2",
    "train.plot_files=2",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    files = [("train", 8.0), ("train", 6.0), ("train", 0.4), ("val", 4.0), ("val", 3.0)]
    return build_store(tmp_path_factory.mktemp("train"), files, egemaps=True)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory):
    """One migrated MLflow SQLite DB per session (the first init costs ~1.6 s); tests copy it."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path, mlflow_template):
    db = tmp_path / "mlflow.db"
    shutil.copy(mlflow_template, db)
    return f"sqlite:///{db}"


def config(*extra):
    return load_config(None, SMALL + list(extra))


def artifacts(client, run_id, path=None) -> set[str]:
    out = set()
    for a in client.list_artifacts(run_id, path):
        out |= artifacts(client, run_id, a.path) if a.is_dir else {a.path}
    return out


def test_training_learns_and_logs_everything(store, tmp_path, tracking_uri):
    from mlflow.tracking import MlflowClient

    # augmented as by default, but without level changes: this store's targets follow the absolute loudness
    cfg = config(
        "train.epochs=8",
        "train.val_every=4",
        "model.dropout=0.0",
        "sampling.sparse_batch_size=4",
        "sampling.dense_batch_size=4",
        "augment.gain_db=0",
    )
    summary = train(cfg, store, out_dir=tmp_path / "run", tracking_uri=tracking_uri, progress=False)
    assert summary["stop_reason"] == "epochs" and summary["epochs_done"] == 8
    rows = read_epoch_rows(tmp_path / "run" / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(8))
    assert rows[3]["val_mae"] is not None and rows[2]["val_mae"] is None  # validated every 4 epochs
    # it learns: the decoder starts at the train mean pose (so the first epochs' loss is already that
    # of the mean), and from there validation gets better and tracks the loudness-driven channels
    vals = [(float(r["val_loss"]), float(r["val_mouth_pearson"])) for r in rows if r["val_mae"] is not None]
    assert vals[-1][0] < vals[0][0] and vals[-1][1] > max(0.2, vals[0][1]), vals
    assert float(rows[-1]["lr"]) == pytest.approx(cfg.optim.min_lr, rel=1e-6)  # cosine reached its floor

    client = MlflowClient(tracking_uri)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.d_model"] == "32" and params["sampling.sparse_stride"] == "8"
    assert params["optim.betas"] == "[0.9, 0.999]" and params["features.egemaps"] == "True"
    assert params["augment.shift_bins"] == "2.0"
    for key in (
        "train/loss",
        "train/mse",
        "lr",
        "grad_norm",
        "perf/windows_per_s",
        "perf/data_wait_share",
        "stream/mel_weight_mouth",
        "val/mae",
        "val/mouth_pearson",
        "val/loss",
    ):
        assert key in run.data.metrics, key
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(history) >= 2 and history[0].step < history[-1].step
    assert run.data.tags["features.hash.mel"] and run.data.tags["store"].endswith("features.zarr")
    files = artifacts(client, run.info.run_id)
    assert {
        "config.yaml",
        "metrics.csv",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "val/per_file.json",
        "val/per_file.csv",
    } <= files
    assert any(f.startswith("val/curves_") and f.endswith(".png") for f in files)
    local = client.download_artifacts(run.info.run_id, "val/per_file.json", str(tmp_path / "dl"))
    data = json.loads(Path(local).read_text())
    assert data["columns"][:3] == ["id", "frames", "mae"] and len(data["data"]) == 2

    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt["blendshape_order"] == list(ARKIT_NAMES) and ckpt["fps"] == 30
    assert ckpt["config"]["model"]["d_model"] == 32 and ckpt["model_kind"] == "dual_stream"
    assert len(ckpt["stats"]["mel"]["mean"]) == 80 and len(ckpt["stats"]["egemaps"]["std"]) == 88
    assert ckpt["mlflow_run_id"] == summary["run_id"]
    from koemorph.model import build_model

    c = load_config(None, extra=ckpt["config"])
    model = build_model(c.model, c.features, n_mels=80, n_egemaps=88)
    model.load_state_dict(ckpt["model"])  # a checkpoint alone rebuilds the model


def test_resume_continues_exactly(store, tmp_path, tracking_uri):
    """Stop after 3 steps (mid-epoch), resume, take step 4: same loss and parameters as 4 steps in one go."""
    cfg = config(
        "train.epochs=3",
        "train.val_every=5",
        "model.dropout=0.2",
        "sampling.sparse_batch_size=2",
        "sampling.dense_batch_size=2",
    )
    whole = train(cfg, store, out_dir=tmp_path / "a", tracking_uri=tracking_uri, max_steps=4, progress=False)
    first = train(cfg, store, out_dir=tmp_path / "b", tracking_uri=tracking_uri, max_steps=3, progress=False)
    part = load_checkpoint(tmp_path / "b" / "last.pt")
    assert (part["epoch"], part["batch"], part["step"]) == (0, 3, 3)  # mid-epoch: 3 batches done
    again = train(
        cfg,
        store,
        out_dir=tmp_path / "b",
        tracking_uri=tracking_uri,
        resume=True,
        max_steps=4,
        progress=False,
    )
    assert again["run_id"] == first["run_id"] and again["steps"] == 4
    assert again["last_loss"] == pytest.approx(whole["last_loss"], abs=1e-6)
    a = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=1e-6), key
    # and the interrupted run's step 4 differs from a run that drew different dropout masks
    other = train(
        config(
            "train.epochs=3",
            "model.dropout=0.2",
            "train.seed=1",
            "sampling.sparse_batch_size=2",
            "sampling.dense_batch_size=2",
        ),
        store,
        out_dir=tmp_path / "c",
        tracking_uri=tracking_uri,
        max_steps=4,
        progress=False,
    )
    assert other["last_loss"] != pytest.approx(whole["last_loss"], abs=1e-6)
    # the batches are augmented (by default): without it the same run takes another step 4
    plain = train(
        config(
            "train.epochs=3",
            "train.val_every=5",
            "model.dropout=0.2",
            "sampling.sparse_batch_size=2",
            "sampling.dense_batch_size=2",
            "augment.shift_bins=0",
            "augment.gain_db=0",
            "augment.tilt_db=0",
            "augment.egemaps_noise=0",
        ),
        store,
        out_dir=tmp_path / "d",
        tracking_uri=tracking_uri,
        max_steps=4,
        progress=False,
    )
    assert plain["last_loss"] != pytest.approx(whole["last_loss"], abs=1e-6)


def test_cli_train_budget_and_resume(store, tmp_path, tracking_uri, monkeypatch):
    from cli.main import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    base = ["train", "--store", str(store), "--out", "run", "--tracking-uri", tracking_uri]
    sets = [x for s in SMALL for x in ("--set", s)]
    res = runner.invoke(app, base + ["--resume"] + sets)
    assert res.exit_code == 2 and "nothing to resume" in res.output
    res = runner.invoke(app, base + ["--epochs", "50", "--max-minutes", "0.001"] + sets)
    assert res.exit_code == 0, res.output
    assert "max_minutes" in res.output and "mlflow ui --backend-store-uri" in res.output
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] >= 1 and ckpt["epoch"] < 50
    res = runner.invoke(app, base + ["--resume", "--epochs", str(ckpt["epoch"] + 1), "--max-minutes", "0"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == ckpt["epoch"] + 1
