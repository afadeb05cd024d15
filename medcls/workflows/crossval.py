"""Cross-validation (`medcls train --folds K`): K folds stratified by class and grouped by patient
(and by identical content); each fold is a full run whose validation set comes from its training
folds; every case is scored once, out of fold, and the pooled out-of-fold figures get intervals."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

from medcls.data.splits import holdout, linked_groups, multilabel_group_folds
from medcls.errors import ConfigError, DataError
from medcls.logs import logger, stage
from medcls.reports.documents import add_cases_to_review, add_findings, shown_source
from medcls.reports.report import Document, format_value, spread
from medcls.stats import multilabel
from medcls.stats.assess import assess
from medcls.stats.metrics import decisions
from medcls.stats.review import cases_at_odds
from medcls.workflows.tracking import close_trackers, ending_if_interrupted, open_trackers
from medcls.workflows.train import open_run, train


def fold_assignments(data, k: int, val_fraction: float, seed: int) -> list[np.ndarray]:
    """For each fold, 'train'/'val'/'test' per case: the fold is the test set. Folds are grouped by
    patient and stratified by class, or for multi-label data by iterative stratification over the
    findings."""
    if k < 2:
        raise ConfigError(f"folds={k}: cross-validation needs at least 2 folds")
    groups = linked_groups(data.cases, data.hashes)
    assignments = []
    for fold, (rest, test) in enumerate(fold_splits(data, groups, k, seed)):
        splits = np.full(len(data.cases), "train", dtype=object)
        splits[test] = "test"
        _, val = holdout(rest, data.labels, groups, val_fraction / max(1e-9, 1 - 1 / k), seed + 1 + fold, "val",
                         data.classes)
        splits[val] = "val"
        assignments.append(splits.astype(str))
    return assignments


def fold_splits(data, groups: np.ndarray, k: int, seed: int):
    """(rest, test) positions of each fold; a class (or finding) in fewer patients than folds is
    refused by name, since some fold would test without it."""
    from sklearn.model_selection import StratifiedGroupKFold

    if data.multi_label:
        for j, name in enumerate(data.classes):
            with_finding = len(np.unique(groups[data.labels[:, j] == 1]))
            if with_finding < k:
                raise DataError(f"finding {name!r} is present in {with_finding} patients/image groups, fewer than {k} "
                                f"folds: use at most {with_finding} folds")
        return multilabel_group_folds(data.labels, groups, k, seed)
    for label in np.unique(data.labels):
        in_class = len(np.unique(groups[data.labels == label]))
        if in_class < k:
            raise DataError(f"class {data.classes[label]!r} has {in_class} patients/image groups, fewer than "
                            f"{k} folds: use at most {in_class} folds")
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return folds.split(np.arange(len(data.cases)), data.labels, groups)


def cross_validate(config, registries, *, progress_factory=None) -> dict:
    """Train one run per fold under `out/fold-N`, then pool the out-of-fold predictions."""

    config, out, data = open_run(config, registries, split=False)
    if any(case.split for case in data.cases):
        logger.warning("cross-validation re-splits every case; the data set's own train/val/test split is not used")
    split_seed = config.seed if config.split_seed is None else config.split_seed
    assignments = fold_assignments(data, config.folds, config.val_fraction, split_seed)
    trackers = open_trackers(config, registries, out)  # each fold is logged as a nested run of this one
    with ending_if_interrupted(trackers):
        kept = data.cache.kept
        oof_probs = np.full((len(data.cases), len(data.classes)), np.nan)
        oof_fold = np.full(len(data.cases), -1)
        oof_decision = np.full((len(data.cases), len(data.classes)) if data.multi_label else len(data.cases), -1)
        per_fold = []
        with stage(f"{config.folds}-fold cross-validation", total=config.folds, unit="fold") as advance:
            for fold, splits in enumerate(assignments, start=1):
                logger.info(f"fold {fold} of {config.folds}: {int((splits == 'train').sum())}/{int((splits == 'val').sum())}/"
                    f"{int((splits == 'test').sum())} train/val/test")
                data.splits = splits
                fold_config = dataclasses.replace(config, folds=0, out=str(out / f"fold-{fold}"))
                summary = train(fold_config, registries, progress_factory=progress_factory, data=data, parent_trackers=trackers)
                probs, _ = summary["scores"]["test"]
                cases = kept[data.rows("test")]
                oof_probs[cases], oof_fold[cases] = probs, fold
                oof_decision[cases] = decisions(probs, summary["threshold"], multi_label=data.multi_label)
                test = summary["results"]["test"]
                per_fold.append({"fold": fold, "n": int(len(cases)), "threshold": summary["threshold"],
                                 **{k: test.get(k) for k in ("roc_auc", "sensitivity", "specificity", "accuracy")},
                                 "roc_auc_interval": summary["intervals"]["test"].get("roc_auc")})
                advance()

        scored = kept[oof_fold[kept] > 0]
        labels, probs = data.labels[scored], oof_probs[scored]
        patients = data.patients(np.flatnonzero(np.isin(kept, scored)))
        # Each case's decision is its own fold's (each fold picks its threshold on its validation split);
        # the intervals follow the single-run rules: Wilson/DeLong for independent cases, a cluster
        # bootstrap over patients when they have several images.
        findings = None
        if data.multi_label:
            findings = multilabel.assess_findings(probs, labels, [0.5] * len(data.classes), list(registries["metrics"]),
                                                  data.classes, patients=patients, where="out-of-fold predictions",
                                                  n_resamples=config.bootstrap, seed=config.seed,
                                                  predicted=oof_decision[scored])
            pooled = {"values": findings["values"], "intervals": multilabel.macro_intervals(findings)}
        else:
            pooled = assess(probs, labels, 0.5 if len(data.classes) == 2 else None, list(registries["metrics"]),
                            patients=patients, n_resamples=config.bootstrap, seed=config.seed,
                            where="out-of-fold predictions", y_pred=oof_decision[scored])
        pooled_values = {k: v for k, v in pooled["values"].items() if isinstance(v, float)}

        (write_oof_findings if data.multi_label else write_oof)(out / "oof_predictions.csv", data, scored, oof_probs,
                                                                 oof_fold, oof_decision)
        extra = {"pooled_findings": findings} if findings is not None else {"to_review": review(data, scored, probs,
                                                                                                 oof_fold)}
        result = {"folds": config.folds, "per_fold": per_fold, "pooled": pooled_values,
                  "pooled_intervals": pooled["intervals"], "spread": spread(per_fold), "n": int(len(scored)), **extra}
        (out / "cv_metrics.json").write_text(json.dumps(result, indent=2, default=float), encoding="utf-8")
        cv_document(config, result).write(out)
        close_trackers(trackers, tracked_values(result), out)
    result["out"] = str(out)
    return result


def review(data, scored: np.ndarray, probs: np.ndarray, folds: np.ndarray, count: int = 10) -> list[dict]:
    """The out-of-fold cases given the lowest probability for their own label (file keys only, no
    patient ids): where to look for a wrong label or a look-alike of the other class."""
    cases = []
    for found in cases_at_odds(data.labels[scored], probs, count):
        i = scored[found["index"]]
        cases.append({"case": data.cases[i].key, "label": data.classes[data.labels[i]], "fold": int(folds[i]),
                      "p_label": found["p_label"], "auc_without": found["auc_without"]})
    return cases


def write_oof(path: Path, data, scored: np.ndarray, probs: np.ndarray, folds: np.ndarray, decided: np.ndarray) -> None:
    """One row per scored case: its fold, label, probabilities and decision (no patient ids)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case", "fold", "label", *[f"prob_{c}" for c in data.classes], "predicted"])
        for i in scored:
            writer.writerow([data.cases[i].key, int(folds[i]), data.classes[data.labels[i]],
                             *[repr(float(p)) for p in probs[i]], data.classes[decided[i]]])


