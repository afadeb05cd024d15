"""The typed run configuration: config files (YAML/TOML) and CLI flags fill the same object."""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcls.errors import ConfigError


@dataclass
class TrainConfig:
    # --- data ---
    data: str = "synthetic"  # folder, CSV/TSV manifest, .npz, or 'synthetic' (built-in phantoms)
    format: str = "auto"  # dataset layout name (see `medcls list datasets`); auto-detected by default
    path_column: str = "path"  # manifest column holding the image file
    label_column: str = "label"  # manifest column holding the class
    patient_column: str | None = None  # manifest column holding the patient id ('patient_id' if present)
    split_column: str | None = None  # manifest column holding train/val/test ('split' if present)
    image_root: str | None = None  # folder manifest paths are relative to (default: the manifest's folder)
    patient_from_dicom: bool = False  # group images by the DICOM header's PatientID (never printed)
    positive_class: str | None = None  # binary tasks: the class called positive (default: the last name)
    val_fraction: float = 0.15  # share of patients held out for validation when the data has no split
    test_fraction: float = 0.15  # share of patients held out for testing when the data has no split
    strict: bool = False  # fail on the first unreadable image instead of skipping and listing it
    # --- preprocessing ---
    window: str = "header"  # DICOM intensity window: header, a preset (brain, lung, soft_tissue, ...) or 'centre,width'
    image_size: int = 224  # images are resized to image_size x image_size
    volume_size: str = "64"  # 3D backbones: the training grid in voxels, one number (a cube) or z,y,x
    slices: int = 0  # 2.5D: a 2D backbone reads volumes slice by slice with this many adjacent slices as channels (odd, e.g. 3); 0: off
    slice_pooling: str = "mean"  # 2.5D: per-slice features to one per volume: mean, max or attention
    volume_spacing: str | None = None  # 3D: resample to this spacing in mm (one number or z,y,x), then centre-crop/pad; None: resize the whole volume
    channels: str = "auto"  # 'auto' (1 if every image is greyscale, else 3), '1' or '3'
    # --- model ---
    backbone: str = "resnet50"  # any registered backbone (`medcls list backbones`)
    pretrained: bool | None = None  # None: pretrained when the backbone has weights (timm: yes, MONAI 3D: none exist); True fails, never falls back, if they are unavailable
    weights: str | None = None  # a .safetensors file with backbone weights, tried before any source
    dropout: float = 0.3  # dropout before the new classification head
    # --- augmentation ---
    policy: str = "interpretable"  # augmentation policy for training batches (`medcls list policies`)
    aug: dict = field(default_factory=dict)  # overrides of the policy's parameters, e.g. {rotate_deg: 5}
    laterality_sensitive: bool = False  # left and right differ (chest X-ray): policies that flip left-right are refused
    allow_lr_flip: bool = False  # override that refusal, knowingly
    # --- stage 1: frozen backbone, new head ---
    epochs: int = 10  # stage-1 epochs (head only, backbone frozen; all layers if not pretrained)
    lr: float = 1e-3  # stage-1 learning rate
    feature_cache: bool = True  # without augmentation, stage 1 trains the head on backbone features computed once
    # --- stage 2: fine-tune the top blocks ---
    finetune_epochs: int = 10  # stage-2 epochs; 0 turns stage 2 off
    unfreeze_blocks: int = 2  # how many top blocks stage 2 unfreezes (-1: all)
    finetune_lr_factor: float = 0.1  # stage-2 learning rate = lr x this
    # --- optimisation ---
    optimizer: str = "adamw"  # adamw, sgd (momentum, Nesterov) or rmsprop
    momentum: float = 0.9  # for sgd and rmsprop
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine, step, plateau or none (per stage)
    batch_size: int = 32
    class_balance: str = "weighted_loss"  # weighted_loss, sampler or none
    monitor: str = "roc_auc"  # validation metric for early stopping and the best checkpoint
    patience: int = 5  # epochs without improvement before a stage stops early (0: never)
    threshold_rule: str = "youden"  # operating point chosen on validation: youden, target_sensitivity, target_specificity, fixed
    target: float = 0.95  # the sensitivity or specificity that target_* rules must reach on validation
    threshold: float = 0.5  # the operating point when threshold_rule is 'fixed'
    calibration: str = "none"  # none, or temperature (scaling fitted on validation, stored with the model)
    # --- reporting ---
    prevalence: float | None = None  # also report PPV and NPV at this deployment prevalence
    patient_level: str | None = None  # also score per patient: mean or max of a patient's image scores
    by: str | None = None  # manifest column for a subgroup table (site, sex, scanner, ...)
    bootstrap: int = 2000  # bootstrap resamples for intervals (seeded by `seed`)
    # --- run ---
    ensemble: int = 0  # train N members (bagging) and report their averaged probabilities beside them; 0: one model
    bagging: bool = True  # ensemble members train on bootstrap resamples of the training patients (else all of them)
    ensemble_backbones: str | None = None  # comma-separated backbones the members cycle through (default: backbone)
    folds: int = 0  # cross-validation: K folds by patient, a run per fold and pooled out-of-fold metrics; 0: one split
    seed: int = 0  # one seed for splits, initialisation, augmentation and batch order
    split_seed: int | None = None  # a separate seed for the split only (experiments hold the split fixed)
    deterministic: bool = False  # also ask PyTorch for deterministic kernels (slower on GPU)
    device: str = "auto"  # auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps
    precision: str = "auto"  # auto (bf16 on CUDA and on CPUs with native bf16 unless depthwise-heavy), fp32, bf16, fp16
    channels_last: bool | None = None  # None: on for 2D convolutional models on CUDA and CPU
    # Training starts once its first batches are decoded and the rest decode meanwhile. None: on when
    # training on a GPU (the CPU is free while it computes), off on CPU (decoder and model share the
    # cores: overlapping them only added contention, 0.90x on 100 CT slices).
    decode_while_training: bool | None = None
    cache: str = "disk"  # disk: decoded images also kept on disk by content (later runs skip decoding); memory
    cache_dir: str | None = None  # the disk cache (default $MEDCLS_CACHE_DIR or ~/.cache/medcls); safe to share
    workers: int = -1  # loader processes; -1: none for batched policies (augmented on the device), else one
    out: str | None = None  # run folder (default runs/<backbone>-<date>-<time>); an existing run is never overwritten
    overwrite: bool = False  # allow --out to name a folder that already holds a run
    resume: bool = False  # continue the interrupted run in `out` from its last checkpoint (set by --resume)

    def data_options(self, readers=None):
        from medcls.data.cases import DataOptions

        return DataOptions(
            path_column=self.path_column, label_column=self.label_column,
            patient_column=self.patient_column, split_column=self.split_column,
            image_root=self.image_root, patient_from_dicom=self.patient_from_dicom, readers=readers,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
CHOICES = {
    "channels": ("auto", "1", "3"),
    "optimizer": ("adamw", "sgd", "rmsprop"),
    "schedule": ("cosine", "step", "plateau", "none"),
    "class_balance": ("weighted_loss", "sampler", "none"),
    "threshold_rule": ("youden", "target_sensitivity", "target_specificity", "fixed"),
    "calibration": ("none", "temperature"),
    "patient_level": ("mean", "max"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "cache": ("disk", "memory"),
    "slice_pooling": ("mean", "max", "attention"),
}


def read_config_file(path: str | Path) -> dict:
    """A YAML or TOML file's keys (a top-level [train] table is accepted too)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            values = tomllib.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text) or {}
    except Exception as exc:
        raise ConfigError(f"config file '{path}' cannot be parsed: {str(exc).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{path}' must hold key: value pairs")
    if set(values) == {"train"} and isinstance(values["train"], dict):
        values = values["train"]
    return values


def make_config(file_values: dict | None = None, overrides: dict | None = None, *, where: str = "config") -> TrainConfig:
    """Defaults, then the config file, then flags; unknown keys and bad values are errors."""
    values = {}
    for source, given in ((where, file_values or {}), ("flags", overrides or {})):
        for key, value in given.items():
            key = key.replace("-", "_")
            if key not in FIELDS:
                close = difflib.get_close_matches(key, FIELDS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{source}: unknown key {key!r}{hint}; see `medcls train --help` for the keys")
            values[key] = coerce(key, value, source)
    return TrainConfig(**values)


def coerce(key: str, value: Any, source: str) -> Any:
    hint = str(FIELDS[key].type)  # annotations are strings here: "int", "str | None", ...
    try:
        if value is None:
            if "None" not in hint:
                raise ValueError("a value is required")
            return None
        if hint.startswith("bool"):
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError("expected true or false")
                return lowered in ("true", "1", "yes")
            return bool(value)
        if hint.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("expected a whole number")
            return int(value)
        if hint.startswith("float"):
            return float(value)
        if hint.startswith("dict"):
            if not isinstance(value, dict):
                raise ValueError("expected a table of name: value")
            return dict(value)
        value = str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {key} = {value!r} is invalid: {exc}") from None
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{source}: {key} = {value!r} is invalid: choose one of {', '.join(CHOICES[key])}")
    return value


def save_config(config: TrainConfig, path: Path) -> None:
    import yaml

    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
