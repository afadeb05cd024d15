"""The typed run configuration: config files (YAML/TOML), CLI flags and the Python API's keywords fill
the same object, and the object checks itself however it is built: every choice, type, range and
cross-field rule fails with a ConfigError naming the key, never by falling back to a default.

The keys are flat (`lr`, `policy`, ...) as on the command line, and grouped into six sections a
reader can hold in their head: data, model, augmentation, optimisation, evaluation and run
(`config.section("optimisation")`, `medcls config`). Config files may use either form.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from medcls.errors import ConfigError

SECTIONS = ("data", "model", "augmentation", "optimisation", "evaluation", "run")


def option(default, help: str, section: str, *, factory=None):
    """A config field with its one-line meaning and its section (shown by `medcls config`)."""
    metadata = {"help": help, "section": section}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything a run needs, with a commented default per key. Built directly, by `make_config`
    (files and flags) or by `medcls.train(**keys)`; invalid values raise ConfigError at once."""

    # --- data: what is read, how it is split and preprocessed ---
    data: str = option("synthetic", "folder, CSV/TSV manifest, .npz, or 'synthetic' (built-in phantoms)", 'data')
    format: str = option("auto", 'dataset layout name (see `medcls list datasets`); auto-detected by default', 'data')
    path_column: str = option("path", 'manifest column holding the image file', 'data')
    label_column: str = option("label", 'manifest column holding the class', 'data')
    label_columns: str | None = option(None, "multi-label: comma-separated manifest columns, one finding each (1 present, 0 absent, -1 uncertain, blank)", 'data')
    multi_label: bool = option(False, "multi-label: the label column holds '|'-separated findings ('No Finding': none); implied by label_columns and by (N, L) npz labels", 'data')
    uncertain: str = option("ignore", "multi-label: what an uncertain (-1) finding means: positive, negative or ignore (left out of loss and metrics), then per-finding overrides, e.g. 'ignore, Edema=positive'", 'data')
    blank_findings: str = option("negative", "multi-label: what a blank (not mentioned) finding means, same form as uncertain (CheXpert practice: negative)", 'data')
    tasks: str | None = option(None, "multi-task: more heads on the backbone, each predicting a manifest column, 'COLUMN:KIND[:WEIGHT], ...' with KIND binary, multiclass or regression, e.g. 'Age:regression:0.5'", 'data')
    patient_column: str | None = option(None, "manifest column holding the patient id ('patient_id' if present)", 'data')
    split_column: str | None = option(None, "manifest column holding train/val/test ('split' if present)", 'data')
    image_root: str | None = option(None, "folder manifest paths are relative to (default: the manifest's folder)", 'data')
    patient_pattern: str | None = option(None, "a regular expression searched in each image's path (relative to the data, '/'-separated): its first group, else the whole match, is the patient id, e.g. 'patient\\d+' (CheXpert's patientXXXX/studyY/) or '^(\\d+)_' (NIH's 00001234_000.png); never printed", 'data')
    patient_from_dicom: bool = option(False, "group images by the DICOM header's PatientID (never printed)", 'data')
    positive_class: str | None = option(None, 'binary tasks: the class called positive (default: the other of a pair where one name means negative: normal, no, benign, ...)', 'data')
    val_fraction: float = option(0.15, 'share of patients held out for validation when the data has no split', 'data')
    test_fraction: float = option(0.15, 'share of patients held out for testing when the data has no split', 'data')
    strict: bool = option(False, 'fail on the first unreadable image instead of skipping and listing it', 'data')
    window: str = option("header", "DICOM intensity window: header, a preset (brain, lung, soft_tissue, ...) or 'centre,width'", 'data')
    image_size: int | str = option("auto", "images are resized to image_size x image_size; 'auto': the source images' shorter side, at least 64 and at most 224 px (medcls.data.loading.auto_image_size; why: examples/README.md)", 'data')
    crop_foreground: bool = option(False, "2D: cut each image to the box around its object (pixels above a tenth of its range) before resizing, so black borders and the air around a head take no pixels; kept with the model, so evaluate, predict and export crop alike", 'data')
    volume_size: str = option("auto", "3D backbones: the training grid in voxels, one number (a cube) or z,y,x; 'auto': from the source volumes' grid, never upsampled, at most 64 (medcls.data.loading.auto_volume_size)", 'data')
    slices: int = option(0, '2.5D: a 2D backbone reads volumes slice by slice with this many adjacent slices as channels (odd, e.g. 3); 0: off', 'data')
    slice_pooling: str = option("mean", '2.5D: per-slice features to one per volume: mean, max or attention', 'data')
    acs: bool = option(False, 'ACS: a 2D backbone reads volumes in 3D, each 2D kernel split across axial, coronal and sagittal views, its 2D (ImageNet) weights kept (medcls.core.acs)', 'data')
    volume_spacing: str | None = option(None, '3D: resample to this spacing in mm (one number or z,y,x), then centre-crop/pad; None: resize the whole volume', 'data')
    channels: str = option("auto", "'auto' (1 if every image is greyscale, else 3), '1' or '3'", 'data')
    # --- model: the backbone and its new head ---
    backbone: str = option("efficientnet_lite0", "any registered backbone (`medcls list backbones`); the default's ImageNet weights install with the medcls-efficientnet-lite plugin, so it trains pretrained offline", 'model')
    pretrained: bool | None = option(None, 'None: pretrained when the backbone has weights (timm: yes, MONAI 3D: none exist); True fails, never falls back, if they are unavailable', 'model')
    weights: str | None = option(None, 'a .safetensors file with backbone weights, tried before any source', 'model')
    dropout: float = option(0.3, 'dropout before the new classification head', 'model')
    backbone_args: dict = option(None, "keyword arguments for the backbone's constructor, e.g. {drop_path_rate: 0.1}", 'model', factory=dict)
    # --- augmentation: what training batches look like ---
    policy: str = option("interpretable", 'augmentation policy for training batches (`medcls list policies`)', 'augmentation')
    aug: dict = option(None, "overrides of the policy's parameters, e.g. {rotate_deg: 5}", 'augmentation', factory=dict)
    stage1_augment: bool = option(True, 'stage 1 (frozen backbone, new head) sees augmented images; false: a linear probe on features computed once (LP-FT, Kumar et al. 2022), stage 2 augments as set', 'augmentation')
    laterality_sensitive: bool = option(False, 'left and right differ (chest X-ray): policies that flip left-right are refused', 'augmentation')
    allow_lr_flip: bool = option(False, 'override that refusal, knowingly', 'augmentation')
    # --- optimisation: the two-stage recipe and its optimiser ---
    epochs: int = option(10, 'stage-1 epochs (head only, backbone frozen; all layers if not pretrained)', 'optimisation')
    lr: float = option(1e-3, 'stage-1 learning rate', 'optimisation')
    feature_cache: bool = option(True, 'without augmentation, stage 1 trains the head on backbone features computed once', 'optimisation')
    finetune_epochs: int = option(20, "stage-2 epochs, a cosine schedule over all of them that patience usually ends sooner (why 20: examples/README.md); 0 turns stage 2 off", 'optimisation')
    unfreeze_blocks: int = option(-1, 'how many top blocks stage 2 unfreezes (-1: all; why: examples/README.md)', 'optimisation')
    finetune_batchnorm: str = option("frozen", "stage 2: a pretrained backbone's batch norm in the unfrozen blocks: frozen (its ImageNet running statistics, inference mode) or train (batch statistics while training; precise_bn recomputes the running ones before each validation)", 'optimisation')
    finetune_lr_factor: float = option(0.1, 'stage-2 learning rate = lr x this', 'optimisation')
    collapse_restarts: int = option(2, "times a stage whose validation ROC AUC falls to chance (within 0.03 of 0.5, after 0.65 or more) starts again from the best weights, at 0.3 of its rate (0.09 the second time) (why: examples/README.md); 0: never", 'optimisation')
    optimizer: str = option("adamw", 'adamw, sgd (momentum, Nesterov) or rmsprop', 'optimisation')
    momentum: float = option(0.9, 'for sgd and rmsprop', 'optimisation')
    weight_decay: float = option(1e-4, 'AdamW/SGD/RMSprop weight decay', 'optimisation')
    schedule: str = option("cosine", 'cosine, step, plateau or none (per stage)', 'optimisation')
    batch_size: int = option(32, 'images per training step', 'optimisation')
    epoch_size: int = option(8192, "at most this many training images per epoch: a larger training set gives each epoch a fresh random share of it (drawn as the whole set would be: shuffled, or by the class-balancing sampler), so validation, early stopping and the schedule come as often as on a set of this size and a run's length stops growing with the set; a set of up to this many training images trains as with whole epochs (why 8192: examples/README.md); 0: the whole set every epoch", 'optimisation')
    class_balance: str = option("weighted_loss", 'weighted_loss, sampler or none', 'optimisation')
    patience: int = option(5, "epochs without improvement on the stage's own best before the stage stops early (0: never); the run keeps its best weights of all stages", 'optimisation')
    warmup_epochs: int = option(0, 'epochs of linear learning-rate warm-up (from a tenth) at the start of each stage', 'optimisation')
    lr_decay: float = option(1.0, 'layer-wise learning-rate decay: the top unfrozen block trains at lr x lr_decay, the next at lr x lr_decay^2, ...; the head at lr (1: off)', 'optimisation')
    precise_bn: int = option(2048, "batch norm that trains (from scratch; never a pretrained backbone's) has its running statistics recomputed on up to this many clean training images before each validation, with the weights as they are (precise BN, Wu & Johnson 2021; why: examples/README.md); 0: off", 'optimisation')
    ema: float = option(0.0, 'exponential moving average of the weights, this decay per step (e.g. 0.999): evaluated, kept and saved instead of the raw weights (0: off)', 'optimisation')
    task_weighting: str = option("fixed", "multi-task: fixed (main loss + each task's weight x its loss) or uncertainty (weights learned per task, Kendall et al. 2018)", 'optimisation')
    label_smoothing: float = option(0.0, 'label smoothing of the cross-entropy loss (e.g. 0.1)', 'optimisation')
    mixup: float = option(0.0, 'mixup: Beta(alpha, alpha) mixing of training images and labels, this alpha (e.g. 0.2; 0: off)', 'optimisation')
    cutmix: float = option(0.0, 'cutmix: a box of another training image pasted in, Beta(alpha, alpha) area (e.g. 1.0; 0: off); with mixup, each batch uses one of the two', 'optimisation')
    # --- evaluation: early stopping, the operating point, calibration and reporting ---
    monitor: str = option("roc_auc", 'validation metric for early stopping and the best checkpoint (ties: the lower validation loss wins)', 'evaluation')
    threshold_rule: str = option("youden", 'operating point chosen on validation: youden, target_sensitivity, target_specificity, confident_sensitivity (reaches the target with 95 % confidence), confident_specificity, fixed', 'evaluation')
    target: float = option(0.95, 'the sensitivity or specificity that target_* rules must reach on validation', 'evaluation')
    threshold: float = option(0.5, "the operating point when threshold_rule is 'fixed'", 'evaluation')
    prior_correction: bool = option(True, "class-balanced training (weighted_loss or sampler): the model's probabilities are moved back to the training prior (logits minus log class weight, folded into the head), so they are calibrated and the most probable class is the accurate choice; false: keep the balanced model's probabilities", 'evaluation')
    calibration: str = option("none", 'none, or temperature (scaling fitted on validation, stored with the model)', 'evaluation')
    prevalence: float | None = option(None, 'also report PPV and NPV at this deployment prevalence', 'evaluation')
    patient_level: str | None = option(None, "also score per patient: mean or max of a patient's image scores", 'evaluation')
    by: str | None = option(None, 'manifest column for a subgroup table (site, sex, scanner, ...)', 'evaluation')
    bootstrap: int = option(2000, 'bootstrap resamples for intervals (seeded by `seed`)', 'evaluation')
    abstain_coverage: float | None = option(0.95, "split-conformal prediction sets fitted on validation that hold the true class with this probability per class; a case whose set is not one class is referred (predict says so); none: off", 'evaluation')
    # --- run: seeds, devices, caching, ensembles, cross-validation and the run folder ---
    ensemble: int = option(0, 'train N members (bagging) and report their averaged probabilities beside them; 0: one model', 'run')
    bagging: bool = option(True, 'ensemble members train on bootstrap resamples of the training patients (else all of them)', 'run')
    ensemble_backbones: str | None = option(None, 'comma-separated backbones the members cycle through (default: backbone)', 'run')
    folds: int = option(0, 'cross-validation: K folds by patient, a run per fold and pooled out-of-fold metrics; 0: one split', 'run')
    seed: int = option(0, 'one seed for splits, initialisation, augmentation and batch order', 'run')
    split_seed: int | None = option(None, 'a separate seed for the split only (experiments hold the split fixed)', 'run')
    deterministic: bool = option(False, 'also ask PyTorch for deterministic kernels (slower on GPU)', 'run')
    device: str = option("auto", 'auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps', 'run')
    precision: str = option("auto", 'auto (bf16 on CUDA and on CPUs with native bf16 unless depthwise-heavy), fp32, bf16, fp16', 'run')
    channels_last: bool | None = option(None, 'None: on for 2D convolutional models on CUDA and CPU', 'run')
    decode_while_training: bool | None = option(None, 'Training starts once its first batches are decoded and the rest decode meanwhile. None: on when training on a GPU (the CPU is free while it computes), off on CPU (decoder and model share the cores: overlapping them only added contention, 0.90x on 100 CT slices).', 'run')
    cache: str = option("disk", 'disk: decoded images also kept on disk by content (later runs skip decoding); memory', 'run')
    cache_dir: str | None = option(None, 'the disk cache (default $MEDCLS_CACHE_DIR or ~/.cache/medcls); safe to share', 'run')
    workers: int = option(-1, 'loader processes; -1: none for batched policies (augmented on the device), else one', 'run')
    figures: bool = option(True, "draw the report's figures (PNG, an SVG beside each); false leaves them out of the report, for quick sweeps and checks", 'run')
    loggers: str | None = option(None, 'experiment trackers the run reports to, comma-separated: csv, tensorboard, mlflow (`medcls list loggers`)', 'run')
    out: str | None = option(None, 'run folder (default runs/<backbone>-<date>-<time>); an existing run is never overwritten', 'run')
    overwrite: bool = option(False, 'allow --out to name a folder that already holds a run', 'run')
    resume: bool = option(False, 'continue the interrupted run in `out` from its last checkpoint (set by --resume)', 'run')

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def section(self, name: str) -> MappingProxyType:
        """The keys of one section and their values (read-only), for the layer that needs only them."""
        if name not in SECTIONS:
            raise ConfigError(f"unknown config section {name!r}: choose one of {', '.join(SECTIONS)}")
        return MappingProxyType({k: getattr(self, k) for k, f in FIELDS.items() if f.metadata["section"] == name})


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
CHOICES = {
    "channels": ("auto", "1", "3"),
    "slice_pooling": ("mean", "max", "attention"),
    "optimizer": ("adamw", "sgd", "rmsprop"),
    "finetune_batchnorm": ("frozen", "train"),
    "schedule": ("cosine", "step", "plateau", "none"),
    "class_balance": ("weighted_loss", "sampler", "none"),
    "threshold_rule": ("youden", "target_sensitivity", "target_specificity", "confident_sensitivity",
                       "confident_specificity", "fixed"),
    "calibration": ("none", "temperature"),
    "task_weighting": ("fixed", "uncertainty"),
    "patient_level": ("mean", "max"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "cache": ("disk", "memory"),
}
# (low, high, low inclusive, high inclusive); None: unbounded on that side.
RANGES = {
    "val_fraction": (0.0, 1.0, True, False),
    "test_fraction": (0.0, 1.0, True, False),
    "image_size": (8, 4096, True, True),
    "slices": (0, 63, True, True),
    "dropout": (0.0, 1.0, True, False),
    "epochs": (0, None, True, True),
    "lr": (0.0, 10.0, False, True),
    "finetune_epochs": (0, None, True, True),
    "unfreeze_blocks": (-1, None, True, True),
    "finetune_lr_factor": (0.0, 100.0, False, True),
    "collapse_restarts": (0, None, True, True),
    "momentum": (0.0, 1.0, True, False),
    "weight_decay": (0.0, 10.0, True, True),
    "batch_size": (1, 65536, True, True),
    "epoch_size": (0, None, True, True),
    "patience": (0, None, True, True),
    "precise_bn": (0, None, True, True),
    "warmup_epochs": (0, None, True, True),
    "lr_decay": (0.0, 1.0, False, True),
    "ema": (0.0, 1.0, True, False),
    "label_smoothing": (0.0, 1.0, True, False),
    "mixup": (0.0, None, True, True),
    "cutmix": (0.0, None, True, True),
    "target": (0.0, 1.0, False, False),
    "threshold": (0.0, 1.0, True, True),
    "prevalence": (0.0, 1.0, False, False),
    "abstain_coverage": (0.0, 1.0, False, False),
    "bootstrap": (20, 1_000_000, True, True),  # tests use few; reports want 2,000
    "ensemble": (0, 1000, True, True),
    "folds": (0, 1000, True, True),
    "seed": (0, 2**63 - 1, True, True),
    "split_seed": (0, 2**63 - 1, True, True),
    "workers": (-1, 1024, True, True),
}
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def type_error(key: str, value: Any) -> str | None:
    """Why `value` does not fit the type of `key`, or None."""
    hint = str(FIELDS[key].type)  # annotations are strings here: "int", "str | None", ...
    if value is None:
        return None if "None" in hint else "a value is required"
    if hint.startswith("bool"):
        return None if isinstance(value, bool) else "expected true or false"
    if hint.startswith("int | str"):
        return None if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)) else \
            "expected a whole number or 'auto'"
    if hint.startswith("int"):
        return None if isinstance(value, int) and not isinstance(value, bool) else "expected a whole number"
    if hint.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "expected a number"
        return None if math.isfinite(value) else "expected a finite number"
    if hint.startswith("dict"):
        return None if isinstance(value, dict) else "expected a table of name: value"
    return None if isinstance(value, str) else "expected text"


