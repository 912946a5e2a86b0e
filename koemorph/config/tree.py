"""The config tree's sections: one dataclass per stage, each field with its default and a comment
(``koemorph params`` writes them out as ``params.yaml``). Every section checks its values when
built (:mod:`koemorph.config.rules`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from koemorph.config.rules import ConfigError, check_section, check_tree


@dataclass
class PathsConfig:
    """Where the stages read and write, relative to the project root. ``dvc.yaml`` interpolates these
    (``${paths.store}``) and every command takes them as its defaults, so a dataset is chosen in one
    place. Point ``data_dir`` (and ``render_input``) at your own recordings to train on them."""

    data_dir: str = "data/demo"  # paired audio + tracks, searched recursively by `manifest`
    manifest: str = "data_manifests/demo.jsonl"
    store: str = "cache/demo.zarr"  # feature cache (Zarr)
    run_dir: str = "runs/demo"  # checkpoints last.pt / best.pt, metrics.csv
    render_input: str = (
        "data/demo/test"  # audio rendered by `render`; its tracks are the truth for `evaluate`
    )
    render_dir: str = "renders/demo"
    report_dir: str = "reports/demo"  # `evaluate`: metrics.json, CSVs, plots


@dataclass
class DataConfig:
    """Pairing, splitting and validating recordings (``koemorph manifest``)."""

    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test when no split folders
    split_seed: int = 0
    split_by: str = "speaker"  # "speaker" (split folders, else speaker hash) | "engine" (demo corpora)
    holdout_engine: str = ""  # split_by=engine: this engine's files are the test split ("" = seeded)
    speaker_pattern: str = r"^([^_]+)_"  # regex on the file stem; group 1 is the speaker
    max_duration_mismatch_s: float = 0.5  # |track end - audio duration| allowed
    swap_mouth_lr: bool = False  # Live Link Face's MouthLeft/MouthRight app bug

    def __post_init__(self):
        check_section("data", self)


@dataclass
class DemoConfig:
    """The generated demo corpus (``koemorph demo-data``)."""

    out_dir: str = "data/demo"
    minutes: float = 10.0
    seed: int = 0
    engines: tuple[str, ...] = ("espeak",)  # espeak (pip wheel) | flite | festival (Debian packages)

    def __post_init__(self):
        check_section("demo", self)


@dataclass
class FeaturesConfig:
    """Cached features (``koemorph extract``); every field here enters the cache hash."""

    fps: int = 30
    n_mels: int = 80
    n_fft: int = 1024
    fmin: float = 80.0
    fmax: float = 8000.0
    db_floor: float = -100.0  # dB re amplitude 1.0 (fixed, never per window or file)
    egemaps: bool = False  # openSMILE's research-only licence: no products from models trained on it
    egemaps_context_s: float = 20.0
    egemaps_step_s: float = 0.3
    egemaps_guard_s: float = 0.1  # windows end this much early inside openSMILE (its LLDs look ahead)
    phones: bool = True  # recognised phones [T, 40] (PocketSphinx, extra "phones"), voice-independent
    phones_decoding: str = "adapted"  # adapted: whole file, fitted to it | whole: one decode | live
    phones_text: bool = True  # with phones: also phones renamed with NAME.txt's words, and a source column
    phones_warps: tuple[float, ...] = (1.0,)  # whole decoding: rows are the mean of decodes at these warps

    def __post_init__(self):
        check_section("features", self)


@dataclass
class ModelConfig:
    """The network (``koemorph train``). Times are in seconds and converted at the features' fps."""

    kind: str = "dual_stream"  # "dual_stream" | "simplified"
    d_model: int = 256
    num_heads: int = 8
    mel_bands: int = 1  # dual-stream: mel split along frequency into this many bands (0: phones only)
    context_s: float = 8.5333  # mel context per output frame (256 frames at 30 fps)
    lookahead_s: float = 0.1  # future audio an output frame may see (0: causal); lips lead the sound
    emotion_context_s: float = 20.0  # eGeMAPS context per output frame (tokens every features.egemaps_step_s)
    conv_kernel: int = 1  # frames per mel token (valid causal conv t-K+1..t)
    mel_summary: int = 32  # dual-stream: rank of a whole-spectrum projection added to band tokens (0: off)
    band_overlap: int = 0  # dual-stream: mel bins each band also sees on each side of its own
    temporal_layers: int = 0  # dual-stream: causal dilated conv layers (k=3) over each band's tokens (0: off)
    locality_prior: bool = True  # ALiBi bias -slope_h*|age| per head, slopes 1..1/128 per frame
    decoder_hidden: int = 128
    dropout: float = 0.1
    temperature: float = 0.5  # stream-weight softmax temperature
    smoothing: bool = True
    smoothing_init: float = 3.0  # a = sigmoid(smoothing_init) at start in y_t = a*x_t + (1-a)*y_{t-1}

    def __post_init__(self):
        check_section("model", self)


