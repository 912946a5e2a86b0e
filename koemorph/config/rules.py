"""What each config value may be, checked when a section is built (:mod:`koemorph.config`).

Light on purpose (no numpy, no torch): the CLI, the training loop and the config all import it. A
broken value raises :class:`ConfigError` with the key, the problem and the valid choices, e.g.
``features.fps: 45 is not supported (valid: 30, 60)``.
"""

from __future__ import annotations

import math
import re

#: The metrics a validation pass produces (all on the validation split), any of which ``train.monitor``
#: may name; the training loop treats those in ``LOWER_IS_BETTER_METRICS`` as lower-is-better.
MONITOR_METRICS = ("val/mouth_pearson", "val/pearson", "val/mae", "val/rmse", "val/loss")
LOWER_IS_BETTER_METRICS = ("val/mae", "val/rmse", "val/loss")
#: Output formats of ``koemorph render`` (``render.format``).
RENDER_FORMATS = ("jsonl", "livelink-csv", "beat-json")
MODEL_KINDS = ("dual_stream", "simplified")
SAMPLING_MODES = ("dense", "sparse", "mixed", "progressive")
FEATURE_FPS = (30, 60)  # the frame rates of koemorph.grid
NYQUIST_HZ = 8000.0  # half of koemorph.grid's 16 kHz sample rate


