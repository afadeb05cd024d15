"""Figures for the reports: learning curves, ROC with a bootstrap band, PR, calibration, decision
curve and the confusion matrix. Each function writes one PNG (an SVG beside it) and closes its figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medcls.stats.bootstrap import ScoredCases, resample_weights
from medcls.stats.calibration import MIN_CASES_PER_BIN, calibration_bins
from medcls.stats.clustered import auc_interval
from medcls.stats.metrics import confusion_counts, decisions
from medcls.stats.operating_points import net_benefit


def subplots(*grid, figsize, **options):
    """A new matplotlib Figure and its axes, outside pyplot's global state: the library never
    switches the backend of a notebook or an application that imports it."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **options)


def plain(text) -> str:
    """Text from the data (class and file names) shown as written: matplotlib would parse `$...$`
    as mathematics and fail on an unbalanced `$` after the model was written."""
    return str(text).replace("$", r"\$")


def label_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)


def save(fig, path: Path) -> None:
    """The figure as PNG (for the HTML report) and, beside it, as SVG (vector, for a journal)."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    fig.savefig(Path(path).with_suffix(".svg"))


def plot_learning_curves(history, path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    epochs = [h.epoch for h in history]
    fig, (ax_loss, ax_auc) = subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h.train_loss for h in history], "o-", label="train (augmented)")
    ax_loss.plot(epochs, [h.val_loss for h in history], "o-", label="validation")
    ax_auc.plot(epochs, [h.train_auc for h in history], "o-", label="train (augmented)")
    ax_auc.plot(epochs, [h.val_metrics.get("roc_auc", math.nan) for h in history], "o-", label="validation")
    stage_starts = [h.epoch for i, h in enumerate(history) if i and history[i - 1].stage != h.stage]
    for ax, title in ((ax_loss, "Loss"), (ax_auc, "ROC AUC")):
        for start in stage_starts:
            ax.axvline(start - 0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_title(title + (" (dashed: fine-tuning starts)" if stage_starts else ""))
        ax.legend()
        ax.grid(alpha=0.3)
    save(fig, path)


def roc_band(y: np.ndarray, p1: np.ndarray, groups=None, n_resamples: int = 500, level: float = 0.95, seed: int = 0):
    """Pointwise bootstrap band of sensitivity over a grid of 1 - specificity."""

    grid = np.linspace(0, 1, 51)
    cases = ScoredCases.of(y, p1, np.zeros_like(y))
    samples = [cases.weigh(W).sensitivity_where_fpr_at_most(grid + 1e-12)
               for W in resample_weights(y, groups, n_resamples, seed)]
    stacked = np.concatenate(samples)
    low, high = np.nanpercentile(stacked, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return grid, low, high


def plot_roc(split_scores: dict, classes: list[str], path: Path, groups=None, highlight: str = "test") -> None:
    """Binary: ROC per split, a 95% bootstrap band and the operating point on test.
    Multi-class: one-vs-rest ROC per class on test."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = subplots(figsize=(5, 5))
    curves = []
    for split, (probs, labels, threshold) in split_scores.items():
        if probs.shape[1] == 2:
            curves.append((split, labels == 1, probs[:, 1]))
        elif split == highlight:
            curves += [(f"{highlight}: {plain(name)}", labels == c, probs[:, c]) for c, name in enumerate(classes)]
    for label, truth, scores in curves:
        if truth.any() and not truth.all():
            fpr, tpr, _ = roc_curve(truth, scores)
            auc = f"AUC {roc_auc_score(truth, scores):.3f}"
            if label == highlight:  # the interval the report's table gives (patients counted)
                interval = auc_interval(truth.astype(np.int64), scores, groups)
                auc += f" ({interval.low:.3f}-{interval.high:.3f})" if interval.low is not None else ""
            ax.plot(fpr, tpr, label=f"{label}, {auc}")
    probs, labels, threshold = split_scores[highlight]
    if probs.shape[1] == 2 and len(np.unique(labels)) == 2:
        grid, low, high = roc_band(labels, probs[:, 1], groups)
        ax.fill_between(grid, low, high, step="post", alpha=0.2, color=f"C{list(split_scores).index(highlight)}",
                        label=f"{highlight} 95% band (bootstrap)")
    if probs.shape[1] == 2 and threshold is not None and len(np.unique(labels)) == 2:
        tp, fp, tn, fn = confusion_counts(labels, decisions(probs, threshold), 1)
        ax.plot(fp / (fp + tn), tp / (tp + fn), "k*", markersize=12, label="operating point")
    finish_roc(fig, ax, "ROC", path)


