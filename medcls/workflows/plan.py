"""The plan: a fingerprint of the data (images, patients, classes and their balance, native size,
2D or 3D, a split of its own) and the setting of every recipe key with the reason for it.

A key the user set is the user's; a key with a rule ('auto' sizes) takes the rule's value with
the figures it came from; every other key is today's default, which changes only by the recipe
suite's rule (benchmarks/suite.py, docs/benchmarks.md "Changing a default"). Warnings name what
the fingerprint says the recipe cannot do well (a validation split too small to choose on).
`medcls plan DATA` prints it before any image is decoded; `medcls train` writes it to plan.json.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcls.config import TrainConfig
from medcls.data.cases import Case
from medcls.data.loading import AUTO_LARGEST, AUTO_SMALLEST, load_cases, sampled, sizes_from_sources, source_side

# The keys a plan sets: what a recipe is made of (data-describing keys are the user's).
RECIPE = ("backbone", "backbone_args", "pretrained", "image_size", "volume_size", "policy", "epochs", "lr", "finetune_epochs",
          "unfreeze_blocks", "finetune_lr_factor", "batch_size", "patience", "dropout", "ensemble", "bagging",
          "threshold_rule", "val_fraction", "test_fraction")
SMALL_VALIDATION = 100  # images: below this, choosing an epoch and a threshold on validation is noisy


@dataclass(frozen=True)
class Fingerprint:
    """What the data is, from its listing and file headers (no pixels decoded)."""

    images: int
    patients: int | None  # None: no patient ids (each image its own patient)
    classes: dict  # name -> images
    multi_label: bool
    dims: int  # 2 (images) or 3 (volumes)
    short_side: tuple | None  # median, smallest, largest shorter side in pixels (2D), from a sample
    own_split: dict | None  # split -> images, when the data fixes its split

    @property
    def minority_share(self) -> float:
        counts = list(self.classes.values())
        return min(counts) / sum(counts) if counts and sum(counts) else 0.0

    def lines(self) -> list[str]:
        balance = ", ".join(f"{name} {count}" for name, count in self.classes.items())
        lines = [f"images: {self.images}" + ("" if self.patients is None else f" of {self.patients} patients"
                                             f" ({self.images / self.patients:.1f} a patient)"),
                 f"classes: {len(self.classes)} ({balance}){'; multi-label' if self.multi_label else ''}; "
                 f"smallest share {self.minority_share:.2f}",
                 f"data: {self.dims}D" + ("" if self.short_side is None else
                                         f", shorter side median {self.short_side[0]} px "
                                         f"(range {self.short_side[1]}-{self.short_side[2]})")]
        if self.own_split:
            lines.append("split given by the data: " + ", ".join(f"{s} {n}" for s, n in self.own_split.items()))
        return lines


@dataclass(frozen=True)
class Choice:
    key: str
    value: object
    by: str  # "you", "rule" or "default"
    reason: str


@dataclass(frozen=True)
class Plan:
    fingerprint: Fingerprint
    choices: tuple
    warnings: tuple

    def __getitem__(self, key: str) -> Choice:
        return next(c for c in self.choices if c.key == key)

    def to_json(self) -> dict:
        return {"fingerprint": dataclasses.asdict(self.fingerprint),
                "choices": [dataclasses.asdict(c) for c in self.choices], "warnings": list(self.warnings)}

    def lines(self) -> list[str]:
        lines = ["Fingerprint", *(f"  {line}" for line in self.fingerprint.lines()), "", "Plan"]
        width = max(len(c.key) for c in self.choices)
        shown = max(len(str(c.value)) for c in self.choices)
        lines += [f"  {c.key:<{width}}  {c.value!s:<{shown}}  {c.by:<7} {c.reason}" for c in self.choices]
        lines += ["  (a default changes only by the recipe suite's rule: docs/benchmarks.md, \"Changing a default\")"]
        lines += ["", *(f"warning: {w}" for w in self.warnings)] if self.warnings else []
        return lines


def fingerprint_of(cases: list[Case], multi_label: bool) -> Fingerprint:
    patients = {c.patient_id for c in cases if c.patient_id is not None}
    classes = Counter()
    for case in cases:
        if multi_label and case.findings:
            classes.update(name for name, value in case.findings.items() if value == 1)
        else:
            classes[case.label] += 1
    sides = [side for case in sampled(cases, 256) if (side := source_side(case))]
    dims = 3 if any(np.ndim(getattr(c.array, "voxels", c.array)) >= 4 or hasattr(c.array, "voxels")
                    for c in cases[:8] if c.array is not None) else 2
    own = Counter(c.split for c in cases if c.split)
    return Fingerprint(images=len(cases), patients=len(patients) or None, classes=dict(sorted(classes.items())),
                       multi_label=multi_label, dims=dims,
                       short_side=(int(np.median(sides)), min(sides), max(sides)) if sides and dims == 2 else None,
                       own_split=dict(own) if own else None)


# The 3D recipe a volume set gets when no backbone is given (the default reads 2D images): MONAI's
# ResNet-10 at half width from scratch, one 30-epoch stage that stops on nothing, two members.
# Evidence (examples/README.md, VesselMNIST3D, 2 CPU cores): one half-width member 0.921 in 288 s;
# any two members of the three-member preset 0.926-0.947 (mean 0.937), about 570 s.
VOLUME_BACKBONE = "monai:resnet10"
VOLUME_RECIPE = {"backbone": VOLUME_BACKBONE, "backbone_args": {"widen_factor": 0.5}, "pretrained": False,
                 "epochs": 30, "finetune_epochs": 0, "patience": 0, "ensemble": 2, "bagging": False}
VOLUME_REASON = ("volumes with no backbone given: the 3D recipe (half-width MONAI ResNet-10 from scratch, 30 "
                 "epochs, two members; VesselMNIST3D 0.926-0.947 in about 10 min on 2 cores: examples/README.md)")


def data_dims(config: TrainConfig) -> int:
    """3 when the data holds volumes whatever the backbone (an .npz of (N, D, H, W) arrays), else 2;
    read from the array header inside the .npz, no array loaded."""
    import zipfile

    source = str(config.data)
    if not source.lower().endswith(".npz") or not Path(source).is_file():
        return 2
    try:
        with zipfile.ZipFile(source) as archive:
            member = next((f"{s}_images.npy" for s in ("train", "val", "test")
                           if f"{s}_images.npy" in archive.namelist()), None)
            if member is None:
                return 2
            with archive.open(member) as fh:
                version = np.lib.format.read_magic(fh)
                header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape = header(fh)[0]
    except Exception:  # loading reports what is wrong with the file
        return 2
    if len(shape) == 5:
        return 3
    return 3 if len(shape) == 4 and shape[1] not in (1, 3, 4) and shape[-1] not in (1, 3, 4) else 2


def planned_config(config: TrainConfig, registries, given: set[str]) -> tuple[TrainConfig, dict]:
    """`config` with the plan's rules applied to the keys the user did not set; returns it and, per
    key a rule set, the reason. Today's one recipe rule: volumes get the 3D recipe when no backbone
    was given and MONAI's backbones are installed (medcls-monai)."""
    reads_2d = registries["backbones"].get(config.backbone).metadata.get("spatial_dims", 2) == 2
    if ("backbone" in given or not reads_2d or config.slices or config.acs or data_dims(config) != 3
            or VOLUME_BACKBONE not in registries["backbones"]):
        return config, {}
    changes = {key: value for key, value in VOLUME_RECIPE.items() if key not in given}
    reasons = {key: "the 3D recipe (see backbone)" for key in changes}
    reasons[next(iter(changes))] = VOLUME_REASON
    return dataclasses.replace(config, **changes), reasons