def validate(config: TrainConfig, where: str = "config") -> None:
    """Every key's type, choice and range, then the rules that tie keys together."""
    def fail(key, value, why):
        raise ConfigError(f"{where}: {key} = {value!r} is invalid: {why}")

    for key in FIELDS:
        value = getattr(config, key)
        why = type_error(key, value)
        if why:
            fail(key, value, why)
        if isinstance(value, int) and not isinstance(value, bool) and str(FIELDS[key].type).startswith("float"):
            setattr(config, key, float(value))
        if value is None:
            continue
        if key in CHOICES and value not in CHOICES[key]:
            fail(key, value, f"choose one of {', '.join(CHOICES[key])}")
        if key in RANGES and not isinstance(value, str):
            low, high, low_in, high_in = RANGES[key]
            if (low is not None and (value < low or (value == low and not low_in))) or \
                    (high is not None and (value > high or (value == high and not high_in))):
                fail(key, value, f"must be {'at least' if low_in else 'above'} {low}"
                     + ("" if high is None else f" and {'at most' if high_in else 'below'} {high}"))
    if config.val_fraction + config.test_fraction >= 1:
        raise ConfigError(f"{where}: val_fraction + test_fraction = {config.val_fraction + config.test_fraction:g} "
                          "leaves no training data: keep their sum below 1")
    if config.epochs == 0 and config.finetune_epochs == 0:
        raise ConfigError(f"{where}: epochs = 0 and finetune_epochs = 0 train nothing: give at least one epoch")
    if config.patient_pattern is not None:
        try:
            re.compile(config.patient_pattern)
        except re.error as exc:
            fail("patient_pattern", config.patient_pattern, f"not a regular expression ({exc})")
        if config.patient_column or config.patient_from_dicom:
            raise ConfigError(f"{where}: patient_pattern and {'patient_column' if config.patient_column else 'patient_from_dicom'}"
                              " both name the patient: choose one")
    if config.slices and config.slices % 2 == 0:
        fail("slices", config.slices, "the number of adjacent slices must be odd (1, 3, 5, ...), or 0 for off")
    if config.slices and config.acs:
        raise ConfigError(f"{where}: slices (2.5D) and acs (3D convolutions) are two ways to read volumes with a 2D "
                          "backbone: choose one")
    if config.crop_foreground and (config.slices or config.acs):
        raise ConfigError(f"{where}: crop_foreground cuts 2D images; volumes read by slices or acs are cropped by "
                          "volume_spacing: drop crop_foreground")
    if config.folds == 1:
        fail("folds", config.folds, "cross-validation needs at least 2 folds (0 turns it off)")
    if config.ensemble == 1:
        fail("ensemble", config.ensemble, "an ensemble needs at least 2 members (0 turns it off)")
    if config.folds and config.ensemble:
        raise ConfigError(f"{where}: folds and ensemble cannot be combined: choose one")
    if not DEVICE.match(config.device):
        fail("device", config.device, "use auto, cpu, cuda, cuda:N or mps")
    for key in ("volume_size", "volume_spacing"):
        value = getattr(config, key)
        if value is None or (key == "volume_size" and value == "auto"):
            continue
        parts = [p.strip() for p in str(value).split(",")]
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            numbers = []
        if len(parts) not in (1, 3) or len(numbers) != len(parts) or not all(math.isfinite(n) and n > 0 for n in numbers):
            fail(key, value, "give one positive number or three (z,y,x), e.g. 64 or 32,128,128"
                 + (", or auto" if key == "volume_size" else ""))
        if key == "volume_size" and not all(n.is_integer() for n in numbers):
            fail(key, value, "voxel counts are whole numbers")
    if config.label_columns is not None:
        names = [n.strip() for n in config.label_columns.split(",")]
        if len(names) < 1 or not all(names) or len(set(names)) != len(names):
            fail("label_columns", config.label_columns, "give distinct column names separated by commas, e.g. "
                 "Atelectasis,Edema,Effusion")
    for key in ("uncertain", "blank_findings"):
        for item in getattr(config, key).split(","):
            policy = item.rpartition("=")[2].strip().lower()
            if item.strip() and policy not in ("positive", "negative", "ignore"):
                fail(key, getattr(config, key), f"{policy!r} is not positive, negative or ignore; give a policy, "
                     "then per-finding overrides: 'ignore, Edema=positive'")
    for key, value in config.backbone_args.items():
        if not isinstance(key, str) or not key.isidentifier() or not isinstance(value, (bool, int, float, str)) \
                or (isinstance(value, float) and not math.isfinite(value)):
            raise ConfigError(f"{where}: backbone_args {key} = {value!r} is invalid: give name = number, text or "
                              "true/false")
    for key, value in config.aug.items():
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ConfigError(f"{where}: aug {key} = {value!r} is invalid: policy parameters are numbers "
                              "(see `medcls list policies -v`)")


