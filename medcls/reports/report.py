"""Reports: the train/validation/test gap and its reading, metric tables with intervals, and one
document model written both as report.md and as a self-contained report.html."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path

import numpy as np

from medcls.errors import ConfigError

GAP_METRICS = ("loss", "accuracy", "roc_auc", "sensitivity", "specificity")


def gap(train: dict, test: dict) -> dict:
    return {k: train[k] - test[k] for k in GAP_METRICS if k in train and k in test}


def read_gap(train: dict, val: dict, test: dict) -> str:
    """A plain-language reading of the run. The diagnosis and what to try rest on training and
    validation only: the test split is the final, untuned result, reported once and never used
    to recommend a change (advice drawn from test figures invites tuning on the test set)."""
    key = "roc_auc" if not math.isnan(train.get("roc_auc", math.nan)) else "accuracy"
    label = "ROC AUC" if key == "roc_auc" else "accuracy"
    high, middle, low = train.get(key, math.nan), val.get(key, math.nan), test.get(key, math.nan)
    if math.isnan(high) or math.isnan(middle):
        reading = ("Not computable from training and validation: a split has only one class, so the gap cannot "
                   "be read.")
    elif high < 0.8:
        reading = (f"Under-fitting (training images): the model does not fit even its training images ({label} "
                   f"{high:.3f}). Try more epochs, unfreezing more blocks (--set unfreeze_blocks=-1), a higher "
                   "learning rate, larger images, or a larger backbone; check the labels.")
    elif high - middle > 0.05 or (train["loss"] < 0.5 * val["loss"] and high - middle > 0.02):
        reading = (f"Over-fitting (training vs validation): {label} is {high:.3f} on training images but "
                   f"{middle:.3f} on validation images (gap {high - middle:+.3f}). Try more (or more interpretable) "
                   "augmentation, more dropout, fewer unfrozen blocks, earlier stopping, more patients, or an "
                   "ensemble, judged on validation.")
    else:
        reading = f"Fine (training vs validation): {label} agrees within 0.05 ({high:.3f} vs {middle:.3f})."
    if not math.isnan(low):
        reading += (f" Test ({test['n']} images, the final result, not used for this advice): {label} {low:.3f}, "
                    f"train-test gap {high - low:+.3f}.")
        if not math.isnan(middle) and abs(middle - low) > 0.1:
            reading += (f" Validation and test disagree ({middle:.3f} vs {low:.3f}): held-out sets of "
                        f"{val['n']} and {test['n']} images are too small for a stable estimate, so the "
                        "operating point and the early stop are uncertain; use more patients or cross-validation.")
        elif test["n"] < 100:
            reading += " Read the test figures with their intervals."
    return reading


def read_stages(history, monitor: str, best_epoch: int) -> str:
    """A sentence when the weights kept (`best_epoch`) are the new head's (the first stage) although
    fine-tuning (the last stage) ran, so its epochs went unused; "" otherwise. `history` holds the
    epochs (objects with `stage`, `epoch` and `val_metrics`). A validation ROC AUC that stays at
    chance through fine-tuning means the unfrozen network's outputs collapsed to one value (seen
    with frozen batch norm on binary vessel-mask slices: examples/README.md)."""
    stages = list(dict.fromkeys(epoch.stage for epoch in history))
    if len(stages) < 2:
        return ""
    first, last = ([epoch for epoch in history if epoch.stage == name] for name in (stages[0], stages[-1]))
    values = [[epoch.val_metrics.get(monitor, math.nan) for epoch in epochs] for epochs in (first, last)]
    if best_epoch not in {epoch.epoch for epoch in first} or any(math.isnan(v) for part in values for v in part):
        return ""
    head, tuned = max(values[0]), max(values[1])
    reading = (f" Fine-tuning did not beat the new head on validation ({monitor} {tuned:.3f} at best in stage "
               f"'{stages[-1]}' against {head:.3f} in stage '{stages[0]}'), so the head-only weights were kept.")
    if monitor == "roc_auc" and all(abs(v - 0.5) < 0.02 for v in values[1]):
        reading += (" Its validation ROC AUC stayed at chance: the unfrozen network's outputs collapsed to one "
                    "value. Try --set finetune_batchnorm=train or --set finetune_lr_factor=0.01, judged on validation.")
    return reading


SPREAD_METRICS = ("roc_auc", "sensitivity", "specificity", "accuracy")


def spread(runs: list[dict], names=SPREAD_METRICS) -> dict:
    """Mean and standard deviation of each metric over runs (folds, ensemble members), ignoring
    runs where it is missing or not computable."""
    figures = {}
    for name in names:
        values = np.array([r.get(name) for r in runs if r.get(name) is not None], dtype=float)
        values = values[~np.isnan(values)]
        if len(values):
            figures[name] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    return figures


def format_value(value, interval=None, reason: bool = False) -> str:
    """`0.912 (0.850-0.951)`; a refused interval shows as `0.912 (no interval)`, with its reason
    when `reason` is set (the report's metric table); an undefined value as `n/a`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.3f}"
    if not interval:
        return text
    if interval.get("refused"):
        return text + (f" (no interval: {interval['refused']})" if reason else " (no interval)")
    low, high = interval.get("low"), interval.get("high")
    if low is not None and high is not None and not (math.isnan(low) or math.isnan(high)):
        text += f" ({low:.3f}-{high:.3f})"
    return text


def gap_rows(results: dict, intervals: dict) -> list[list[str]]:
    rows = []
    for name in GAP_METRICS:
        cells = [format_value(results[s].get(name), intervals.get(s, {}).get(name)) for s in ("train", "val", "test")]
        rows.append([name, *cells, format_value(results["gap"].get(name))])
    return rows


GAP_HEADER = ["metric", "train", "val", "test", "train-test gap"]


def gap_table(results: dict, intervals: dict) -> str:
    """The side-by-side table, Markdown, as printed at the end of `medcls train`."""
    return markdown_table(GAP_HEADER, gap_rows(results, intervals))


def metric_rows(assessed: dict) -> list[list[str]]:
    """Every metric of one split with its interval and how the interval was computed."""
    rows = []
    for name, value in assessed["values"].items():
        if not isinstance(value, float):
            continue
        interval = assessed["intervals"].get(name)
        method = f"{interval['method']}, {interval['level']:.0%}" if interval else "-"
        why = " (not computable)" if math.isnan(value) else ""
        rows.append([name, format_value(value, interval, reason=True) + why, method])
    return rows


def operating_rows(operating: dict) -> list[list[str]]:
    return [[name.replace("_", " "), format_value(v["value"], v, reason=True), f"{v['method']}, {v['level']:.0%}"]
            for name, v in operating.get("values", {}).items()]


def two_by_two(operating: dict, classes: list[str]) -> tuple[list[str], list[list[str]]]:
    t = operating["table"]
    header = ["", f"truly {classes[1]}", f"truly {classes[0]}"]
    return header, [[f"flagged {classes[1]}", f"{t['tp']} (TP)", f"{t['fp']} (FP)"],
                    [f"cleared ({classes[0]})", f"{t['fn']} (FN)", f"{t['tn']} (TN)"]]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def add_assessment(doc: "Document", assessed: dict, classes: list[str], where: str) -> None:
    """The metric table with intervals, the 2x2 table and the operating figures of one split."""
    level = assessed["level"]
    patients = f", {assessed['patients']} patients" if assessed.get("patients") else ""
    doc.paragraph(f"{where}: n = {assessed['values']['n']} ({level} level{patients}).")
    for note in assessed["notes"]:
        doc.paragraph(f"**Note:** {note}.")
    doc.table(["metric", "value (interval)", "interval method"], metric_rows(assessed))
    per_class = assessed.get("per_class")
    if per_class:
        doc.paragraph(f"One-vs-rest per class ({per_class['methods']}); micro-averaged ROC AUC "
                      f"{format_value(per_class['micro_roc_auc'])}.")
        doc.table(["class", "n", "sensitivity", "specificity", "roc_auc"],
                  [[classes[c], str(row["n"]), *[format_value(row[m]["value"], row[m]) for m in
                                                 ("sensitivity", "specificity", "roc_auc")]]
                   for c, row in per_class["classes"].items()])
    operating = assessed["operating"]
    if operating:
        threshold = operating["threshold"]
        doc.paragraph(f"2x2 table at the operating point {threshold:.4f} (chosen on validation, applied unchanged):")
        doc.table(*two_by_two(operating, classes))
        if operating.get("values"):
            doc.table(["figure", "value (interval)", "interval method"], operating_rows(operating))
        if operating.get("not_computable"):
            doc.paragraph(f"**Not computable:** {operating['not_computable']}.")


class Document:
    """A report as a list of blocks, rendered to Markdown or to self-contained HTML."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.blocks: list[tuple] = []

    def heading(self, text: str):
        self.blocks.append(("h2", text))

    def paragraph(self, text: str):
        self.blocks.append(("p", text))

    def bullets(self, items):
        self.blocks.append(("ul", list(items)))

    def table(self, header, rows):
        self.blocks.append(("table", header, rows))

    def image(self, path: Path, caption: str):
        """A figure, when it was drawn (a run with `figures: false` has none)."""
        if Path(path).is_file():
            self.blocks.append(("img", Path(path), caption))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "h2":
                out += [f"## {block[1]}", ""]
            elif kind == "p":
                out += [block[1], ""]
            elif kind == "ul":
                out += [f"- {item}" for item in block[1]] + [""]
            elif kind == "table":
                out += [markdown_table(block[1], block[2]), ""]
            elif kind == "img":
                out += [f"![{block[2]}]({block[1].name})", ""]
        return "\n".join(out)

    def html(self) -> str:
        parts = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h2":
                parts.append(f"<h2>{inline(block[1])}</h2>")
            elif kind == "p":
                parts.append(f"<p>{inline(block[1])}</p>")
            elif kind == "ul":
                parts.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in block[1]) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{inline(c)}</th>" for c in block[1])
                body = "".join("<tr>" + "".join(f"<td>{inline(str(c))}</td>" for c in row) + "</tr>" for row in block[2])
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "img" and block[1].is_file():
                data = base64.b64encode(block[1].read_bytes()).decode("ascii")
                parts.append(f'<figure><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">'
                             f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
        return HTML_PAGE.format(title=html.escape(self.title), body="\n".join(parts))

    def write(self, folder: Path, stem: str = "report") -> None:
        (folder / f"{stem}.md").write_text(self.markdown(), encoding="utf-8")
        (folder / f"{stem}.html").write_text(self.html(), encoding="utf-8")


def inline(text: str) -> str:
    """Escape, then render `code` and **bold** as in the Markdown version."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


HTML_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }}
th {{ background: #f3f3f3; }}
figure {{ display: inline-block; margin: 0.5rem; }}
img {{ max-width: 100%; }}
code {{ background: #f3f3f3; padding: 0 0.2rem; }}
</style></head>
<body><h1>{title}</h1>
{body}
</body></html>
"""


def require_new_folder(out: Path, name: str = "--out") -> None:
    """Reports (and kept runs) go into a new or empty folder only: nothing written there before is
    replaced."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{name} '{out}' exists and is not an empty folder: give a new one (nothing is overwritten)")


def write_metrics_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, default=json_default, allow_nan=True), encoding="utf-8")


def json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value)}")
