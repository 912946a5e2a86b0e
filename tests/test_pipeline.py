"""params.yaml, dvc.yaml and the whole chain: demo_data -> manifest -> extract -> train -> render -> evaluate.

The end-to-end test runs the real DVC (`dvc repro`) on a copy of the project's dvc.yaml with a tiny
params.yaml (30 s corpus, a small model, one epoch), checks every stage's outputs, that a second
`dvc repro` runs nothing, and that changing one param re-runs only the stages that read it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from koemorph import grid
from koemorph.config import Config, load_config, to_dict
from koemorph.config.params_file import params_yaml
from koemorph.io.atomic import read_jsonl
from koemorph.io.tracks import read_track

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ["demo_data", "manifest", "extract", "train", "render", "evaluate"]
CODE_DIRS = ("koemorph", "pipeline")  # what the stages' code deps live in


def dvc_cmd() -> str:
    exe = BIN / "dvc" if (BIN / "dvc").exists() else shutil.which("dvc")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("dvc is not installed: CI installs koemorph[all], which includes it")
        pytest.skip("dvc not installed (pip install -e '.[pipeline]')")
    return str(exe)


def run_dvc(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([dvc_cmd(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


# ---------------------------------------------------------------- params.yaml and dvc.yaml


def test_params_yaml_is_the_whole_config_tree_in_canonical_form():
    text = (ROOT / "params.yaml").read_text()
    cfg = load_config(ROOT / "params.yaml")
    assert yaml.safe_load(text).keys() == to_dict(Config()).keys()
    for section, values in yaml.safe_load(text).items():
        assert values.keys() == to_dict(getattr(Config(), section)).keys(), section
    assert text == params_yaml(cfg), (
        "params.yaml is stale: regenerate it with `koemorph params -o params.yaml`"
    )
    # the values are the code's defaults (a changed default must reach the file DVC and the demo read),
    # except the demo's training budget
    defaults, given = to_dict(Config()), to_dict(cfg)
    differ = {(s, k) for s in defaults for k in defaults[s] if defaults[s][k] != given[s][k]}
    assert differ == {("train", "max_minutes")}, differ


def test_params_command_round_trips_and_applies_overrides(tmp_path):
    out = tmp_path / "p.yaml"
    res = CliRunner().invoke(
        app,
        [
            "params",
            "-o",
            str(out),
            "--set",
            "paths.store=cache/x.zarr",
            "--set",
            "render.clamp={mouthClose: [0, jawOpen]}",
        ],
    )
    assert res.exit_code == 0, res.output
    cfg = load_config(out)
    assert cfg.paths.store == "cache/x.zarr" and cfg.render.clamp == {"mouthClose": [0.0, "jawOpen"]}
    assert params_yaml(cfg) == out.read_text()
    assert "# feature cache (Zarr)" in out.read_text()  # the field's comment in config.py travels along


def test_dvc_yaml_reads_only_known_params():
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert list(spec["stages"]) == STAGES
    sections = set(to_dict(Config()))
    flat = {f"{s}.{k}" for s, v in to_dict(Config()).items() for k in v}
    for name, stage in spec["stages"].items():
        assert set(stage.get("params", [])) <= sections, name
        assert stage["cmd"].startswith("koemorph "), name
    refs = set(re.findall(r"\$\{([^}]+)\}", (ROOT / "dvc.yaml").read_text()))
    assert refs and refs <= flat, refs - flat


def test_dvc_dag_and_status_are_valid_on_the_project():
    dag = run_dvc("dag", "--md", cwd=ROOT).stdout  # mermaid: node3["extract"] ... node4-->node3
    names = dict(re.findall(r'(node\d+)\["([^"]+)"\]', dag))
    edges = {(names[a], names[b]) for a, b in re.findall(r"(node\d+)-->(node\d+)", dag)}
    assert sorted(names.values()) == sorted(STAGES)
    assert {
        ("demo_data", "manifest"),
        ("manifest", "extract"),
        ("extract", "train"),
        ("train", "render"),
        ("render", "evaluate"),
        ("extract", "evaluate"),
    } <= edges, edges
    run_dvc("status", cwd=ROOT)


# ---------------------------------------------------------------- the chain end to end

TINY = [
    "demo.minutes=0.5",
    "data.split_seed=0",
    "paths.data_dir=data/tiny",
    "demo.out_dir=data/tiny",
    "paths.render_input=data/tiny/test",
    "paths.manifest=data_manifests/tiny.jsonl",
    "paths.store=cache/tiny.zarr",
    "paths.run_dir=runs/tiny",
    "paths.render_dir=renders/tiny",
    "paths.report_dir=reports/tiny",
    "model.d_model=32",
    "model.num_heads=4",
    "model.context_s=1.0",
    "model.emotion_context_s=3.0",
    "model.decoder_hidden=16",
    "train.epochs=1",
    "train.max_minutes=0",
    "train.val_every=1",
    "sampling.dense_batch_size=2",
    "sampling.sparse_batch_size=2",
    "evaluate.ridge_context=2",
    "evaluate.ridge_alphas=[0.1]",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project's pipeline files with a tiny params.yaml, after a first `dvc repro`."""
    dvc_cmd()
    root = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    for code in CODE_DIRS:
        shutil.copytree(ROOT / code, root / code, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = load_config(None, TINY + [f"train.tracking_uri=sqlite:///{root / 'mlflow.db'}"])
    (root / "params.yaml").write_text(params_yaml(cfg))
    run_dvc("init", "--no-scm", "-q", cwd=root)
    shutil.copy(ROOT / ".dvcignore", root / ".dvcignore")
    first = run_dvc("repro", cwd=root)
    return root, cfg, first.stdout + first.stderr


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_and_each_leaves_its_outputs(project):
    root, cfg, log = project
    assert ran_stages(log) == STAGES
    p = cfg.paths
    wavs = sorted((root / p.data_dir).rglob("*.wav"))
    assert wavs and len(list((root / p.data_dir).rglob("*.jsonl"))) == len(wavs)
    manifest = read_jsonl(root / p.manifest)
    assert len(manifest) == len(wavs) and {r["split"] for r in manifest} == {"train", "val", "test"}
    results = read_jsonl(Path(str(root / p.store)[: -len(".zarr")] + ".results.jsonl"))
    assert sorted(r["status"] for r in results) == ["ok"] * len(wavs)
    assert (root / p.run_dir / "best.pt").is_file() and (root / p.run_dir / "last.pt").is_file()
    run = json.loads((root / p.run_dir / "summary.json").read_text())
    assert run["steps"] > 0 and run["run_id"]
    assert (root / p.run_dir / "metrics.csv").read_text().startswith("epoch,step,train_loss")
    test_wavs = sorted((root / p.render_input).rglob("*.wav"))
    renders = sorted((root / p.render_dir).rglob("*.jsonl"))
    renders = [r for r in renders if r.name != "render_manifest.jsonl"]
    assert len(renders) == len(test_wavs) > 0
    for wav, out in zip(test_wavs, renders):
        duration = next(r["duration"] for r in manifest if r["audio_path"].endswith(wav.name))
        assert len(read_track(out).values) == grid.num_frames(duration, 30)
    metrics = json.loads((root / p.report_dir / "metrics.json").read_text())
    assert {"model", "ridge", "mean_pose"} <= metrics.keys() and metrics["files"] == len(test_wavs)
    for name in ("per_channel.csv", "per_file.csv", "per_channel_r.png", "curves_best.png"):
        assert (root / p.report_dir / name).is_file(), name


@pytest.mark.slow
def test_second_repro_does_nothing_and_one_param_reruns_only_its_stages(project):
    root, cfg, _ = project
    again = run_dvc("repro", cwd=root)
    assert ran_stages(again.stdout + again.stderr) == []
    assert "up to date" in run_dvc("status", cwd=root).stdout
    text = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(text.replace("flat_std: 0.001", "flat_std: 0.002"))
    status = run_dvc("status", cwd=root).stdout
    assert "evaluate:" in status and not any(f"{s}:" in status for s in STAGES[:-1]), status
    rerun = run_dvc("repro", cwd=root)
    assert ran_stages(rerun.stdout + rerun.stderr) == ["evaluate"]
    (root / "params.yaml").write_text(text.replace("smooth_mouth_s: 0.0", "smooth_mouth_s: 0.1"))
    rerun = run_dvc("repro", cwd=root)
    assert ran_stages(rerun.stdout + rerun.stderr) == ["render", "evaluate"]


@pytest.mark.slow
def test_summary_reports_every_stage(project, monkeypatch):
    root, _, _ = project
    monkeypatch.chdir(root)
    res = CliRunner().invoke(app, ["summary"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for needle in (
        "files",
        "h of audio",
        "min,",
        "mouth Pearson r",
        "ridge",
        "mean pose",
        '".[ui]"',
        "mlflow ui --backend-store-uri sqlite:///",
        "renders/tiny",
        "reports/tiny",
    ):
        assert needle in res.output, (needle, res.output)
    assert "not run yet" not in res.output


def code_deps(stage: dict) -> list[str]:
    """The stage's deps that are project code (folders or files under :data:`CODE_DIRS`)."""
    return [d for d in stage["deps"] if d.split("/")[0] in CODE_DIRS]


def test_every_stage_depends_on_the_code_it_runs():
    """Each stage lists the subpackages whose code its command runs (a static check; the test below
    shows that DVC acts on them)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    runs = {
        "demo_data": {"koemorph/demo", "koemorph/io"},
        "manifest": {"koemorph/data", "koemorph/io"},
        "extract": {"koemorph/data", "koemorph/io", "koemorph/features", "pipeline"},
        "train": {"koemorph/training", "koemorph/model", "koemorph/data", "koemorph/features"},
        "render": {
            "koemorph/inference",
            "koemorph/model",
            "koemorph/training",
            "koemorph/features",
            "pipeline",
        },
        "evaluate": {"koemorph/evaluation", "koemorph/io", "koemorph/data"},
    }
    for name, needed in runs.items():
        deps = set(code_deps(stages[name]))
        assert needed | {"koemorph/grid.py", "koemorph/blendshapes.py"} <= deps, (name, needed - deps)
        for dep in deps:
            assert (ROOT / dep).exists(), (name, dep)


@pytest.mark.slow
def test_editing_a_stages_code_makes_dvc_report_that_stage(project):
    """In the temporary project (after its first `dvc repro`), a comment added to one file of each
    code dependency makes `dvc status` report exactly the stages that list that dependency."""
    root, _, _ = project
    run_dvc("repro", cwd=root)  # whatever an earlier test changed is brought up to date first
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    deps = sorted({d for stage in stages.values() for d in code_deps(stage)})
    assert len(deps) >= 9, deps
    for dep in deps:
        path = root / dep
        target = path if path.is_file() else sorted(path.rglob("*.py"))[0]
        original = target.read_bytes()
        try:
            target.write_bytes(original + b"\n# edited by the test\n")
            status = json.loads(run_dvc("status", "--json", cwd=root).stdout or "{}")
        finally:
            target.write_bytes(original)
        expected = {name for name, stage in stages.items() if dep in code_deps(stage)}
        assert set(status) == expected, (dep, target, sorted(status))
    assert json.loads(run_dvc("status", "--json", cwd=root).stdout or "{}") == {}
