"""Sharing a model the ecosystem's way: a Hugging Face-style folder that timm loads without medcls
(`timm.create_model("local-dir:PATH", pretrained=True)`) and medcls loads back
(`medcls.load_run(PATH)`), and the model card written into every run folder and every export.
"""

from __future__ import annotations

import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from medcls.config import read_config_file
from medcls.core.runs import HF_MARKER, RunInfo
from medcls.reports.documents import shown_source
from medcls.errors import ConfigError, DataError

def timm_architecture(info: RunInfo, registries) -> str:
    """The timm name of a run's backbone, or a one-line error for backbones timm cannot build."""
    entry = registries["backbones"].get(info.backbone)
    if not entry.metadata.get("loads_weights") or int(info.spatial_dims) != 2 or info.slices:
        raise ConfigError(f"--format hf needs a 2D timm backbone; {info.backbone!r} of plugin {entry.plugin!r} "
                          "is not one: export with --format onnx or torchscript")
    return info.backbone[len("hf-hub:"):] if info.backbone.startswith("hf-hub:") else info.backbone


def as_timm_model(model, info: RunInfo, architecture: str):
    """A timm model with its own classifier holding medcls's head: the same logits for the same
    normalised input."""
    import timm

    timm_model = timm.create_model(architecture, pretrained=False, num_classes=len(info.classes),
                                   in_chans=info.in_chans, **(info.backbone_args or {}))
    state = dict(model.backbone.state_dict())
    classifier = timm_model.get_classifier()
    prefix = next(name for name, module in timm_model.named_modules() if module is classifier)
    state[f"{prefix}.weight"], state[f"{prefix}.bias"] = model.head[-1].weight, model.head[-1].bias
    timm_model.load_state_dict(state)
    return timm_model.eval(), prefix


def export_hf(model, info: RunInfo, out: Path, *, run: Path, registries, check_batch: torch.Tensor,
              tolerance: float) -> float:
    """config.json (timm's pretrained_cfg with medcls's normalisation, input size and labels, and
    medcls's model.json under "medcls"), model.safetensors (timm's layout) and README.md (the model
    card). Kept only if timm's reloaded model gives medcls's logits on `check_batch`; returns the
    largest difference."""
    from timm.models import save_for_hf

    architecture = timm_architecture(info, registries)
    model = model.float().cpu().eval()
    timm_model, classifier = as_timm_model(model, info, architecture)
    size = int(info.image_size)
    mean = [float(v) for v in model.mean.flatten()]
    std = [float(v) for v in model.std.flatten()]
    data_config = {"input_size": [info.in_chans, size, size], "mean": mean, "std": std,
                   "interpolation": info.interpolation, "crop_pct": 1.0, "crop_mode": "squash"}
    out.mkdir(parents=True, exist_ok=True)
    save_for_hf(timm_model, str(out), safe_serialization=True, data_config=data_config,
                model_config={"label_names": list(info.classes),
                              "pretrained_cfg": {**data_config, "classifier": classifier}},
                model_args={"in_chans": info.in_chans, **(info.backbone_args or {})})
    config = json.loads((out / "config.json").read_text())
    for key in ("tag", "license", "hf_hub_id", "url", "origin_url", "paper_ids", "paper_name", "notes"):
        config["pretrained_cfg"].pop(key, None)  # those describe timm's ImageNet weights, not these
    config[HF_MARKER] = {**info, "classifier": classifier}
    (out / "config.json").write_text(json.dumps(config, indent=2, default=float), encoding="utf-8")
    card = run / "MODEL_CARD.md"
    (out / "README.md").write_text(card.read_text() if card.is_file() else model_card(run, info), encoding="utf-8")
    difference = check_hf(out, model, check_batch)
    if difference > tolerance:
        for name in ("config.json", "model.safetensors", "README.md"):
            (out / name).unlink(missing_ok=True)
        raise DataError(f"the Hugging Face folder '{out}' gives logits {difference:.2e} away from medcls's: not kept")
    return difference