def read_config_file(path: str | Path) -> dict:
    """A YAML or TOML file's keys, flat or in sections (a top-level [train] table is accepted too)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{path}' is not UTF-8 text: save it as UTF-8") from None
    try:
        if path.suffix.lower() == ".toml":
            values = tomllib.loads(text)  # TOML itself refuses a key given twice
        else:
            values = yaml_without_duplicates(text, path) or {}
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"config file '{path}' cannot be parsed: {str(exc).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{path}' must hold key: value pairs")
    if set(values) == {"train"} and isinstance(values["train"], dict):
        values = values["train"]
    flat = flatten_sections(values, f"config file '{path}'")
    if path.suffix.lower() == ".toml":
        quoted_numbers(flat, path)
    return flat


def yaml_without_duplicates(text: str, path: Path):
    """YAML, refusing a key given twice in one mapping (PyYAML would keep the last without a word)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise ConfigError(f"config file '{path}': key {key!r} is given twice (lines {seen[key] + 1} and "
                                      f"{key_node.start_mark.line + 1}): keep one")
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)


def quoted_numbers(values: dict, path: Path) -> None:
    """TOML says what is text and what is a number: `lr = "0.001"` is text where a number belongs,
    refused rather than read as a number (YAML, whose unquoted 1e-3 is text, is read as the CLI reads flags)."""
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS or not isinstance(value, str):
            continue
        hint = str(FIELDS[name].type)
        if hint.startswith(("int", "float", "bool")) and not (hint.startswith("int | str") and value == "auto"):
            kind = "true or false" if hint.startswith("bool") else "a number"
            raise ConfigError(f"config file '{path}': {name} = {value!r} is text where {kind} belongs: write it "
                              f"without quotes ({name} = {value})")


