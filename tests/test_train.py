"""`koemorph train` on a real small store: loss falls, exact resume, MLflow contents, checkpoints,
the time budget, Ctrl-C and failures, safe checkpoint loading, CLI."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from koemorph.blendshapes import ARKIT_NAMES
from koemorph.config import load_config
from koemorph.training.checkpoint import load_checkpoint, set_rng_state
from koemorph.training.interrupt import SIGINT_STEP_ENV
from koemorph.training.loop import train
from koemorph.training.outputs import read_epoch_rows
from tests.checkpointkit import SMALL as SMALL_MODEL
from tests.conftest import tone
from tests.storekit import build_store

ROOT = Path(__file__).resolve().parents[1]

SMALL = [
    *SMALL_MODEL,
    "sampling.dense_block_frames=16",
    "sampling.sparse_block_frames=64",
    "sampling.sparse_stride=8",
    "sampling.dense_fraction=0.3",
    "optim.lr=3e-3",
    "train.log_every=2",
    "train.plot_files=2",
    "loss.closure=0",  # the tone store closes the lips in every pause; tests/test_model.py covers the term
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


def fresh_uri(folder: Path, template: Path) -> str:
    db = folder / "mlflow.db"
    shutil.copy(template, db)
    return f"sqlite:///{db}"


@pytest.fixture
def tracking_uri(tmp_path, mlflow_template):
    return fresh_uri(tmp_path, mlflow_template)


def config(*extra):
    return load_config(None, SMALL + list(extra))


def artifacts(client, run_id, path=None) -> set[str]:
    out = set()
    for a in client.list_artifacts(run_id, path):
        out |= artifacts(client, run_id, a.path) if a.is_dir else {a.path}
    return out


@pytest.fixture(scope="module")
def learned(store, tmp_path_factory, mlflow_template):
    """One 8-epoch run validated every 4 epochs: ``(cfg, summary, run folder, tracking URI)``."""
    tmp = tmp_path_factory.mktemp("learned")
    uri = fresh_uri(tmp, mlflow_template)
    # augmented as by default, but without level changes: this store's targets follow the absolute loudness
    cfg = config(
        "train.epochs=8",
        "train.val_every=4",
        "model.dropout=0.0",
        "sampling.sparse_batch_size=4",
        "sampling.dense_batch_size=4",
        "augment.gain_db=0",
    )
    summary = train(cfg, store, out_dir=tmp / "run", tracking_uri=uri, progress=False)
    return cfg, summary, tmp / "run", uri


def test_training_learns(learned):
    cfg, summary, run, _ = learned
    assert summary["stop_reason"] == "epochs" and summary["epochs_done"] == 8
    rows = read_epoch_rows(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(8))
    assert rows[3]["val_mae"] is not None and rows[2]["val_mae"] is None  # validated every 4 epochs
    # it learns: the decoder starts at the train mean pose (so the first epochs' loss is already that
    # of the mean), and from there validation gets better and tracks the loudness-driven channels
    vals = [(float(r["val_loss"]), float(r["val_mouth_pearson"])) for r in rows if r["val_mae"] is not None]
    assert vals[-1][0] < vals[0][0] and vals[-1][1] > max(0.2, vals[0][1]), vals
    assert float(rows[-1]["lr"]) == pytest.approx(cfg.optim.min_lr, rel=1e-6)  # cosine reached its floor
    assert json.loads((run / "summary.json").read_text())["steps"] == summary["steps"]


def test_mlflow_params_metrics_and_tags(learned):
    from mlflow.tracking import MlflowClient

    _, summary, _, uri = learned
    client = MlflowClient(uri)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["stop_reason"] == "epochs"
    params = run.data.params
    assert params["model.d_model"] == "32" and params["sampling.sparse_stride"] == "8"
    assert params["optim.betas"] == "[0.9, 0.999]" and params["features.egemaps"] == "True"
    assert params["augment.shift_bins"] == "4.0"
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


def test_mlflow_artifacts(learned, tmp_path):
    from mlflow.tracking import MlflowClient

    _, summary, _, uri = learned
    client = MlflowClient(uri)
    files = artifacts(client, summary["run_id"])
    assert {
        "config.yaml",
        "metrics.csv",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "val/per_file.json",
        "val/per_file.csv",
    } <= files
    assert any(f.startswith("val/curves_") and f.endswith(".png") for f in files)
    local = client.download_artifacts(summary["run_id"], "val/per_file.json", str(tmp_path / "dl"))
    data = json.loads(Path(local).read_text())
    assert data["columns"][:3] == ["id", "frames", "mae"] and len(data["data"]) == 2


def test_checkpoint_alone_rebuilds_the_model(learned, store):
    from koemorph.data.cache import FeatureCache
    from koemorph.model import build_model

    _, summary, run, _ = learned
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["blendshape_order"] == list(ARKIT_NAMES) and ckpt["fps"] == 30
    assert ckpt["config"]["model"]["d_model"] == 32 and ckpt["model_kind"] == "dual_stream"
    assert len(ckpt["stats"]["mel"]["mean"]) == 80 and len(ckpt["stats"]["egemaps"]["std"]) == 88
    level = ckpt["stats"]["level"]  # the train files' speech levels, for render's level matching
    assert level == FeatureCache(store).level and level["files"] >= 2  # the 0.4 s file has no speech
    assert ckpt["mlflow_run_id"] == summary["run_id"]
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


class TickClock:
    """A clock that advances ``tick`` seconds each time it is read: the budget in steps, not in time."""

    def __init__(self, tick: float = 1.0):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_budget_stops_and_resume_continues_its_clock(store, tmp_path, tracking_uri):
    """A 30 s budget on a clock that ticks 1 s per reading (two readings per step, a few per epoch end)
    stops within 15 steps; resumed with a 60 s budget, the run goes on from the 30 s already spent."""
    cfg = config("train.epochs=50", "train.val_every=100")
    common = dict(out_dir=tmp_path / "run", tracking_uri=tracking_uri, progress=False)
    first = train(cfg, store, max_minutes=0.5, clock=TickClock(), **common)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert first["stop_reason"] == "max_minutes" and 5 <= first["steps"] <= 15, first
    assert ckpt["step"] == first["steps"] and ckpt["epoch"] < 50
    assert 30.0 <= ckpt["schedule"]["elapsed_s"] < 40.0 and ckpt["schedule"]["replanned"]
    again = train(cfg, store, resume=True, max_minutes=1.0, clock=TickClock(), **common)
    assert again["stop_reason"] == "max_minutes" and again["run_id"] == first["run_id"]
    assert 60.0 <= again["seconds"] < 70.0
    # the 30 s spent count: about as many steps again as the first part, not twice as many
    assert first["steps"] < again["steps"] <= 2 * first["steps"] + 3, (first["steps"], again["steps"])


def test_cli_train_budget_and_resume(store, tmp_path, tracking_uri, monkeypatch):
    import koemorph.training.loop
    from cli.main import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(koemorph.training.loop, "default_clock", TickClock())
    runner = CliRunner()
    base = ["train", "--store", str(store), "--out", "run", "--tracking-uri", tracking_uri]
    sets = [x for s in SMALL for x in ("--set", s)]
    res = runner.invoke(app, base + ["--resume"] + sets)
    assert res.exit_code == 2 and "nothing to resume" in res.output
    res = runner.invoke(app, base + ["--epochs", "50", "--max-minutes", "0.2"] + sets)
    assert res.exit_code == 0, res.output
    assert "max_minutes" in res.output and "mlflow ui --backend-store-uri" in res.output
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] >= 1 and ckpt["epoch"] < 50
    res = runner.invoke(app, base + ["--resume", "--epochs", str(ckpt["epoch"] + 1), "--max-minutes", "0"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == ckpt["epoch"] + 1


INTERRUPTIBLE = [
    "train.epochs=2",
    "train.val_every=5",
    "model.dropout=0.2",
    "sampling.sparse_batch_size=2",
    "sampling.dense_batch_size=2",
]


def test_ctrl_c_saves_the_step_and_resume_is_exact(store, tmp_path, tracking_uri):
    """A real ``koemorph train`` process gets a real SIGINT after step 3 (the documented test hook):
    it exits 130 with one line, last.pt holds step 3, summary.json is written, the MLflow run is
    KILLED, and resuming ends exactly where an uninterrupted run does."""
    from mlflow.tracking import MlflowClient

    sets = [x for s in SMALL + INTERRUPTIBLE for x in ("--set", s)]
    cmd = [str(Path(sys.executable).parent / "koemorph"), "train", "--store", str(store), "--out", "run"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), SIGINT_STEP_ENV: "3", "COLUMNS": "250"}
    proc = subprocess.run(
        cmd + ["--tracking-uri", tracking_uri] + sets, cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr[-3000:]
    line = [x for x in proc.stderr.splitlines() if "interrupted at step" in x]
    assert len(line) == 1 and "run/last.pt saved at this step" in line[0] and "--resume" in line[0], (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (0, 3, 3)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == "interrupted" and summary["steps"] == 3
    client = MlflowClient(tracking_uri)
    assert client.get_run(summary["run_id"]).info.status == "KILLED"

    cfg = config(*INTERRUPTIBLE)
    resumed = train(
        cfg, store, out_dir=tmp_path / "run", tracking_uri=tracking_uri, resume=True, progress=False
    )
    whole = train(cfg, store, out_dir=tmp_path / "whole", tracking_uri=tracking_uri, progress=False)
    assert resumed["run_id"] == summary["run_id"] and resumed["steps"] == whole["steps"] > 3
    assert client.get_run(resumed["run_id"]).info.status == "FINISHED"
    assert resumed["last_loss"] == pytest.approx(whole["last_loss"], abs=1e-6)
    a = load_checkpoint(tmp_path / "whole" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=1e-6), key


def test_second_ctrl_c_stops_at_once(store, tmp_path, tracking_uri):
    """Two SIGINTs after step 7 (in epoch 1, of 5 steps per epoch): no save at step 7, last.pt stays
    at the end of epoch 0, the run still ends KILLED with a summary."""
    from mlflow.tracking import MlflowClient

    sets = [x for s in SMALL + INTERRUPTIBLE for x in ("--set", s)]
    cmd = [str(Path(sys.executable).parent / "koemorph"), "train", "--store", str(store), "--out", "run"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), SIGINT_STEP_ENV: "7,7", "COLUMNS": "250"}
    proc = subprocess.run(
        cmd + ["--tracking-uri", tracking_uri] + sets, cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "interrupted at step 7: run/last.pt as last saved" in proc.stderr, proc.stderr
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (1, 0, 5)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == "aborted" and summary["steps"] == 7
    assert MlflowClient(tracking_uri).get_run(summary["run_id"]).info.status == "KILLED"


def test_failure_mid_training_ends_the_run_failed(store, tmp_path, tracking_uri):
    """metrics.csv is a folder: the first epoch trains, then writing its row fails."""
    from mlflow.tracking import MlflowClient

    (tmp_path / "run" / "metrics.csv").mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        train(
            config("train.epochs=2"),
            store,
            out_dir=tmp_path / "run",
            tracking_uri=tracking_uri,
            progress=False,
        )
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("koemorph").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["stop_reason"] == "failed"
    assert "IsADirectoryError" in run.data.tags["error"] and "metrics.csv" in run.data.tags["error"]
    assert client.get_metric_history(run.info.run_id, "train/loss")  # it did train first


class Payload:
    """Unpickling this runs ``touch marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def render_cli(tmp_path: Path, model, *options: str):
    from cli.main import app

    audio = tmp_path / "in" / "a.wav"
    audio.parent.mkdir(exist_ok=True)
    sf.write(audio, tone(1.0), 16_000)
    args = ["render", str(audio.parent), "--model", str(model), "-o", str(tmp_path / "o"), *options]
    return CliRunner().invoke(app, args)


