"""User errors through the real CLI: `error: <message>` naming the key or file and the cause, printed
verbatim (no Rich markup), exit code 2, never a traceback; a bug prints its traceback and a hint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli.main import BUG_HINT, _App, app
from koemorph.errors import InputError
from tests.storekit import write_pair

ROOT = Path(__file__).resolve().parents[1]
WIDE = {"COLUMNS": "250"}  # Rich tables and titles on one line, so paths are not wrapped


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], env=WIDE)


def assert_user_error(result, *parts: str, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "Aborted" not in result.output, result.output
    assert "error: " in result.output, result.output
    for part in parts:
        assert part in result.output, (part, result.output)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.d_model=big", "model.d_model: expected an integer, got 'big'"),
        ("model.d_model=[1,2]", "model.d_model: expected an integer, got [1, 2]"),
        ("train.monitor=val/mouth", "train.monitor: 'val/mouth' is not supported (valid: val/mouth_pearson"),
        ("render.clamp=3", "render.clamp: expected a mapping {name: [lo, hi]}, got 3"),
    ],
)
def test_a_bad_override_names_the_key_without_a_traceback(override, message):
    assert_user_error(run("params", "--set", override), f"error: bad config: {message}")


def test_a_bad_fps_stops_extract_before_any_file(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    result = run("extract", manifest, "--store", tmp_path / "s.zarr", "--set", "features.fps=45")
    assert_user_error(result, "features.fps: 45 is not supported (valid: 30, 60)")
    assert not (tmp_path / "s.zarr").exists()


def test_malformed_params_yaml_names_the_file_and_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("model:\n  d_model: 64\n bad: [\n")
    assert_user_error(run("params", "--params", params), f"{params}:3: invalid YAML (")


@pytest.mark.parametrize(
    "content, cause", [(b"garbage\n", "not a readable checkpoint"), (b"", "the file is empty")]
)
def test_a_garbage_or_empty_checkpoint_is_named(tmp_path, content, cause):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(content)
    (tmp_path / "in").mkdir()
    rendered = run("render", tmp_path / "in", "--model", ckpt, "-o", tmp_path / "out", "--workers", "0")
    assert_user_error(rendered, str(ckpt), cause)
    run_dir, store = tmp_path / "run", tmp_path / "store.zarr"
    run_dir.mkdir()
    store.mkdir()
    (run_dir / "last.pt").write_bytes(content)
    resumed = run("train", "--store", store, "--out", run_dir, "--resume")
    assert_user_error(resumed, str(run_dir / "last.pt"), cause)


def test_a_malformed_manifest_line_is_named_with_its_line(tmp_path):
    data = tmp_path / "data"
    write_pair(data, "spk0_000", 1.0, seed=0)
    manifest = tmp_path / "m.jsonl"
    result = run("manifest", data, "-o", manifest, "--audio-only")
    assert result.exit_code == 0, result.output
    manifest.write_text(manifest.read_text() + '{"audio_path": "x.wav"\n')
    extracted = run("extract", manifest, "--store", tmp_path / "s.zarr", "--set", "features.egemaps=false")
    assert_user_error(extracted, f"error: {manifest}:2: bad manifest line (")


def test_paths_with_brackets_are_printed_verbatim(tmp_path):
    """Rich markup would eat `[v1]` (a tag) from titles and messages."""
    data = tmp_path / "takes[v1]"
    write_pair(data, "spk0_take[v1]", 1.0, seed=0)
    (data / "spk1_take[v2].wav").write_bytes(b"not audio")
    (data / "spk1_take[v2].jsonl").write_text("")
    out = tmp_path / "out[v1]" / "m.jsonl"
    result = run("manifest", data, "-o", out)
    assert result.exit_code == 0, result.output
    assert f"manifest{out}" in "".join(result.output.split())  # a table title wraps at the table's width
    assert f"(all in {tmp_path / 'out[v1]' / 'm.problems.jsonl'}):" in result.output
    bad = data / "spk1_take[v2].wav"
    assert f"{bad}: cannot read audio header (Error opening '{bad}'" in result.output  # one line, as is
    store = tmp_path / "feat[v1].zarr"
    extracted = run("extract", out, "--store", store, "--set", "features.egemaps=false", "--workers", "1")
    assert extracted.exit_code == 0, extracted.output
    assert f"extract{store}" in "".join(extracted.output.split())


def _cli(args, cwd: Path, pythonpath: list[Path]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath)), **WIDE}
    cmd = [sys.executable, "-m", "cli.main", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _missing(tmp_path: Path, module: str) -> Path:
    """A folder whose ``module`` fails to import as in a plain ``pip install koemorph``."""
    fake = tmp_path / f"no_{module}"
    (fake / module).mkdir(parents=True)
    (fake / module / "__init__.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{module}'\", name='{module}')\n"
    )
    return fake


def test_extract_without_opensmile_says_how_to_install_it_or_switch_it_off(tmp_path):
    """A real process where `import opensmile` fails as in a plain `pip install koemorph`."""
    fake = _missing(tmp_path, "opensmile")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    args = ["extract", manifest, "--store", tmp_path / "s.zarr"]
    proc = _cli([*args, "--set", "features.egemaps=true"], tmp_path, [fake, ROOT])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "error: eGeMAPS features are on (features.egemaps: true)" in proc.stderr
    assert "No module named 'opensmile'" in proc.stderr
    assert 'pip install "koemorph[egemaps]"' in proc.stderr
    assert 'pip install -e ".[egemaps]"' in proc.stderr  # brackets survive: no Rich markup
    assert "koemorph extract --set features.egemaps=false" in proc.stderr
    assert "`egemaps: false` under `features:` in params.yaml" in proc.stderr
    assert not (tmp_path / "s.zarr").exists()
    off = _cli(args, tmp_path, [fake, ROOT])
    assert off.returncode == 0, off.stderr  # the default, without eGeMAPS, needs no openSMILE
    assert "openSMILE" not in off.stderr + off.stdout


def test_extract_without_pocketsphinx_says_how_to_install_it_or_switch_it_off(tmp_path):
    fake = _missing(tmp_path, "pocketsphinx")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    args = ["extract", manifest, "--store", tmp_path / "s.zarr"]
    proc = _cli(args, tmp_path, [fake, ROOT])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "error: phone features are on (features.phones: true, the default)" in proc.stderr
    assert "No module named 'pocketsphinx'" in proc.stderr and 'pip install "koemorph[phones]"' in proc.stderr
    assert "koemorph extract --set features.phones=false" in proc.stderr
    assert not (tmp_path / "s.zarr").exists()
    off = _cli([*args, "--set", "features.phones=false"], tmp_path, [fake, ROOT])
    assert off.returncode == 0, off.stderr


def _app_raising(exc: Exception) -> typer.Typer:
    demo = _App(add_completion=False)

    @demo.command("boom")
    def boom():
        raise exc

    @demo.command("fine")
    def fine():
        typer.echo("ok")

    return demo


def test_a_bug_prints_its_traceback_and_asks_for_a_report():
    result = CliRunner().invoke(_app_raising(ZeroDivisionError("division by zero")), ["boom"])
    assert result.exit_code == 1
    assert "Traceback" in result.output and "ZeroDivisionError: division by zero" in result.output
    assert result.output.rstrip().endswith(BUG_HINT)


def test_an_input_error_raised_anywhere_in_a_command_is_a_user_error():
    demo = _app_raising(InputError("take[v1].wav", "not a WAV file", line=3))
    result = CliRunner().invoke(demo, ["boom"])
    assert_user_error(result, "error: take[v1].wav:3: not a WAV file")
    assert BUG_HINT not in result.output
    assert CliRunner().invoke(demo, ["fine"]).output == "ok\n"