def finish_roc(fig, ax, title: str, path: Path) -> None:
    """The chance diagonal, axis names, title and legend of a ROC figure, saved to `path`."""
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    save(fig, path)


def plot_finding_rocs(probs: np.ndarray, targets: np.ndarray, findings: list[str], thresholds, path: Path) -> None:
    """Multi-label: one ROC curve per finding on its known cases, with its operating point."""
    from sklearn.metrics import roc_curve

    fig, ax = subplots(figsize=(5, 5))
    for j, name in enumerate(findings):
        known = ~np.isnan(targets[:, j])
        truth, scores = targets[known, j] == 1, probs[known, j]
        if not truth.any() or truth.all():
            continue
        fpr, tpr, _ = roc_curve(truth, scores)
        line, = ax.plot(fpr, tpr, label=plain(name))
        flagged = scores >= thresholds[j]
        ax.plot((flagged & ~truth).sum() / (~truth).sum(), (flagged & truth).sum() / truth.sum(), "*",
                color=line.get_color(), markersize=11)
    finish_roc(fig, ax, "ROC per finding (test; * operating point)", path)


def plot_confusion(probs: np.ndarray, labels: np.ndarray, threshold, classes: list[str], path: Path) -> None:
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(labels, decisions(probs, threshold), labels=list(range(len(classes))))
    fig, ax = subplots(figsize=(4 + 0.4 * len(classes), 4 + 0.4 * len(classes)))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if count > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), [plain(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), [plain(c) for c in classes])
    label_axes(ax, "predicted", "true", "Test confusion matrix")
    save(fig, path)