def test_checkpoint_with_code_is_refused_unrun(learned, store, tmp_path, tracking_uri):
    """A real checkpoint plus one key whose unpickling runs ``touch``: refused by load_checkpoint,
    ``render --model`` (a file and a ``runs:/`` artifact) and ``train --resume``; nothing runs."""
    from mlflow.tracking import MlflowClient

    from cli.main import app

    marker = tmp_path / "pwned"
    ckpt = load_checkpoint(learned[2] / "best.pt")
    ckpt["note"] = Payload(marker)
    trojan = tmp_path / "trojan.pt"
    torch.save(ckpt, trojan)
    with pytest.raises(ValueError, match=r"trojan\.pt: refused: .*system") as exc:
        load_checkpoint(trojan)
    assert "Nothing in the file was run" in str(exc.value) and not marker.exists()
    res = render_cli(tmp_path, trojan)
    assert res.exit_code == 2 and "trojan.pt: refused" in " ".join(res.output.split()), res.output
    assert not marker.exists() and not (tmp_path / "o" / "a.jsonl").exists()
    client = MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("trojan")).info.run_id
    client.log_artifact(run_id, str(trojan), "checkpoints")
    res = render_cli(tmp_path, f"runs:/{run_id}/checkpoints/trojan.pt", "--tracking-uri", tracking_uri)
    assert res.exit_code == 2 and "trojan.pt: refused" in " ".join(res.output.split()), res.output
    (tmp_path / "run").mkdir()
    shutil.copy(trojan, tmp_path / "run" / "last.pt")
    args = ["train", "--store", str(store), "--out", str(tmp_path / "run"), "--resume"]
    res = CliRunner().invoke(app, args + ["--tracking-uri", tracking_uri])
    assert res.exit_code == 2 and "last.pt: refused" in " ".join(res.output.split()), res.output
    assert not marker.exists()
    torch.load(trojan, weights_only=False)  # the payload is real: full unpickling runs it
    assert marker.exists()


