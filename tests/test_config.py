import pytest

from koemorph.config import (
    FeaturesConfig,
    SamplingConfig,
    config_hash,
    flatten,
    load_config,
    to_dict,
)
from koemorph.config.rules import LOWER_IS_BETTER_METRICS, MONITOR_METRICS, RENDER_FORMATS, ConfigError


def test_defaults_yaml_and_overrides(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("features:\n  fps: 60\ndata:\n  split_ratios: [0.5, 0.25, 0.25]\n")
    cfg = load_config(params, ["features.egemaps=false", "data.split_seed=7"])
    assert cfg.features.fps == 60 and cfg.features.egemaps is False
    assert cfg.data.split_ratios == (0.5, 0.25, 0.25) and cfg.data.split_seed == 7
    assert load_config(tmp_path / "absent.yaml").features.fps == 30
    assert flatten(to_dict(cfg))["features.fps"] == 60


def test_unknown_or_mistyped_keys_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        load_config(None, ["features.n_mel=40"])
    with pytest.raises(ValueError, match="integer"):
        load_config(None, ["features.fps=29.97"])


def test_hash_changes_with_any_field():
    a, b = load_config(None), load_config(None, ["features.fmin=60"])
    assert config_hash(a.features) != config_hash(b.features)
    assert config_hash(a.data) == config_hash(b.data)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.d_model=big", "model.d_model: expected an integer, got 'big'"),
        ("model.d_model=[1,2]", "model.d_model: expected an integer, got [1, 2]"),
        ("model.d_model=-3", "model.d_model: must be >= 1, got -3"),
        ("model.dropout=1.5", "model.dropout: must be in [0, 1), got 1.5"),
        ("augment.phone_swap=1.2", "augment.phone_swap: must be in [0, 1], got 1.2"),
        (
            "model.kind=transformer",
            "model.kind: 'transformer' is not supported (valid: dual_stream, simplified)",
        ),
        ("model.num_heads=3", "model.num_heads: 3 must divide model.d_model 256"),
        ("model.mel_bands=3", "model.mel_bands: 3 must divide features.n_mels 80"),
        ("model.mel_bands=4", "model.mel_bands: 4 bands: the mel bands plus the phone group (5) must divide"),
        ("features.fps=45", "features.fps: 45 is not supported (valid: 30, 60)"),
        ("features.n_mels=0", "features.n_mels: must be >= 1, got 0"),
        ("features.fmax=12000", "features.fmax: must be in [0, 8000.0], got 12000.0"),
        ("features.fmin=nan", "features.fmin: must be a number, got nan"),
        ("sampling.mode=sparsest", "sampling.mode: 'sparsest' is not supported (valid: dense, sparse, mixed"),
        ("sampling.dense_batch_size=0", "sampling.dense_batch_size: must be >= 1, got 0"),
        ("sampling.progressive_strides=[]", "sampling.progressive_strides: must list at least one value"),
        ("train.device=gpu", "train.device: 'gpu' is not supported (valid: auto, cpu, cuda, cuda:N)"),
        ("train.monitor=val/mouth", "train.monitor: 'val/mouth' is not supported (valid: val/mouth_pearson,"),
        (
            "render.format=fbx",
            "render.format: 'fbx' is not supported (valid: jsonl, livelink-csv, beat-json)",
        ),
        ("render.fps=45", "render.fps: 45 is not supported (valid: 0, 30, 60)"),
        ("render.clamp={mouthClosed: [0, 1]}", "render.clamp.mouthClosed: unknown ARKit blendshape name"),
        ("render.clamp={jawOpen: 1}", "render.clamp.jawOpen: expected [lo, hi], got 1"),
        ("data.speaker_pattern=(", "data.speaker_pattern: '(' is not a valid regular expression"),
        ("data.split_ratios=[0, 0, 0]", "data.split_ratios: must not all be 0"),
        ("evaluate.ridge_alphas=[1, -1]", "evaluate.ridge_alphas: -1.0: must be > 0"),
        ("paths.store=null", "paths.store: expected a string, got None"),
        ("features.n_mel=40", "features.n_mel: unknown key (did you mean n_mels? valid: fps, n_mels,"),
        ("feature.fps=60", "feature: unknown section (did you mean features? valid: paths, data,"),
        ("model.d_model=[1", "model.d_model: --set value '[1' is not valid YAML"),
        ("nokey", "--set 'nokey': expected section.key=value"),
    ],
)
def test_a_bad_value_names_its_key_the_problem_and_the_choices(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value).startswith(message), str(info.value)


def test_the_same_checks_apply_to_params_yaml_with_the_key_named(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("features:\n  fps: 45\n")
    with pytest.raises(ConfigError, match=r"^features\.fps: 45 is not supported \(valid: 30, 60\)$"):
        load_config(params)
    params.write_text("train:\n  monitor: val/mae\n  device: cuda:1\n")  # valid: loaded as given
    cfg = load_config(params)
    assert cfg.train.monitor == "val/mae" and cfg.train.device == "cuda:1"


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("model:\n  d_model: 64\n bad: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(params)
    assert str(info.value).startswith(f"{params}:3: invalid YAML (")
    params.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections at the top level"):
        load_config(params)


def test_sections_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match=r"^features\.fps: 45 is not supported"):
        FeaturesConfig(fps=45)
    with pytest.raises(ConfigError, match=r"^sampling\.mode: 'x' is not supported"):
        SamplingConfig(mode="x")


def test_monitor_choices_are_the_metrics_validation_produces():
    """`train.monitor` choices must be exactly the keys :func:`validate` returns, and the lower-is-better
    ones those the training loop minimises (read from the code, so a new metric fails here)."""
    import inspect
    import re

    from koemorph.training import validation
    from koemorph.training.schedule import better

    produced = set(re.findall(r'"(val/\w+)":', inspect.getsource(validation.validate)))
    assert produced == set(MONITOR_METRICS)
    lower = {m for m in MONITOR_METRICS if better(1.0, 2.0, m)}
    assert lower == set(LOWER_IS_BETTER_METRICS) == {"val/mae", "val/rmse", "val/loss"}


def test_render_formats_are_the_ones_render_writes():
    from koemorph.inference.render import OUTPUT_SUFFIXES
    from koemorph.io.tracks.formats import FORMATS

    assert set(OUTPUT_SUFFIXES) == {f.name for f in FORMATS} == set(RENDER_FORMATS)
