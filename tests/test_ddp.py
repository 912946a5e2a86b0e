"""Data-parallel ``koemorph train`` with real processes: 2 gloo ranks on localhost, started by
``koemorph train --nproc 2`` (torchrun), against one process with the same global batch.

Dropout is off (``model.dropout=0``) so losses compare exactly: each rank would otherwise draw its own
dropout masks, a legitimate difference from one process."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from koemorph.config import load_config
from koemorph.training.checkpoint import load_checkpoint, load_model
from koemorph.training.distributed import HANG_ENV
from koemorph.training.interrupt import SIGINT_STEP_ENV
from koemorph.training.loop import train
from koemorph.training.outputs import read_epoch_rows
from tests.checkpointkit import SMALL as SMALL_MODEL
from tests.storekit import build_store

ROOT = Path(__file__).resolve().parents[1]

COMMON = [
    *SMALL_MODEL,
    "model.dropout=0.0",
    "sampling.dense_block_frames=16",
    "sampling.sparse_block_frames=64",
    "sampling.sparse_stride=8",
    "sampling.dense_fraction=0.3",
    "optim.lr=3e-3",
    "train.log_every=1",
    "train.val_every=1",
    "train.plot_files=1",
    "train.device=cpu",
]
ONE = COMMON + ["sampling.dense_batch_size=4", "sampling.sparse_batch_size=4"]  # global batch 4
PER_RANK = COMMON + ["sampling.dense_batch_size=2", "sampling.sparse_batch_size=2"]  # 2 ranks x 2


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    files = [("train", 8.0), ("train", 6.0), ("train", 0.4), ("val", 4.0), ("val", 3.0)]
    return build_store(tmp_path_factory.mktemp("ddp"), files, egemaps=True)


@pytest.fixture(scope="module")
def one(store, tmp_path_factory):
    """One process, global batch 4, 4 epochs: ``(summary, run folder, tracking URI)``."""
    tmp = tmp_path_factory.mktemp("one")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cfg = load_config(None, ONE + ["train.epochs=4"])
    summary = train(cfg, store, out_dir=tmp / "run", tracking_uri=uri, progress=False)
    return summary, tmp / "run", uri


def ddp(store, out: Path, uri: str, *args: str, env=None, **popen) -> subprocess.Popen:
    """``koemorph train --nproc 2`` with the per-rank batch of 2 (global batch 4)."""
    sets = [x for kv in PER_RANK for x in ("--set", kv)]
    cmd = [sys.executable, "-m", "cli.main", "train", "--nproc", "2", "--store", str(store)]
    cmd += ["--out", str(out), "--tracking-uri", uri, "--params", str(out.parent / "none.yaml"), *sets, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(cmd, env=env, cwd=out.parent, start_new_session=True, **popen)


def losses(uri: str, run_id: str) -> dict[int, float]:
    from mlflow.tracking import MlflowClient

    return {m.step: m.value for m in MlflowClient(uri).get_metric_history(run_id, "train/loss")}


def runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def processes_with(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if pid.isdigit() and text in cmdline and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
            found.append(int(pid))
    return found


def test_two_ranks_equal_one_process_through_ctrl_c_and_resume(store, one, tmp_path):
    """2 ranks x batch 2 == 1 process x batch 4, step by step: interrupted (a Ctrl-C to the
    launcher after step K: every rank stops at the same step, the run ends KILLED), resumed, finished;
    one MLflow run; the checkpoints load in one process."""
    summary, run_one, uri_one = one
    per_epoch = int(read_epoch_rows(run_one / "metrics.csv")[0]["step"])
    k = per_epoch + 2
    out, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Ctrl-C as from a terminal: rank 0 sends SIGINT to the launchers' process group after step K and
    # waits for it to come back through torchrun (rank 1 waits for rank 0): both stop after step K
    first = ddp(store, out, uri, "--epochs", "4", env={SIGINT_STEP_ENV: f"{k}g"})
    assert first.wait(timeout=600) != 0
    assert processes_with(str(out)) == []  # no rank left behind
    (run,) = runs(uri)
    assert run.info.status == "KILLED" and run.data.tags["stop_reason"] == "interrupted"
    mid = load_checkpoint(out / "last.pt")  # saved at step K, mid-epoch 2
    assert (mid["step"], mid["epoch"], mid["batch"]) == (k, 1, 2)
    assert mid["world_size"] == 2 and len(mid["rng_ranks"]) == 2
    again = ddp(store, out, uri, "--epochs", "4", "--resume")
    assert again.wait(timeout=600) == 0
    (run,) = runs(uri)  # exactly one MLflow run, resumed and finished
    assert run.info.status == "FINISHED" and run.data.params["world_size"] == "2"
    expected, got = losses(uri_one, summary["run_id"]), losses(uri, run.info.run_id)
    assert sorted(got) == sorted(expected) == list(range(1, summary["steps"] + 1))
    np.testing.assert_allclose([got[s] for s in sorted(got)], [expected[s] for s in sorted(got)], rtol=2e-4)
    a, b = load_checkpoint(run_one / "last.pt"), load_checkpoint(out / "last.pt")
    assert a["step"] == b["step"] and a["config"]["sampling"]["dense_batch_size"] == 4
    for name, tensor in a["model"].items():  # plain (unwrapped) parameter names, equal weights
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-3, atol=2e-4)
    model, meta = load_model(out / "best.pt")  # a DDP checkpoint renders in one process
    assert meta["mlflow_run_id"] == run.info.run_id and not model.training


def test_one_process_checkpoint_continues_on_two_ranks(store, one, tmp_path):
    """The other way round: a one-process run's last.pt resumes under 2 ranks (one more epoch)."""
    _, run_one, uri_one = one
    shutil.copytree(run_one, tmp_path / "run")
    shutil.copy(uri_one.removeprefix("sqlite:///"), tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = ddp(store, tmp_path / "run", uri, "--epochs", "5", "--resume")
    assert proc.wait(timeout=600) == 0
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["epoch"] == 5 and ckpt["world_size"] == 2
    assert len(runs(uri)) == 1


def test_killed_rank_stops_the_other_and_fails_the_run(store, one, tmp_path):
    """kill -9 of rank 1 right after step K (epoch 2): the launcher exits non-zero, rank 0 says why and
    is gone, the MLflow run is FAILED, last.pt (epoch 1's end) resumes."""
    _, run_one, _ = one
    per_epoch = int(read_epoch_rows(run_one / "metrics.csv")[0]["step"])
    out, uri, marker = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "rank1.pid"
    log = (tmp_path / "log.txt").open("w")
    env = {HANG_ENV: f"{per_epoch + 1}:1:{marker}"}
    proc = ddp(store, out, uri, "--epochs", "3", env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(1200):  # waits for the hook, not a kill point: rank 1 sleeps at step K until killed
            if marker.exists() or proc.poll() is not None:
                break
            time.sleep(0.5)
        os.kill(int(marker.read_text()), signal.SIGKILL)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert rc != 0
    assert processes_with(str(out)) == []  # no rank left behind
    text = (tmp_path / "log.txt").read_text()
    assert "rank 0 of 2: training stopped" in text, text[-3000:]
    (run,) = runs(uri)
    assert run.info.status == "FAILED"
    ckpt = load_checkpoint(out / "last.pt")
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (1, 0, per_epoch)
    cfg = load_config(None, PER_RANK + ["train.epochs=2"])
    summary = train(cfg, store, out_dir=out, tracking_uri=uri, resume=True, epochs=2, progress=False)
    assert summary["epochs_done"] == 2 and summary["run_id"] == run.info.run_id


def test_shards_cover_each_global_batch_once():
    """N ranks' rows of every global batch are that batch, each block once; a rank left without a row
    (short last batch) gets a fully masked block; augmentation rows match the shards."""
    from koemorph.config import SamplingConfig
    from koemorph.training.distributed import World, rows, shard
    from koemorph.training.sampling import Sampler

    cfg = SamplingConfig(mode="mixed", dense_batch_size=3, sparse_batch_size=5, sparse_stride=8)
    batches = Sampler([500, 333, 41], cfg, seed=3, epochs=2).batches(1)
    batches.append(batches[0][:1])  # a short last batch: some ranks get no row
    for n in (2, 3, 4):
        for batch in batches:
            parts = [shard(batch, World(rank=r, size=n)) for r in range(n)]
            real = [b for p in parts for b in p if any(b.mask)]
            assert sorted(real, key=batch.index) == batch
            for r, p in enumerate(parts):
                idx, total = rows(len(batch), World(rank=r, size=n))
                assert total == len(batch) and len(idx) == len(p)
                if r >= len(batch):
                    assert p == [dataclasses.replace(batch[0], mask=(False,) * len(batch[0].mask))]
                else:
                    assert [batch[i] for i in idx] == p


def test_nproc_is_refused_under_torchrun(store, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.setenv("WORLD_SIZE", "2")
    res = CliRunner().invoke(app, ["train", "--nproc", "2", "--store", str(store), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "already running under torchrun" in res.output, res.output