def flatten_sections(values: dict, where: str) -> dict:
    """`optimisation: {lr: 0.01}` read as `lr: 0.01`; a key in the wrong section is an error."""
    flat = {}
    for key, value in values.items():
        if key in SECTIONS and key not in FIELDS and isinstance(value, dict):
            for inner, inner_value in value.items():
                name = str(inner).replace("-", "_")
                if name in FIELDS and FIELDS[name].metadata["section"] != key:
                    raise ConfigError(f"{where}: {name!r} belongs to section {FIELDS[name].metadata['section']!r}, "
                                      f"not {key!r}")
                flat[inner] = inner_value
        else:
            flat[key] = value
    return flat


def make_config(file_values: dict | None = None, overrides: dict | None = None, *, where: str = "config") -> TrainConfig:
    """Defaults, then the config file, then flags; unknown keys and bad values are errors."""
    values = {}
    for source, given in ((where, file_values or {}), ("flags", overrides or {})):
        for key, value in given.items():
            key = str(key).replace("-", "_")
            if key not in FIELDS:
                close = difflib.get_close_matches(key, FIELDS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{source}: unknown key {key!r}{hint}; `medcls config` lists the keys")
            values[key] = coerce(key, value, source)
    return TrainConfig(**values)


def coerce(key: str, value: Any, source: str) -> Any:
    """A value from a file or a flag (text, YAML scalars) in the key's type, with a clear error."""
    hint = str(FIELDS[key].type)
    try:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~")
                             and "None" in hint):
            if "None" not in hint:
                raise ValueError("a value is required")
            return None
        if hint.startswith("bool"):
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError("expected true or false")
                return lowered in ("true", "1", "yes")
            if isinstance(value, bool) or value in (0, 1):
                return bool(value)
            raise ValueError("expected true or false")
        if hint.startswith("int | str") and isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        if hint.startswith("int"):
            if isinstance(value, bool):
                raise ValueError("expected a whole number")
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("expected a whole number")
            try:
                return int(value)
            except ValueError:  # int()'s own words name Python's literal syntax, not the fix
                auto = " or 'auto'" if hint.startswith("int | str") else ""
                raise ValueError(f"expected a whole number{auto}") from None
        if hint.startswith("float"):
            if isinstance(value, bool):
                raise ValueError("expected a number")
            try:
                number = float(value)
            except ValueError:
                raise ValueError("expected a number (e.g. 0.001 or 1e-3)") from None
            if not math.isfinite(number):
                raise ValueError("expected a finite number")
            return number
        if hint.startswith("dict"):
            if not isinstance(value, dict):
                raise ValueError("expected a table of name: value")
            return dict(value)
        if isinstance(value, (dict, list)):
            raise ValueError("expected text")
        value = str(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"{source}: {key} = {value!r} is invalid: {exc}") from None
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{source}: {key} = {value!r} is invalid: choose one of {', '.join(CHOICES[key])}")
    return value


def describe_keys() -> list[dict]:
    """Every key with its section, type, default and meaning (`medcls config` prints them)."""
    rows = []
    for name, f in FIELDS.items():
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        rows.append({"key": name, "section": f.metadata["section"], "type": str(f.type), "default": default,
                     "help": f.metadata["help"], "choices": CHOICES.get(name)})
    return rows


def save_config(config: TrainConfig, path: Path) -> None:
    import yaml

    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
