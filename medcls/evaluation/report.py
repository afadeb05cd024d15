"""Per-split results, the train/validation/test gap and its plain-language reading, plots and report.md."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from medcls.engine import cross_entropy
from medcls.evaluation.intervals import delong_interval, wilson
from medcls.evaluation.metrics import confusion_counts

GAP_METRICS = ("loss", "accuracy", "roc_auc", "sensitivity", "specificity")
LEVEL = 0.95


def decisions(probs: np.ndarray, threshold: float | None) -> np.ndarray:
    """Binary: positive when P(positive) >= threshold. Multi-class: the most probable class."""
    if probs.shape[1] == 2 and threshold is not None:
        return (probs[:, 1] >= threshold).astype(np.int64)
    return probs.argmax(1).astype(np.int64)


def split_results(probs: np.ndarray, labels: np.ndarray, threshold: float | None, metrics) -> dict:
    """Every registered metric on one whole split (never averaged over batches), plus loss and n."""
    y_pred = decisions(probs, threshold)
    values = {"n": int(len(labels)), "loss": cross_entropy(probs, labels)}
    for entry in metrics:
        try:
            values[entry.name] = float(entry.obj(labels, probs, y_pred))
        except Exception as exc:  # a metric plugin's failure is reported, not fatal
            values[entry.name] = float("nan")
            values.setdefault("metric_errors", {})[entry.name] = f"{type(exc).__name__}: {exc}"
    return values


def split_intervals(probs: np.ndarray, labels: np.ndarray, threshold: float | None) -> dict:
    """95% intervals for the binary headline metrics: Wilson for proportions, DeLong for ROC AUC."""
    if probs.shape[1] != 2:
        return {}
    y_pred = decisions(probs, threshold)
    tp, fp, tn, fn = confusion_counts(labels, y_pred, 1)
    proportions = {"sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp), "ppv": (tp, tp + fp),
                   "npv": (tn, tn + fn), "accuracy": (tp + tn, len(labels))}
    out = {name: {"low": lo, "high": hi, "method": "Wilson", "level": LEVEL, "count": f"{k}/{n}"}
           for name, (k, n) in proportions.items() for lo, hi in [wilson(k, n, LEVEL)]}
    lo, hi = delong_interval(labels, probs[:, 1], LEVEL)
    out["roc_auc"] = {"low": lo, "high": hi, "method": "DeLong", "level": LEVEL}
    return out


def gap(train: dict, test: dict) -> dict:
    return {k: train[k] - test[k] for k in GAP_METRICS if k in train and k in test}


def read_gap(train: dict, val: dict, test: dict) -> str:
    """A plain-language reading of the gap between training and held-out results, with what to try."""
    key = "roc_auc" if not math.isnan(train.get("roc_auc", math.nan)) else "accuracy"
    label = "ROC AUC" if key == "roc_auc" else "accuracy"
    high, low, middle = train.get(key, math.nan), test.get(key, math.nan), val.get(key, math.nan)
    if math.isnan(high) or math.isnan(low):
        return "Not enough classes in a split to read the gap."
    difference = high - low
    if high < 0.8:
        reading = (f"Under-fitting: the model does not fit even its training images ({label} {high:.3f}). "
                   "Try more epochs, unfreezing more blocks (--set unfreeze_blocks=-1), a higher learning "
                   "rate, larger images, or a larger backbone; check the labels.")
    elif difference > 0.05 or (train["loss"] < 0.5 * test["loss"] and difference > 0.02):
        reading = (f"Over-fitting: {label} is {high:.3f} on training images but {low:.3f} on test images "
                   f"(gap {difference:+.3f}). Try more (or more interpretable) augmentation, more dropout, "
                   "fewer unfrozen blocks, earlier stopping, more patients, or an ensemble.")
    else:
        reading = f"Fine: training and test {label} agree within 0.05 ({high:.3f} vs {low:.3f})."
    if not math.isnan(middle) and abs(middle - low) > 0.1:
        reading += (f" Validation and test disagree ({middle:.3f} vs {low:.3f}): held-out sets of "
                    f"{val['n']} and {test['n']} images are too small for a stable estimate, so the "
                    "operating point and the early stop are uncertain; use more patients or cross-validation.")
    elif test["n"] < 100:
        reading += f" With {test['n']} test images, read the figures with their intervals."
    return reading


def format_value(value, interval=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.3f}"
    if interval and not math.isnan(interval["low"]):
        text += f" ({interval['low']:.3f}-{interval['high']:.3f})"
    return text


def gap_table(results: dict, intervals: dict) -> str:
    """The side-by-side table, Markdown, as printed at the end of `medcls train`."""
    lines = ["| metric | train | val | test | train-test gap |", "|---|---|---|---|---|"]
    for name in GAP_METRICS:
        cells = [format_value(results[s].get(name), intervals.get(s, {}).get(name)) for s in ("train", "val", "test")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {format_value(results['gap'].get(name))} |")
    return "\n".join(lines)


def write_metrics_json(path: Path, results: dict, intervals: dict, extra: dict) -> None:
    payload = {**results, "intervals": intervals, **extra}
    path.write_text(json.dumps(payload, indent=2, default=_json_default, allow_nan=True), encoding="utf-8")


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot serialise {type(value)}")


def plot_learning_curves(history, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h.epoch for h in history]
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h.train_loss for h in history], "o-", label="train (augmented)")
    ax_loss.plot(epochs, [h.val_loss for h in history], "o-", label="validation")
    ax_auc.plot(epochs, [h.train_auc for h in history], "o-", label="train (augmented)")
    ax_auc.plot(epochs, [h.val_metrics.get("roc_auc", math.nan) for h in history], "o-", label="validation")
    stage_starts = [h.epoch for i, h in enumerate(history) if i and history[i - 1].stage != h.stage]
    for ax, title in ((ax_loss, "Loss"), (ax_auc, "ROC AUC")):
        for start in stage_starts:
            ax.axvline(start - 0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("epoch")
        ax.set_title(title + (" (dashed: fine-tuning starts)" if stage_starts else ""))
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_roc(split_scores: dict, classes: list[str], path: Path) -> None:
    """Binary: ROC per split with the test operating point. Multi-class: one-vs-rest ROC per class on test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    curves = []
    for split, (probs, labels, threshold) in split_scores.items():
        if probs.shape[1] == 2:
            curves.append((split, labels == 1, probs[:, 1]))
        elif split == "test":
            curves += [(f"test: {name}", labels == c, probs[:, c]) for c, name in enumerate(classes)]
    for label, truth, scores in curves:
        if truth.any() and not truth.all():
            fpr, tpr, _ = roc_curve(truth, scores)
            ax.plot(fpr, tpr, label=label)
    probs, labels, threshold = split_scores["test"]
    if probs.shape[1] == 2 and threshold is not None and len(np.unique(labels)) == 2:
        tp, fp, tn, fn = confusion_counts(labels, decisions(probs, threshold), 1)
        ax.plot(fp / (fp + tn), tp / (tp + fn), "k*", markersize=12, label="test operating point")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("ROC")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(probs: np.ndarray, labels: np.ndarray, threshold, classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(labels, decisions(probs, threshold), labels=list(range(len(classes))))
    fig, ax = plt.subplots(figsize=(4 + 0.4 * len(classes), 4 + 0.4 * len(classes)))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if count > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Test confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
