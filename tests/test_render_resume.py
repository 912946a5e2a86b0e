"""`koemorph render` interrupted and run again: kill -9 and Ctrl-C of real CLI processes at a
deterministic point (the driver's test hook pauses right after the N-th record is journalled),
then a re-run that renders only what was not recorded; two input folders into one output folder;
symbolic links in the output folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from koemorph import grid
from koemorph.inference.manifest import (
    MANIFEST_NAME,
    PAUSE_ENV,
    Journal,
    RenderRecord,
    read_records,
    render_lock,
)
from koemorph.io.tracks import read_track
from pipeline.render import render
from tests.conftest import tone
from tests.test_render import make_checkpoint

ROOT = Path(__file__).resolve().parents[1]
N_FILES = 20


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A small random checkpoint; its normalisation stats are made up (mel in dB, eGeMAPS unit)."""
    root = tmp_path_factory.mktemp("ckpt")
    stats = {
        "mel": {"mean": [-60.0] * 80, "std": [20.0] * 80},
        "egemaps": {"mean": [0.0] * 88, "std": [1.0] * 88},
    }
    return make_checkpoint(root / "model.pt", stats)


def write_tree(root: Path, names: list[str], seconds: float = 0.6, seed: int = 0) -> Path:
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        audio = tone(seconds, freq=150.0 + 13 * i, seed=seed + i) * (
            0.2 + 0.8 * (np.arange(int(seconds * 16000)) % 4000 < 2500)
        )
        sf.write(path, audio.astype(np.float32), grid.SAMPLE_RATE, subtype="PCM_16")
    return root


def twenty(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "in", [f"{'ab'[i % 2]}/take{i:02d}.wav" for i in range(N_FILES)])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ckpt) -> Path:
    """The same twenty files rendered by one uninterrupted in-process run."""
    root = tmp_path_factory.mktemp("reference")
    out = root / "out"
    summary = render(twenty(root), out, str(ckpt), workers=0)
    assert summary["ok files"] == N_FILES
    return out