def test_empty_and_garbage_checkpoints_are_named(tmp_path):
    cases = {
        "empty.pt": (b"", "the file is empty"),
        "garbage.pt": (b"\x00\x01not a checkpoint" * 50, "not a readable checkpoint"),
    }
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    cases["list.pt"] = (None, "not a koemorph checkpoint")
    for name, (_, message) in cases.items():
        with pytest.raises(ValueError, match=message) as exc:
            load_checkpoint(tmp_path / name)
        assert str(exc.value).startswith(f"{tmp_path / name}: ")
        res = render_cli(tmp_path, tmp_path / name)
        output = " ".join(res.output.split())  # the console wraps long lines
        assert res.exit_code == 2 and f"{name}: " in output and message in output, res.output
        assert "Traceback" not in output and "Aborted" not in output


def test_previous_format_checkpoint_still_loads(learned, tmp_path):
    """Earlier checkpoints held numpy's RNG state as a numpy array: that (and only that) is allowed."""
    ckpt = load_checkpoint(learned[2] / "last.pt")
    np.random.seed(7)
    ckpt["rng"]["numpy"], ckpt["format_version"] = np.random.get_state(), 1
    torch.save(ckpt, tmp_path / "old.pt")
    np.random.seed(8)
    old = load_checkpoint(tmp_path / "old.pt")
    set_rng_state(old["rng"])
    np.random.seed(7)
    expected = np.random.random(3)
    set_rng_state(old["rng"])
    assert np.array_equal(np.random.random(3), expected)


def test_a_checkpoint_from_before_phones_loads_as_it_was_trained(learned, tmp_path):
    """Configs written before ``features.phones`` and ``loss.closure`` existed get the values that
    applied then (no phones, no closure loss), not today's defaults, and render as before."""
    from koemorph.training.checkpoint import load_model

    ckpt = load_checkpoint(learned[2] / "last.pt")
    assert not ckpt["config"]["features"]["phones"]
    del ckpt["config"]["features"]["phones"], ckpt["config"]["loss"]["closure"]
    torch.save(ckpt, tmp_path / "old.pt")
    model, meta = load_model(tmp_path / "old.pt")
    assert not meta["config"].features.phones and meta["config"].loss.closure == 0.0
    assert model.n_phones == 0
    res = render_cli(tmp_path, tmp_path / "old.pt")
    assert res.exit_code == 0, res.output
