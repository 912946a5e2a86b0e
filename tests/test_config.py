import pytest

from koemorph.config import config_hash, flatten, load_config, to_dict


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