@dataclass
class SamplingConfig:
    """Which frames are targets in an epoch, and how they are grouped into blocks."""

    mode: str = "mixed"  # dense | sparse | mixed | progressive
    sparse_stride: int = 32  # frames between sparse targets (random phase per file and epoch)
    dense_fraction: float = 0.1  # mixed: share of an epoch's targets that come from dense runs
    dense_block_frames: int = 32  # consecutive target frames per dense block
    sparse_block_frames: int = 256  # span of one sparse block (targets every sparse_stride inside)
    progressive_strides: tuple[int, ...] = (32, 8, 1)  # progressive: stride per equal share of the epochs
    dense_batch_size: int = 8
    sparse_batch_size: int = 8
    num_workers: int = 0  # DataLoader workers (results do not depend on it)

    def __post_init__(self):
        check_section("sampling", self)


@dataclass
class AugmentConfig:
    """Voice augmentation of training batches; 0 switches a transform off."""

    shift_bins: float = 4.0  # log-mel moved along the mel axis by U(-s, s) bins (vocal tract length)
    gain_db: float = 6.0  # level change U(-g, g) dB
    tilt_db: float = 10.0  # spectral tilt U(-t, t) dB from the lowest to the highest mel bin
    egemaps_noise: float = 0.2  # per-feature offset N(0, sigma) in normalised units, fixed per block
    phone_swap: float = 0.0  # probability that a recognised speech-phone segment is shown as a random phone
    text_phones: float = 0.5  # share of blocks shown transcript-renamed phones (files with a transcript)

    def __post_init__(self):
        check_section("augment", self)


@dataclass
class LossConfig:
    """Weights of the training loss terms (each term is also logged on its own)."""

    mse: float = 1.0
    l1: float = 0.1
    perceptual: float = 0.5  # MSE on the mouth group + MSE on the expression group
    velocity: float = 0.1  # prediction deltas vs target deltas along time (dense blocks)
    consistency: float = 0.2  # raw prediction vs the detached smoothed state (dense blocks)
    channel_floor: float = 0.05  # > 0: each channel's error divided by max(its train std, floor); 0: off
    closure: float = 0.2  # lips that stay open where the truth closes them (see closure_below)
    closure_below: float = -0.2  # truth lips closed: jawOpen - mouthClose at or below this

    def __post_init__(self):
        check_section("loss", self)


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine annealing."""

    lr: float = 2e-3  # peak, after warmup_steps
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    min_lr: float = 1e-6  # cosine annealing floor
    warmup_steps: int = 30  # linear warm-up from lr/warmup_steps to lr
    grad_clip: float = 1.0

    def __post_init__(self):
        check_section("optim", self)


@dataclass
class TrainConfig:
    """The training run (``koemorph train``): length, validation, checkpoints' metric, MLflow."""

    epochs: int = 60
    max_minutes: float = (
        0.0  # wall-clock budget, trains past `epochs` until spent; 0 = off (cosine over epochs)
    )
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda (data parallel: gloo on cpu, NCCL on cuda)
    threads: int = 0  # torch CPU threads per process; 0 = the host's cores (up to 8) shared among its ranks
    val_every: int = 0  # epochs between validations; 0 = every val_every_minutes of wall time
    val_every_minutes: float = 4.0  # with val_every = 0 (and at the end)
    early_stopping_patience: int = 0  # validations without improvement before stopping; 0 = off
    monitor: str = "val/mouth_pearson"  # metric for `best` and early stopping (higher is better)
    log_every: int = 20  # steps between per-step metric logs
    experiment: str = "koemorph"
    tracking_uri: str = ""  # "" = $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    plot_files: int = 3  # validation files drawn in the predicted-vs-true PNG

    def __post_init__(self):
        check_section("train", self)


@dataclass
class EvaluateConfig:
    """``koemorph evaluate``: metrics, silence detection, the ridge baseline."""

    flat_std: float = 1e-3  # truth channels with std below this are skipped for Pearson/CCC
    lag_window_s: float = 0.2  # sync lag searched within +- this (seconds)
    silence_db: float = 40.0  # frames whose RMS is this far below the file's loudest frame are silent
    closure_quantile: float = 0.9  # tau = this quantile of the truth's per-bilabial min aperture
    closure_slack_s: float = 0.05  # bilabial windows are widened by this on each side (seconds)
    ridge_context: int = 20  # ridge baseline: +- frames of mel context
    ridge_alphas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # lambda = alpha * train frames
    ridge_max_frames: int = 200_000  # ridge: evenly spaced train frames used at most

    def __post_init__(self):
        check_section("evaluate", self)