def plot_pr(probs: np.ndarray, labels: np.ndarray, path: Path, split: str = "test") -> None:
    """Precision-recall curve of the positive class, with the prevalence as the no-skill line."""
    from sklearn.metrics import precision_recall_curve

    fig, ax = subplots(figsize=(5, 5))
    if probs.shape[1] == 2 and len(np.unique(labels)) == 2:
        precision, recall, _ = precision_recall_curve(labels, probs[:, 1])
        ax.step(recall, precision, where="post", label="model")
        ax.axhline((labels == 1).mean(), color="grey", linestyle=":", label="prevalence")
        ax.legend(loc="lower left")
    else:
        ax.text(0.5, 0.5, "not computable: needs both classes", ha="center")
    label_axes(ax, "sensitivity (recall)", "PPV (precision)", f"Precision-recall ({split})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    save(fig, path)


def plot_calibration(probs: np.ndarray, labels: np.ndarray, path: Path, split: str = "test") -> None:
    """Reliability diagram: observed frequency (Wilson 95 % interval) against mean predicted
    probability in bins of at least MIN_CASES_PER_BIN cases, with each bin's count, and below it
    the histogram of the predictions by true class."""
    fig, (ax, hist) = subplots(2, 1, figsize=(5, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    if probs.shape[1] == 2 and len(labels):
        p1 = probs[:, 1]
        curve = calibration_bins(labels, p1)
        below, above = curve["observed"] - curve["observed_low"], curve["observed_high"] - curve["observed"]
        ax.errorbar(curve["predicted"], curve["observed"], yerr=[below, above], fmt="o-", capsize=3,
                    label="model (Wilson 95 %)")
        for x, y, n in zip(curve["predicted"], curve["observed"], curve["count"]):
            ax.annotate(str(int(n)), (x, y), textcoords="offset points", xytext=(5, -11), fontsize=8)
        edges = np.linspace(0, 1, 21)
        hist.hist([p1[labels != 1], p1[labels == 1]], bins=edges, stacked=True, label=["negative", "positive"],
                  color=["tab:blue", "tab:orange"])
        hist.legend(loc="upper center", fontsize=8, ncol=2)
    else:
        ax.text(0.5, 0.5, "not computable: needs a binary task", ha="center")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"Calibration ({split})\nbins of at least {MIN_CASES_PER_BIN} cases; numbers: cases per bin",
                 fontsize=10)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="upper left")
    hist.set_xlabel("predicted probability of the positive class")
    hist.set_ylabel("cases")
    save(fig, path)


def decision_range(curve: dict, thresholds: np.ndarray) -> float:
    """The threshold range worth showing: up to a little past the last threshold at which the model
    still has positive net benefit (at least 0.3, at most 0.99), not the whole of 0-1 where
    'treat all' has long fallen away."""
    useful = thresholds[np.asarray(curve["model"]) > 0]
    last = float(useful.max()) if len(useful) else 0.0
    return float(min(0.99, max(0.3, np.ceil((last + 0.05) * 10) / 10)))


def plot_decision_curve(probs: np.ndarray, labels: np.ndarray, path: Path) -> dict:
    """Net benefit of the model, of treating all and of treating none (decision-curve analysis),
    over the threshold range where the model has any benefit."""

    thresholds = np.linspace(0.01, 0.99, 99)
    curve = net_benefit(labels, probs[:, 1], thresholds)
    fig, ax = subplots(figsize=(6, 4))
    ax.plot(thresholds, curve["model"], label="model")
    ax.plot(thresholds, curve["treat_all"], label="treat all")
    ax.plot(thresholds, curve["treat_none"], label="treat none", color="grey")
    top = max(0.05, float(np.max(curve["model"])) * 1.1)
    ax.set_ylim(-0.05, top)
    ax.set_xlim(0, decision_range(curve, thresholds))
    label_axes(ax, "threshold probability", "net benefit", "Decision curve")
    ax.legend()
    save(fig, path)
    return curve


def middle_slice(image):
    """(C, H, W) as it is; (C, D, H, W) volumes by their middle slice, for display."""
    return image[:, image.shape[1] // 2] if image.ndim == 4 else image


def preview_grid(images: list, transform, views: int, path, titles: list[str] | None = None) -> tuple:
    """A PNG grid: one row per image ((C, H, W) or (C, D, H, W) tensors), the original first, then
    `views` versions made by `transform`.
    Returns the (width, height) of the written image in pixels."""
    rows, cols = len(images), views + 1
    fig, axes = subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
    for r, image in enumerate(images):
        shown = [image] + [transform(image) for _ in range(views)]
        for c, view in enumerate(shown):
            ax = axes[r][c]
            picture = middle_slice(view).float()
            if picture.shape[0] == 1:
                ax.imshow(picture[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(picture.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else f"view {c}", fontsize=8)
        if titles:
            axes[r][0].set_ylabel(plain(titles[r]), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    size = tuple(int(v) for v in fig.get_size_inches() * 100)
    return size


def overlay(ax, picture: np.ndarray, heat: np.ndarray, title: str) -> None:
    ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
    ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0, vmax=1)
    ax.set_title(plain(title), fontsize=7)
    ax.axis("off")


def save_overlay(picture, heat, title, path: Path) -> None:
    fig, axes = subplots(1, 2, figsize=(6, 3.2))
    axes[0].imshow(picture, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("input", fontsize=7)
    axes[0].axis("off")
    overlay(axes[1], picture, heat, title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def save_grid(panels, path: Path, columns: int = 4) -> None:
    rows = -(-len(panels) // columns)
    fig, axes = subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (picture, heat, title) in zip(axes.ravel(), panels):
        overlay(ax, picture, heat, title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_forest(differences: dict, column: str, path: Path) -> bool:
    """Forest plot of each subgroup's difference from the rest (sensitivity, specificity, ROC AUC)
    with its interval; flagged differences (Holm-adjusted p < 0.05) in red. False when nothing to plot."""
    from medcls.stats.subgroups import FIGURES

    rows = [(value, name, figures[name]) for value, figures in differences.items() if "not_compared" not in figures
            for name in FIGURES]
    if not rows:
        return False
    fig, ax = subplots(figsize=(6.5, 0.9 + 0.32 * len(rows)))
    for y, (value, name, row) in enumerate(reversed(rows)):
        colour = "tab:red" if row["flagged"] else "black"
        ax.errorbar(row["difference"], y, xerr=[[row["difference"] - row["low"]], [row["high"] - row["difference"]]],
                    fmt="o", color=colour, capsize=3)
    ax.axvline(0, color="grey", linestyle=":")
    ax.set_yticks(range(len(rows)), [f"{plain(value)}: {name.replace('_', ' ')}" for value, name, _ in reversed(rows)])
    label_axes(ax, "difference from the rest (95% interval)", "", f"Subgroups by {plain(column)}")
    save(fig, path)
    return True