def tracked_values(result: dict) -> dict:
    """The pooled out-of-fold figures with their interval bounds, and the spread over folds."""
    values = {}
    for name, value in result["pooled"].items():
        if np.isfinite(value):
            values[f"pooled_{name}"] = value
            for bound in ("low", "high"):
                found = (result["pooled_intervals"].get(name) or {}).get(bound)
                if isinstance(found, float) and np.isfinite(found):
                    values[f"pooled_{name}_{bound}"] = found
    for name, figures in result["spread"].items():
        values[f"folds_{name}_mean"], values[f"folds_{name}_sd"] = figures["mean"], figures["sd"]
    return values


def write_oof_findings(path: Path, data, scored: np.ndarray, probs: np.ndarray, folds: np.ndarray,
                       decided: np.ndarray) -> None:
    """Multi-label: per scored case its fold and, per finding, target, probability and decision."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case", "fold", *[f"y_{c}" for c in data.classes], *[f"prob_{c}" for c in data.classes],
                         *[f"decision_{c}" for c in data.classes]])
        for i in scored:
            writer.writerow([data.cases[i].key, int(folds[i]),
                             *["" if np.isnan(v) else str(int(v)) for v in data.labels[i]],
                             *[repr(float(p)) for p in probs[i]], *[str(int(d)) for d in decided[i]]])


def cv_document(config, result: dict):
    doc = Document(f"{config.folds}-fold cross-validation of {config.backbone} on {shown_source(config.data)}")
    doc.paragraph("Folds are stratified by class and grouped by patient and identical content; each fold's "
                  "operating point is chosen on a validation set carved from its own training folds. Pooled "
                  "figures use every case once, scored by the model that never saw it.")
    names = ("roc_auc", "sensitivity", "specificity", "accuracy")
    rows = [[str(f["fold"]), str(f["n"]), *(("-" if f.get(n) is None else f"{f[n]:.3f}") for n in names)]
            for f in result["per_fold"]]
    rows.append(["mean ± sd", "", *(f"{result['spread'][n]['mean']:.3f} ± {result['spread'][n]['sd']:.3f}"
                                    if n in result["spread"] else "-" for n in names)])
    rows.append(["pooled", str(result["n"]), *(format_value(result["pooled"][n], result["pooled_intervals"].get(n))
                                               if n in result["pooled"] else "-" for n in names)])
    doc.heading("Per fold and pooled (out of fold)")
    doc.table(["fold", "n", *names], rows)
    if "pooled_findings" in result:
        doc.paragraph("Multi-label: the figures above are macro averages over findings; pooled out of fold per "
                      "finding, each case at its own fold's operating point:")
        add_findings(doc, result["pooled_findings"], "out-of-fold predictions")
    add_cases_to_review(doc, result.get("to_review") or [], "the fold's model, which never saw them")
    doc.paragraph("Out-of-fold predictions: oof_predictions.csv; each fold's full report: fold-N/report.md.")
    return doc