def check_hf(folder: Path, model, images: torch.Tensor) -> float:
    """The largest logit difference between timm's `local-dir:` load of the folder (normalised as its
    config says) and medcls's model on `images`."""
    import timm
    from timm.data import resolve_data_config

    reloaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    config = resolve_data_config({}, model=reloaded)
    mean = torch.tensor(config["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(config["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        theirs = reloaded((images - mean) / std)
        ours = model(images)
    return float((theirs - ours).abs().max())


# -- the model card ------------------------------------------------------------------------------


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def figure(metrics: dict, intervals: dict, split: str, name: str) -> str:
    value = metrics.get(split, {}).get(name)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    interval = intervals.get(split, {}).get(name) or {}
    low, high = interval.get("low"), interval.get("high")
    bounds = "" if low is None or high is None or np.isnan(low) else f" ({low:.3f}-{high:.3f})"
    return f"{value:.3f}{bounds}"


HYPERPARAMETERS = ("backbone", "pretrained", "image_size", "policy", "epochs", "lr", "finetune_epochs",
                   "unfreeze_blocks", "finetune_lr_factor", "batch_size", "patience", "dropout", "ensemble", "seed")


def split_summary(run: Path, info: RunInfo) -> tuple[list[str], str]:
    """Per split: images, patients (the splits.csv groups), images per class and the positive
    class's share; and how the split kept images together (by patient, or by image when the data
    named no patients), from the run's splits.csv."""
    import csv

    path = run / "splits.csv"
    if not path.is_file():
        return [], "unknown (no splits.csv)"
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("status", "used") == "used"]
    groups = [r.get("group") for r in rows]
    shared = bool(groups) and None not in groups and len(set(groups)) < len(groups)
    lines = ["| split | images | patients | " + " | ".join(info.classes) + " | prevalence |",
             "|---|---|---|" + "---|" * len(info.classes) + "---|"]
    for split in ("train", "val", "test"):
        members = [r for r in rows if r["split"] == split]
        if not members:
            continue
        counts = [sum(1 for r in members if r["label"] == name) for name in info.classes]
        patients = len({r.get("group") for r in members}) if shared else "-"
        positive = info.positive_class
        share = f"{counts[info.classes.index(positive)] / len(members):.3f}" if positive in info.classes else "-"
        lines.append(f"| {split} | {len(members)} | {patients} | " + " | ".join(map(str, counts)) + f" | {share} |")
    how = ("by patient: every image of a patient, and every byte-identical copy of an image, is on one side"
           if shared else "by image (the data named no patients): byte-identical copies are kept on one side")
    return lines, how


def hub_metadata(info: RunInfo, metrics: dict) -> list[str]:
    """The Hugging Face model card's metadata block (YAML front matter, as `huggingface_hub.ModelCard`
    reads it): the library that loads the exported folder, tags, the licence to be set by the owner
    and the test figures."""
    test = metrics.get("test", {})
    figures = [f"  - name: test_{name}\n    value: {float(test[name]):.4f}" for name in ("roc_auc", "sensitivity", "specificity")
               if isinstance(test.get(name), (int, float)) and np.isfinite(test[name])]
    return ["---", "library_name: timm", "pipeline_tag: image-classification",
            "license: other  # set the licence the weights and the data allow",
            "tags:", "  - medcls", "  - medical-imaging", f"  - {info.backbone}",
            "metrics:", "  - roc_auc", "  - sensitivity", "  - specificity",
            *(["medcls_test_figures:", *figures] if figures else []), "---", ""]


def model_card(run: Path, info: RunInfo) -> str:
    """MODEL_CARD.md: intended use, data, splits by patient, metrics with intervals per split, the
    operating point and how it was chosen, calibration, subgroups, limitations, software versions."""
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    manifest = json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").is_file() else {}
    intervals = metrics.get("intervals", {})
    classes = info.classes
    binary = len(classes) == 2 and not info.multi_label
    names = ["roc_auc", "sensitivity", "specificity", "ppv", "npv", "accuracy"] if binary else \
        ["roc_auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity"]
    rows = ["| split | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for split in ("train", "val", "test"):
        if split in metrics:
            rows.append(f"| {split} | {metrics[split].get('n', '?')} | "
                        + " | ".join(figure(metrics, intervals, split, n) for n in names) + " |")
    test_n = metrics.get("test", {}).get("n", 0)
    calibration = (metrics.get("calibration") or {}).get("test") or {}
    threshold = info.threshold
    summary, how = split_summary(run, info)
    config_file = run / "config.yaml"
    settings = read_config_file(config_file) if config_file.is_file() else {}
    lines = [
        *hub_metadata(info, metrics),
        f"# Model card: {info.backbone} for {' vs '.join(classes)}",
        "",
        "Written by medcls from the run's own files (model.json, metrics.json, manifest.json).",
        "",
        "## Intended use",
        f"- Classifies {'volumes' if int(info.spatial_dims) == 3 else 'images'} into "
        f"{', '.join(classes)}" + (f"; positive class: **{info.positive_class}**." if binary else "."),
        "- A research model: it supports, never replaces, a clinician's reading, and it has not been "
        "validated outside the data it was developed on (below).",
        "",
        "## Data",
        f"- Source: `{shown_source(manifest.get('data', '?'))}` (SHA-256 of the data: "
        f"{str(manifest.get('data_sha256', '?'))[:16]}...).",
        f"- Split {how} (splits.csv lists each file's split and hash; no patient ids).",
        "- Reference standard: the labels the data came with (folder names or the label column); "
        "how they were established is the data owner's to state.",
        f"- Input: {info.in_chans} channel(s); {info.preprocessing or ''}.",
        "",
        *summary,
        "",
        "## How to load and predict",
        "```python",
        "import medcls",
        'run = medcls.load_run("THIS_FOLDER")          # the run folder, or its exported Hugging Face folder',
        "probabilities = run.predict(images)          # arrays (N, H, W) or file paths; one row per image",
        "decisions = run.decide(images)               # class names at the operating point below",
        "```",
        "or `medcls predict THIS_FOLDER images/ -o predictions.csv`.",
        "",
        "## Hyperparameters",
        "| key | value |",
        "|---|---|",
        *[f"| {key} | {settings[key]} |" for key in HYPERPARAMETERS if key in settings],
        "",
        "## Performance (95 % intervals; the method of each is in metrics.json)",
        *rows,
        "",
        "## Operating point",
        f"- {threshold:.4f} on P({info.positive_class}), chosen on the validation split by "
        f"`{info.threshold_rule}`" + (f" (target {info.target})" if str(info.threshold_rule or '').startswith(('target', 'confident')) else "")
        + ", applied unchanged to test." if binary and threshold is not None else
        "- One per finding (table below), chosen on the validation split by "
        f"`{info.threshold_rule}`, applied unchanged to test." if info.multi_label else
        "- the most probable class.",
    ]
    if info.multi_label:
        test = (metrics.get("findings") or {}).get("test", {}).get("findings", {})
        lines += ["", f"Multi-label: {len(classes)} findings, each a sigmoid output; uncertain findings: "
                      f"`{info.uncertain}`, blank: `{info.blank_findings}`. Test figures per finding:", "",
                  "| finding | threshold | roc_auc | sensitivity | specificity |", "|---|---|---|---|---|"]
        for name, limit in zip(classes, threshold or []):
            found = test.get(name, {})
            cell = lambda m: figure({"s": found.get("values", {})}, {"s": found.get("intervals", {})}, "s", m)  # noqa: E731
            lines.append(f"| {name} | {limit:.4f} | {cell('roc_auc')} | {cell('sensitivity')} | {cell('specificity')} |")
    if info.conformal:
        lines.append(f"- Referral: split-conformal prediction sets at {info.conformal['coverage']:.0%} per class; "
                     "cases whose set is not one class are referred to a reader (`medcls predict` column `refer`).")
    lines += ["", "## Calibration"]
    if calibration and "slope" in calibration and not calibration.get("not_computable"):
        lines.append(f"- Test calibration slope {calibration['slope']:.3f} (ideal 1), intercept "
                     f"{calibration['intercept']:.3f} (ideal 0); temperature "
                     f"{info.temperature or 'none'}.")
    else:
        lines.append("- Not computable on the test split.")
    subgroups = metrics.get("subgroups") or {}
    lines += ["", "## Subgroups"]
    if subgroups:
        for value, assessed in subgroups.items():
            values = assessed["values"]
            lines.append(f"- {value}: n = {values['n']}, ROC AUC {values.get('roc_auc', float('nan')):.3f}")
    else:
        lines.append("- Not analysed: retrain or evaluate with `--by COLUMN` (site, sex, scanner).")
    lines += [
        "", "## Known limitations",
        f"- The test split has {test_n} cases: read the intervals, not the point values.",
        "- No external validation: the test split comes from the same source as the training data.",
        "- The operating point was chosen on the validation split of this data; prevalence elsewhere "
        "changes PPV and NPV (`medcls evaluate --prevalence`).",
        "", "## Software",
        f"- medcls {manifest.get('versions', {}).get('medcls', package_version('medcls'))}, commit "
        f"{manifest.get('medcls_commit') or 'unknown'}; torch {package_version('torch')}, timm {package_version('timm')}; "
        f"Python {platform.python_version()}.",
        f"- Trained on {manifest.get('device', '?')} in {manifest.get('seconds', '?')} s; seed {manifest.get('seed', '?')}.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(run: Path, info: RunInfo) -> None:
    (run / "MODEL_CARD.md").write_text(model_card(run, info), encoding="utf-8")