def given_keys(config: TrainConfig) -> set[str]:
    """For a TrainConfig whose origin is not known: the keys that differ from their defaults."""
    defaults = TrainConfig()
    return {f.name for f in dataclasses.fields(TrainConfig) if getattr(config, f.name) != getattr(defaults, f.name)}


def make_plan(config: TrainConfig, registries, given: set[str] | None = None, *, cases: list[Case] | None = None,
              multi_label: bool | None = None, resolved: TrainConfig | None = None) -> Plan:
    """The plan for `config`'s data. `given` names the keys the user set (they win); None: every
    key that differs from its default counts as set. `cases`, `multi_label` and `resolved` (the
    config with its sizes chosen) are what a training already has; without them the data is listed."""
    if given is None:
        given = given_keys(config)
    config, ruled = planned_config(config, registries, given)
    if cases is None:
        cases, _, _ = load_cases(config, registries)
    if multi_label is None:
        multi_label = bool(config.multi_label or config.label_columns)
    found = fingerprint_of(cases, multi_label)
    resolved = resolved or sizes_from_sources(config, registries)
    choices = []
    for key in RECIPE:
        value = getattr(resolved, key)
        if key in given:
            choices.append(Choice(key, value, "you", "set in your command or configuration"))
        elif key in ruled:
            choices.append(Choice(key, value, "rule", ruled[key]))
        elif key == "image_size" and config.image_size == "auto" and found.dims == 2:
            side = found.short_side[0] if found.short_side else None
            reason = (f"the images' median shorter side ({side} px), kept within {AUTO_SMALLEST}-{AUTO_LARGEST} px "
                      "(medcls.data.loading.auto_image_size; examples/README.md)" if side else
                      f"no size readable from the headers: the largest the rule chooses ({AUTO_LARGEST} px)")
            choices.append(Choice(key, value, "rule", reason))
        elif key == "volume_size" and found.dims == 3 and config.volume_size == "auto":
            choices.append(Choice(key, value, "rule", "the volumes' own grid, never upsampled, at most 64 voxels "
                                                      "a side (medcls.data.loading.auto_volume_size)"))
        elif key in ("val_fraction", "test_fraction") and found.own_split:
            continue  # the data's own split is used as given
        elif key not in ("image_size", "volume_size"):  # (the size the backbone does not read is left out)
            choices.append(Choice(key, value, "default", "today's default"))
    return Plan(found, tuple(choices), tuple(plan_warnings(found, resolved)))


def plan_warnings(found: Fingerprint, config: TrainConfig) -> list[str]:
    warnings = []
    if found.own_split and found.own_split.get("val") is not None:
        val = found.own_split["val"]
    else:
        val = int(round(found.images * config.val_fraction))
    if val < SMALL_VALIDATION:
        warnings.append(f"about {val} validation images choose the epoch and the operating point: below "
                        f"{SMALL_VALIDATION} that choice is noisy (a few images move it); read the test interval, "
                        "and prefer cross-validation (--folds 5) to compare settings")
    if found.minority_share < 0.1 and not found.multi_label:
        warnings.append(f"the smallest class is {found.minority_share:.0%} of the images: read sensitivity and PPV "
                        "with their intervals, not accuracy")
    if found.patients is None and not found.own_split:
        warnings.append("no patient ids: the split is by image, so two images of one patient may sit on both "
                        "sides; give patient_column (or patient_from_dicom) if patients have several images")
    return warnings


def write_plan(plan: Plan, out: Path) -> None:
    (Path(out) / "plan.json").write_text(json.dumps(plan.to_json(), indent=1, default=str), encoding="utf-8")