def start_cli(tree: Path, out: Path, ckpt: Path, workers: int, pause_after: int, marker: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), PAUSE_ENV: f"{pause_after}:{marker}"}
    cmd = [sys.executable, "-m", "cli.main", "render", str(tree), "--model", str(ckpt), "-o", str(out)]
    return subprocess.Popen(
        [*cmd, "--workers", str(workers)],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_for(marker: Path, proc: subprocess.Popen) -> None:
    """Until the driver reaches its pause point (not a timing guess: it waits there to be killed)."""
    deadline = time.monotonic() + 600
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(
                f"render exited ({proc.returncode}) before the pause:\n{proc.stdout.read().decode()}"
            )
        assert time.monotonic() < deadline, "render never reached its pause point"
        time.sleep(0.1)


def outputs(out: Path) -> dict[str, Path]:
    return {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*.jsonl")) if p.name != MANIFEST_NAME}


def identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def partials(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".partial")]


def test_kill_9_then_rerun_renders_only_the_rest(tmp_path, ckpt, reference):
    tree, out, marker = twenty(tmp_path), tmp_path / "out", tmp_path / "paused"
    proc = start_cli(tree, out, ckpt, workers=0, pause_after=7, marker=marker)
    wait_for(marker, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = read_records(out)
    assert len(killed) == 7 and all(r.status == "ok" for r in killed)
    done = {r.output: identity(out / r.output) for r in killed}
    # What a write cut short by the kill leaves behind (koemorph.io.atomic's temporary name).
    (out / "a" / ".take14.jsonl.0123abcd.partial").write_text('{"timestamp": 0.0, "blend')

    summary = render(tree, out, str(ckpt), workers=0)
    assert summary["skipped files"] == 7 and summary["ok files"] == N_FILES - 7
    records = {r.output: r for r in read_records(out)}
    assert len(records) == N_FILES and len((out / MANIFEST_NAME).read_text().splitlines()) == N_FILES
    assert {k for k, r in records.items() if r.status == "skipped"} == set(done)
    assert all(r.status == "ok" for k, r in records.items() if k not in done)
    assert {k: identity(out / k) for k in done} == done  # the finished files were not written again
    assert not partials(out)
    got, want = outputs(out), outputs(reference)
    assert sorted(got) == sorted(want) and len(got) == N_FILES
    for rel in want:
        assert got[rel].read_bytes() == want[rel].read_bytes(), rel


def test_ctrl_c_under_dask_then_rerun_renders_only_the_rest(tmp_path, ckpt, reference):
    tree, out, marker = twenty(tmp_path), tmp_path / "out", tmp_path / "paused"
    proc = start_cli(tree, out, ckpt, workers=1, pause_after=3, marker=marker)
    wait_for(marker, proc)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole process group
    assert proc.wait(timeout=300) != 0
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    interrupted = read_records(out)
    assert len(lines) == 3 and len(interrupted) == 3 and all(r.status == "ok" for r in interrupted)
    assert [r.output for r in interrupted] == sorted(r.output for r in interrupted)  # finished: compacted
    done = {r.output: identity(out / r.output) for r in interrupted}

    summary = render(tree, out, str(ckpt), workers=0)
    assert summary["skipped files"] == 3 and summary["ok files"] == N_FILES - 3
    records = {r.output: r for r in read_records(out)}
    assert {k for k, r in records.items() if r.status == "skipped"} == set(done)
    assert {k: identity(out / k) for k in done} == done
    assert not partials(out)
    got, want = outputs(out), outputs(reference)
    assert sorted(got) == sorted(want)
    for rel in want:
        if rel not in done:  # rendered by this process, like the reference
            assert got[rel].read_bytes() == want[rel].read_bytes(), rel
        else:  # rendered by a one-thread Dask worker: the same up to float rounding
            a, b = read_track(got[rel]).values, read_track(want[rel]).values
            assert a.shape == b.shape and np.abs(a - b).max() <= 2e-6, rel


def test_two_input_folders_into_one_output_folder(tmp_path, ckpt):
    first = write_tree(tmp_path / "first", ["a1.wav", "sub/a2.wav", "same.wav"], seed=0)
    second = write_tree(tmp_path / "second", ["b1.wav", "same.wav"], seed=10)
    out = tmp_path / "out"
    assert render(first, out, str(ckpt), workers=0)["ok files"] == 3
    assert render(second, out, str(ckpt), workers=0)["ok files"] == 2
    records = {r.output: r for r in read_records(out)}
    assert sorted(records) == ["a1.jsonl", "b1.jsonl", "same.jsonl", "sub/a2.jsonl"]
    assert records["a1.jsonl"].input_dir == str(first.resolve()) and records["sub/a2.jsonl"].status == "ok"
    assert records["same.jsonl"].input_dir == str(second.resolve())  # the output now holds the second's

    again = render(first, out, str(ckpt), workers=0)  # same.wav differs from what same.jsonl holds
    assert again["skipped files"] == 2 and again["ok files"] == 1
    (first / "sub" / "a2.wav").unlink()  # an input gone from its folder: its record goes
    render(first, out, str(ckpt), workers=0)
    records = {r.output: r for r in read_records(out)}
    assert sorted(records) == ["a1.jsonl", "b1.jsonl", "same.jsonl"]
    assert records["b1.jsonl"].input_dir == str(second.resolve())
    assert len((out / MANIFEST_NAME).read_text().splitlines()) == 3


def test_outputs_are_never_written_through_symbolic_links(tmp_path, ckpt):
    tree = write_tree(tmp_path / "in", ["real/a.wav", "real/b.wav", "c.wav", "linked/d.wav"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "target.txt"
    target.write_text("not yours\n")
    out = tmp_path / "out"
    (out / "real").mkdir(parents=True)
    (out / "real" / "a.jsonl").symlink_to(target)
    (out / "linked").symlink_to(elsewhere, target_is_directory=True)
    summary = render(tree, out, str(ckpt), workers=0)
    assert summary["ok files"] == 2 and summary["error files"] == 2
    assert target.read_text() == "not yours\n" and sorted(p.name for p in elsewhere.iterdir()) == [
        "target.txt"
    ]
    assert (out / "real" / "a.jsonl").is_symlink()
    records = {r.input: r for r in read_records(out)}
    error = records["real/a.wav"].error
    assert error.startswith(f"{tree / 'real' / 'a.wav'}: {out / 'real' / 'a.jsonl'}: is a symbolic link"), (
        error
    )
    assert str(target) in error
    assert str(out / "linked") in records["linked/d.wav"].error
    assert records["real/b.wav"].status == records["c.wav"].status == "ok"
    assert (out / "real" / "b.jsonl").is_file() and not (out / "real" / "b.jsonl").is_symlink()


def test_manifest_survives_a_line_cut_short(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    rec = RenderRecord("x.wav", "x.jsonl", "ok", audio_sha256="1" * 64, frames=3)
    journal = Journal(out)
    journal.append(rec)
    journal.close()
    with open(out / MANIFEST_NAME, "a") as f:
        f.write('{"input": "y.wav", "output": "y.js')  # a kill in the middle of a line
    journal = Journal(out)
    journal.append(RenderRecord("z.wav", "z.jsonl", "ok"))
    journal.close()
    assert sorted(r.output for r in read_records(out)) == ["x.jsonl", "z.jsonl"]
    assert read_records(out)[0] == rec


def test_a_second_render_into_the_same_folder_is_refused(tmp_path, ckpt):
    tree = write_tree(tmp_path / "in", ["a.wav"])
    with render_lock(tmp_path / "out"), pytest.raises(ValueError, match="another `koemorph render`"):
        render(tree, tmp_path / "out", str(ckpt), workers=0)