@dataclass
class RenderConfig:
    """``koemorph render``: output format and rate, and the post-processing animators ask for
    (all off by default, recorded per output; see :mod:`koemorph.inference.postprocess`)."""

    format: str = "jsonl"  # jsonl | livelink-csv | beat-json
    fps: int = 0  # output frame rate, 30 or 60; 0 = the model's
    smooth_mouth_s: float = 0.0  # Savitzky-Golay window on the mouth group, seconds; 0 = off
    smooth_face_s: float = 0.0  # same on the expression (upper face) group; 0 = off
    smooth_polyorder: int = 2  # polynomial order of the Savitzky-Golay fit
    rest_pose: bool = False  # ease mouth channels to 0 in long silences
    rest_threshold_db: float = 40.0  # silence: frame RMS this many dB below the file's speech level
    rest_min_silence_s: float = 0.3  # shorter pauses are left alone
    rest_fade_s: float = 0.15  # ease-in / ease-out at each edge of a pause
    clamp: dict = field(default_factory=dict)  # {name: [lo, hi]}, bounds numbers or channel names
    transcripts: bool = True  # phone models: <stem>.txt beside an input is its transcript
    recognise_words: bool = False  # phone models: no transcript, the recognised words if confident
    match_level: bool = True  # inputs far quieter or louder than the training files are scaled to them

    def __post_init__(self):
        check_section("render", self)
        self.clamp = parse_clamp_table(self.clamp)

    def to_dict(self) -> dict:
        """The post-processing settings (not format, fps, transcripts, recognise_words or match_level,
        recorded on their own), as written in the render manifest and compared for skipping."""
        d = dataclasses.asdict(self)
        own = ("format", "fps", "transcripts", "recognise_words", "match_level")
        return {k: v for k, v in d.items() if k not in own}

    @property
    def active(self) -> bool:
        return bool(self.smooth_mouth_s or self.smooth_face_s or self.rest_pose or self.clamp)


class ClampChannelError(ConfigError, KeyError):
    """An unknown channel name in ``render.clamp`` (a KeyError too, as ``blendshapes.index_of`` raises)."""

    __str__ = Exception.__str__


def parse_clamp_table(clamp) -> dict:
    """``render.clamp`` checked: ``{channel: [lo, hi]}``, bounds numbers or channel names."""
    from koemorph.blendshapes import canonical_name

    if not isinstance(clamp or {}, dict):
        raise ConfigError("render.clamp", f"expected a mapping {{name: [lo, hi]}}, got {clamp!r}")
    table = {}
    for name, bounds in dict(clamp or {}).items():
        if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
            raise ConfigError(f"render.clamp.{name}", f"expected [lo, hi], got {bounds!r}")
        if not all(isinstance(b, (int, float, str)) and not isinstance(b, bool) for b in bounds):
            raise ConfigError(
                f"render.clamp.{name}", f"bounds must be numbers or channel names, got {bounds!r}"
            )
        table[str(name)] = [parse_bound(b) for b in bounds]
        for channel in [str(name)] + [b for b in table[str(name)] if isinstance(b, str)]:
            if canonical_name(channel) is None:
                raise ClampChannelError(f"render.clamp.{name}", f"unknown ARKit blendshape name {channel!r}")
    return table


def parse_bound(b):
    """A clamp bound: a number, or a channel name (a string that is not a number)."""
    if isinstance(b, str):
        try:
            return float(b)
        except ValueError:
            return b
    return float(b)


@dataclass
class Config:
    """The whole tree: one section per stage (``params.yaml`` has the same layout)."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def __post_init__(self):
        check_tree(self)


# Config keys added after checkpoints and feature stores were written, with the value that applied
# to those (not today's default): a checkpoint without them was trained without phones and without
# the closure loss, and a store without phones_warps holds one unwarped decode.
ADDED_KEYS = {
    ("features", "phones"): False,
    ("features", "phones_decoding"): "whole",
    ("loss", "closure"): 0.0,
    ("augment", "phone_swap"): 0.0,
    ("features", "phones_text"): False,
    ("augment", "text_phones"): 0.0,
    ("features", "phones_warps"): [1.0],
}
