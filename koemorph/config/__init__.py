"""The one typed config tree.

Defaults live in these dataclasses; ``params.yaml`` (if present) overrides them; CLI options
override that (``--set section.key=value``). DVC tracks the same keys, and MLflow logs the
flattened tree, so the three never disagree.
"""

from koemorph.config.load import (
    config_hash,
    flatten,
    load_config,
    load_section,
    parse_override,
    read_params,
    to_dict,
)
from koemorph.config.rules import ConfigError
from koemorph.config.tree import (
    ADDED_KEYS,
    AugmentConfig,
    ClampChannelError,
    Config,
    DataConfig,
    DemoConfig,
    EvaluateConfig,
    FeaturesConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    PathsConfig,
    RenderConfig,
    SamplingConfig,
    TrainConfig,
    parse_bound,
    parse_clamp_table,
)

__all__ = [
    "ADDED_KEYS",
    "AugmentConfig",
    "ClampChannelError",
    "Config",
    "ConfigError",
    "DataConfig",
    "DemoConfig",
    "EvaluateConfig",
    "FeaturesConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PathsConfig",
    "RenderConfig",
    "SamplingConfig",
    "TrainConfig",
    "config_hash",
    "flatten",
    "load_config",
    "load_section",
    "parse_bound",
    "parse_clamp_table",
    "parse_override",
    "read_params",
    "to_dict",
]