class ConfigError(ValueError):
    """A config value that cannot be used: ``section.key: problem``. ``key`` is the dotted key."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}" if key else problem)

    def __reduce__(self):
        return (type(self), (self.key, self.problem))


def one_of(*choices):
    listed = ", ".join(str(c) for c in choices)
    return lambda v: None if v in choices else f"{v!r} is not supported (valid: {listed})"


def at_least(lo):
    return lambda v: None if v >= lo else f"must be >= {lo}, got {v!r}"


def above(lo):
    return lambda v: None if v > lo else f"must be > {lo}, got {v!r}"


def within(lo, hi, hi_open: bool = False):
    top = ")" if hi_open else "]"
    return lambda v: (
        None if lo <= v and (v < hi if hi_open else v <= hi) else f"must be in [{lo}, {hi}{top}, got {v!r}"
    )


def each(rule, non_empty: bool = True):
    def check(values):
        if non_empty and not values:
            return "must list at least one value"
        problems = [rule(v) for v in values]
        bad = [(v, p) for v, p in zip(values, problems) if p]
        return f"{bad[0][0]!r}: {bad[0][1]}" if bad else None

    return check


def device(v):
    if v in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", v):
        return None
    return f"{v!r} is not supported (valid: auto, cpu, cuda, cuda:N)"


def regex_with_group(v):
    try:
        pattern = re.compile(v)
    except re.error as exc:
        return f"{v!r} is not a valid regular expression ({exc})"
    return None if pattern.groups >= 1 else f"{v!r} needs a group: group 1 is the speaker"


POSITIVE, NON_NEGATIVE, COUNT = above(0), at_least(0), at_least(1)

RULES: dict[str, dict] = {
    "data": {
        "split_ratios": each(NON_NEGATIVE),
        "max_duration_mismatch_s": NON_NEGATIVE,
        "speaker_pattern": regex_with_group,
        "split_by": one_of("speaker", "engine"),
    },
    "demo": {"minutes": POSITIVE},
    "features": {
        "fps": one_of(*FEATURE_FPS),
        "n_mels": COUNT,
        "n_fft": COUNT,
        "fmin": NON_NEGATIVE,
        "fmax": within(0, NYQUIST_HZ),
        "egemaps_context_s": POSITIVE,
        "egemaps_step_s": POSITIVE,
        "egemaps_guard_s": NON_NEGATIVE,
        "phones_decoding": one_of("whole", "adapted", "live"),
        "phones_warps": each(within(0.5, 2.0)),
    },
    "model": {
        "kind": one_of(*MODEL_KINDS),
        **{k: COUNT for k in ("d_model", "num_heads", "conv_kernel", "decoder_hidden")},
        **{
            k: NON_NEGATIVE
            for k in ("mel_bands", "lookahead_s", "mel_summary", "band_overlap", "temporal_layers")
        },
        "context_s": POSITIVE,
        "emotion_context_s": POSITIVE,
        "dropout": within(0, 1, hi_open=True),
        "temperature": POSITIVE,
    },
    "sampling": {
        "mode": one_of(*SAMPLING_MODES),
        **{k: COUNT for k in ("sparse_stride", "dense_block_frames", "sparse_block_frames")},
        **{k: COUNT for k in ("dense_batch_size", "sparse_batch_size")},
        "dense_fraction": within(0, 1),
        "progressive_strides": each(COUNT),
        "num_workers": NON_NEGATIVE,
    },
    "augment": {
        **{k: NON_NEGATIVE for k in ("shift_bins", "gain_db", "tilt_db", "egemaps_noise")},
        "phone_swap": within(0, 1),
        "text_phones": within(0, 1),
    },
    "loss": {
        **{
            k: NON_NEGATIVE
            for k in ("mse", "l1", "perceptual", "velocity", "consistency", "channel_floor", "closure")
        },
        "closure_below": within(-1, 1),
    },
    "optim": {
        "lr": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "betas": each(within(0, 1, hi_open=True)),
        "min_lr": NON_NEGATIVE,
        "warmup_steps": NON_NEGATIVE,
        "grad_clip": NON_NEGATIVE,
    },
    "train": {
        "device": device,
        "monitor": one_of(*MONITOR_METRICS),
        **{
            k: NON_NEGATIVE
            for k in ("epochs", "max_minutes", "val_every", "early_stopping_patience", "threads")
        },
        "val_every_minutes": POSITIVE,
        "log_every": COUNT,
        "plot_files": NON_NEGATIVE,
    },
    "render": {
        "format": one_of(*RENDER_FORMATS),
        "fps": one_of(0, *FEATURE_FPS),
        **{k: NON_NEGATIVE for k in ("smooth_mouth_s", "smooth_face_s", "smooth_polyorder")},
        **{k: NON_NEGATIVE for k in ("rest_threshold_db", "rest_min_silence_s", "rest_fade_s")},
    },
    "evaluate": {
        **{k: NON_NEGATIVE for k in ("flat_std", "lag_window_s", "closure_slack_s", "ridge_context")},
        "silence_db": POSITIVE,
        "closure_quantile": within(0, 1),
        "ridge_alphas": each(POSITIVE),
        "ridge_max_frames": COUNT,
    },
}


def check_section(section: str, obj) -> None:
    """Raise :class:`ConfigError` for the first value of ``obj`` (the ``section`` dataclass) its rule
    rejects, and for NaN anywhere (no rule can accept it)."""
    for key, rule in RULES.get(section, {}).items():
        value = getattr(obj, key)
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and math.isnan(v) for v in values):
            raise ConfigError(f"{section}.{key}", "must be a number, got nan")
        problem = rule(value)
        if problem:
            raise ConfigError(f"{section}.{key}", problem)


def check_tree(cfg) -> None:
    """The rules that span keys: the frequency range, the split ratios and the model's shapes."""
    f, m = cfg.features, cfg.model
    if f.fmin >= f.fmax:
        raise ConfigError("features.fmin", f"must be below features.fmax {f.fmax}, got {f.fmin}")
    if f.phones_decoding != "whole" and tuple(f.phones_warps) != (1.0,):
        warps, how = list(f.phones_warps), f.phones_decoding
        raise ConfigError(
            "features.phones_warps",
            f"{how} decoding is unwarped: must be [1.0] (warps need phones_decoding: whole), got {warps}",
        )
    if not sum(cfg.data.split_ratios) > 0:
        raise ConfigError("data.split_ratios", f"must not all be 0, got {list(cfg.data.split_ratios)}")
    if m.d_model % m.num_heads:
        raise ConfigError("model.num_heads", f"{m.num_heads} must divide model.d_model {m.d_model}")
    groups = m.mel_bands + bool(f.phones)  # token groups of the frame stream
    problem = None
    if m.mel_bands and f.n_mels % m.mel_bands:
        problem = f"{m.mel_bands} must divide features.n_mels {f.n_mels}"
    elif not groups:
        problem = "0 needs features.phones: the frame stream reads mel bands, phones or both"
    elif m.num_heads % groups:
        what = "the mel bands plus the phone group" if f.phones else "it"
        problem = f"{m.mel_bands} bands: {what} ({groups}) must divide model.num_heads {m.num_heads}"
    if m.kind == "dual_stream" and problem:
        raise ConfigError("model.mel_bands", problem)
