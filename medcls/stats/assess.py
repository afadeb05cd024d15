"""Score one split: every metric on the whole split, an interval for each (method and level named),
the 2x2 table at the operating point, and the figures a clinical paper reports beside them."""

from __future__ import annotations


import numpy as np

from medcls.errors import DataError
from medcls.stats.metrics import cross_entropy
from medcls.stats.bootstrap import bootstrap_binary, bootstrap_loop, bootstrap_multiclass
from medcls.stats.intervals import delong_interval, wilson
from medcls.stats.metrics import confusion_counts
from medcls.stats.metrics import roc_auc
from medcls.stats.bootstrap import WeightedBinary
from medcls.stats.operating_points import predictive_values

LEVEL = 0.95
PROPORTIONS = ("sensitivity", "specificity", "ppv", "npv", "accuracy")
# Figures that condition on the true class: a bootstrap stratified by class is right for them. Every
# other figure depends on the prevalence, which must vary between resamples as between samples.
PREVALENCE_FREE = ("sensitivity", "specificity", "roc_auc", "balanced_accuracy")
# Plug-in estimates the bootstrap pushes further from the truth (ECE is biased upwards): basic
# (reverse-percentile) intervals, which correct for that, instead of percentile ones.
BASIC_INTERVAL = ("ece",)
# Skewed statistics whose percentile intervals under-cover: bias-corrected and accelerated (BCa).
BCA_INTERVAL = ("pr_auc", "f1", "mcc", "balanced_accuracy", "brier")
FIXED_POINTS = (0.90, 0.95)
LOOP_RESAMPLES = 1000  # for metrics without a vectorised form


def check_probabilities(probs: np.ndarray, where: str) -> None:
    """Refuse NaN, infinite or out-of-range probabilities rather than report numbers from them."""
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise DataError(f"{where}: probabilities must be an (N, classes) array, got shape {probs.shape}")
    if not np.isfinite(probs).all():
        bad = int((~np.isfinite(probs)).any(1).sum())
        raise DataError(f"{where}: {bad} prediction(s) are NaN or infinite (did training diverge? lower the learning rate)")
    if probs.min() < 0 or probs.max() > 1:
        raise DataError(f"{where}: probabilities outside [0, 1] (min {probs.min():.3g}, max {probs.max():.3g}): "
                        "pass softmax outputs, not logits")
    if np.abs(probs.sum(1) - 1).max() > 1e-3:
        raise DataError(f"{where}: class probabilities do not sum to 1: pass softmax outputs")


def decisions(probs: np.ndarray, threshold: float | None) -> np.ndarray:
    """Binary: positive when P(positive) >= threshold. Multi-class: the most probable class."""
    if probs.shape[1] == 2 and threshold is not None:
        return (probs[:, 1] >= threshold).astype(np.int64)
    return probs.argmax(1).astype(np.int64)


def split_results(probs: np.ndarray, labels: np.ndarray, threshold: float | None, metrics, y_pred=None) -> dict:
    """Every registered metric on one whole split (never averaged over batches), plus loss and n.
    `y_pred` overrides the decisions (cross-validation: each fold's own threshold)."""

    y_pred = decisions(probs, threshold) if y_pred is None else y_pred
    values = {"n": int(len(labels)), "loss": cross_entropy(probs, labels)}
    for entry in metrics:
        try:
            values[entry.name] = float(entry.obj(labels, probs, y_pred))
        except Exception as exc:  # a metric plugin's failure is reported, not fatal
            values[entry.name] = float("nan")
            values.setdefault("metric_errors", {})[entry.name] = f"{type(exc).__name__}: {exc}"
    return values


def aggregate_patients(probs: np.ndarray, labels: np.ndarray, patients: np.ndarray, how: str):
    """One prediction per patient (mean or max of the images' probabilities); a patient is
    positive when any image is."""
    if how not in ("mean", "max"):
        raise DataError(f"patient aggregation {how!r} is unknown: use mean or max")
    ids, index = np.unique(patients, return_inverse=True)
    label = np.zeros(len(ids), dtype=np.int64)
    np.maximum.at(label, index, labels)
    if how == "max":
        p1 = np.zeros(len(ids))
        np.maximum.at(p1, index, probs[:, 1])
    else:
        p1 = np.bincount(index, weights=probs[:, 1]) / np.bincount(index)
    return np.stack([1 - p1, p1], 1), label


def intervals(probs, labels, threshold, metrics, *, groups=None, level=LEVEL, n_resamples=2000, seed=0,
              y_pred=None) -> dict:
    """An interval for every metric, by the method that covered 95 % in medcls's coverage study
    (benchmarks/interval_coverage.py, docs/intervals.md). Independent cases: Wilson for the
    proportions, DeLong for ROC AUC. Otherwise a bootstrap, over patients when they have several
    images (image-level formulas would be too narrow): stratified by class for figures conditional
    on the class (PREVALENCE_FREE), unstratified for those that depend on prevalence; BCa for
    skewed statistics, the basic interval for ECE."""

    y_pred = decisions(probs, threshold) if y_pred is None else y_pred
    clustered = groups is not None and len(np.unique(groups)) < len(groups)
    binary = probs.shape[1] == 2
    out, vectorised, one_vs_rest, looped = {}, {}, {}, {}
    tp, fp, tn, fn = confusion_counts(labels, y_pred, 1) if binary else (0, 0, 0, 0)
    counts = {"sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp), "ppv": (tp, tp + fp),
              "npv": (tn, tn + fn), "accuracy": (tp + tn, len(labels))}
    for entry in metrics:
        if binary and not clustered and entry.name in PROPORTIONS:
            k, n = counts[entry.name]
            low, high = wilson(k, n, level)
            out[entry.name] = {"low": low, "high": high, "method": "Wilson", "level": level, "count": f"{k}/{n}"}
        elif binary and not clustered and entry.name == "roc_auc":
            low, high = delong_interval(labels, probs[:, 1], level)
            out[entry.name] = {"low": low, "high": high, "method": "DeLong", "level": level}
        elif binary and entry.metadata.get("vectorised") is not None:
            vectorised[entry.name] = entry.metadata["vectorised"]
        elif not binary and entry.metadata.get("vectorised_multiclass") is not None:
            one_vs_rest[entry.name] = entry.metadata["vectorised_multiclass"]
        elif entry.metadata.get("vectorised") is not None and entry.metadata.get("multiclass") in ("macro", "sum"):
            one_vs_rest[entry.name] = (lambda stats, fn=entry.metadata["vectorised"], how=entry.metadata["multiclass"]:
                                       stats.one_vs_rest(fn, how))
        else:
            looped[entry.name] = entry.obj
    options = dict(groups=groups if clustered else None, n_resamples=n_resamples, level=level, seed=seed)

    def record(found: dict, stratified: bool, resamples: int) -> None:
        for name, (low, high) in found.items():
            kind = "stratified by class" if stratified else "unstratified"
            how = (", basic interval; cannot cover an ECE near 0, see docs/intervals.md" if name in BASIC_INTERVAL
                   else ", BCa" if name in BCA_INTERVAL else "")
            method = f"cluster bootstrap (patients, {kind}{how})" if clustered else f"bootstrap ({kind}{how})"
            out[name] = {"low": low, "high": high, "method": method, "level": level, "resamples": resamples}

    for stratified in (True, False):
        chosen = {k: v for k, v in vectorised.items() if (k in PREVALENCE_FREE) == stratified}
        if chosen:
            record(bootstrap_binary(labels, probs[:, 1], y_pred, chosen, stratified=stratified,
                                    basic=tuple(k for k in chosen if k in BASIC_INTERVAL),
                                    bca=tuple(k for k in chosen if k in BCA_INTERVAL), **options),
                   stratified, n_resamples)
        chosen = {k: v for k, v in one_vs_rest.items() if (k in PREVALENCE_FREE) == stratified}
        if chosen:
            record(bootstrap_multiclass(labels, probs, y_pred, chosen, stratified=stratified,
                                        basic=tuple(k for k in chosen if k in BASIC_INTERVAL),
                                        bca=tuple(k for k in chosen if k in BCA_INTERVAL), **options),
                   stratified, n_resamples)
    if looped:
        # One Python call per resample: capped, and the count used is recorded beside the interval.
        options["n_resamples"] = min(n_resamples, LOOP_RESAMPLES)
        record(bootstrap_loop(labels, probs, y_pred, looped, stratified=False, **options), False,
               options["n_resamples"])
    if binary and clustered:
        bound_collapsed(out, labels, y_pred, groups, probs[:, 1], level)
    return out


def bound_collapsed(out: dict, labels, y_pred, groups, p1, level) -> None:
    """A bootstrap interval collapses to a point when a figure is 0 or 1 in every resample (perfect
    separation, no false negatives): that would claim certainty. Bound it instead by Wilson over
    the independent units, the patients (for ROC AUC, those of the smaller class)."""

    def patients(mask) -> int:
        return len(np.unique(groups[mask]))

    units = {"sensitivity": labels == 1, "specificity": labels == 0, "ppv": y_pred == 1, "npv": y_pred == 0,
             "accuracy": np.ones(len(labels), dtype=bool)}
    for name, interval in out.items():
        if interval.get("low") != interval.get("high") or interval.get("low") not in (0.0, 1.0):
            continue
        if name == "roc_auc":
            trials = min(patients(labels == 1), patients(labels == 0))
            auc = roc_auc(labels, np.stack([1 - p1, p1], 1), None)
            k = round(auc * trials)
        elif name in units:
            trials = patients(units[name])
            k = trials if interval["low"] == 1.0 else 0
        else:
            continue
        low, high = wilson(k, trials, level)
        out[name] = {"low": low, "high": high, "level": level,
                     "method": f"Wilson over {trials} patients (the bootstrap collapsed to a point)"}


def operating_figures(probs, labels, threshold, *, groups=None, prevalence=None, level=LEVEL,
                      n_resamples=2000, seed=0) -> dict:
    """The 2x2 table at the operating point, sensitivity at fixed specificity and the reverse,
    and PPV/NPV at a deployment prevalence, each with a bootstrap interval (binary tasks)."""

    if probs.shape[1] != 2:
        return {}
    y_pred = decisions(probs, threshold)
    tp, fp, tn, fn = confusion_counts(labels, y_pred, 1)
    figures = {"threshold": threshold, "table": {"tp": tp, "fp": fp, "tn": tn, "fn": fn}, "values": {}}
    statistics = {}
    for target in FIXED_POINTS:
        statistics[f"sensitivity_at_specificity_{target:.2f}"] = (
            lambda s, t=target: WeightedBinary.sensitivity_at_specificity(s, t))
        statistics[f"specificity_at_sensitivity_{target:.2f}"] = (
            lambda s, t=target: WeightedBinary.specificity_at_sensitivity(s, t))
    if prevalence is not None:
        statistics[f"ppv_at_prevalence_{prevalence:g}"] = (
            lambda s: predictive_values(s.sensitivity(), s.specificity(), prevalence)[0])
        statistics[f"npv_at_prevalence_{prevalence:g}"] = (
            lambda s: predictive_values(s.sensitivity(), s.specificity(), prevalence)[1])
    if len(np.unique(labels)) < 2:
        figures["not_computable"] = "the split has only one class, so ROC-based figures are undefined"
        return figures
    point = WeightedBinary.build(np.ones((1, len(labels)), np.float32), labels, probs[:, 1], y_pred)
    clustered = groups is not None and len(np.unique(groups)) < len(groups)
    # Figures at a fixed point condition on the class (PPV/NPV at a stated prevalence too). They are
    # quantiles of the ROC curve, for which the jackknife (and so BCa) is unreliable: percentile.
    bounds = bootstrap_binary(labels, probs[:, 1], y_pred, statistics, groups=groups if clustered else None,
                              n_resamples=n_resamples, level=level, seed=seed)
    method = "cluster bootstrap (patients, stratified by class)" if clustered else "bootstrap (stratified by class)"
    for name, fn in statistics.items():
        low, high = bounds[name]
        figures["values"][name] = {"value": float(np.asarray(fn(point))[0]), "low": low, "high": high,
                                   "method": method, "level": level}
    return figures


def assess(probs, labels, threshold, metrics, *, patients=None, patient_level=None, prevalence=None,
           n_resamples=2000, seed=0, where="split", y_pred=None) -> dict:
    """Everything reported for one split, at image level or (patient_level = mean/max) per patient.
    `y_pred` (image level only) overrides the decisions at `threshold`."""
    check_probabilities(probs, where)
    level_name = "image"
    groups = patients
    if patient_level:
        if patients is None:
            raise DataError(f"{where}: patient-level scores need patient ids (a patient_id column or --patient-from-dicom)")
        probs, labels = aggregate_patients(probs, labels, patients, patient_level)
        groups, level_name = None, f"patient ({patient_level} of image scores)"
    values = split_results(probs, labels, threshold, metrics, y_pred)
    notes = []
    if len(np.unique(labels)) < 2:
        notes.append(f"ROC AUC, PR AUC and one of sensitivity/specificity are not computable: "
                     f"the {where} split has only one class")
    elif probs.shape[1] == 2:
        notes += filter(None, [small_sample(labels, groups)])
    if len(np.unique(labels)) == 2 and probs.shape[1] == 2 and values.get("roc_auc") in (0.0, 1.0):
        notes.append(f"the scores separate the classes perfectly on {len(labels)} cases: bootstrap intervals "
                     "would collapse to a point, so those figures carry Wilson or DeLong bounds over the "
                     "independent cases or patients instead; read them with the sample size")
    return {
        "level": level_name,
        "per_class": per_class_figures(probs, labels, threshold),
        "values": values,
        "intervals": intervals(probs, labels, threshold, metrics, groups=groups, n_resamples=n_resamples, seed=seed,
                               y_pred=y_pred),
        "operating": operating_figures(probs, labels, threshold, groups=groups, prevalence=prevalence,
                                       n_resamples=n_resamples, seed=seed),
        "notes": notes,
        "patients": None if patients is None else int(len(np.unique(patients))),
    }


SMALL_SAMPLE = 20  # fewer units (images, or patients) of a class than this: bootstrap intervals under-cover


def small_sample(labels: np.ndarray, groups) -> str | None:
    """The warning printed beside the intervals when the smaller class has too few independent
    units for bootstrap intervals to reach 95 % (measured in docs/intervals.md), else None."""
    clustered = groups is not None and len(np.unique(groups)) < len(groups)
    unit = "patients" if clustered else "images"
    counts = [len(np.unique(groups[labels == c])) if clustered else int((labels == c).sum()) for c in (0, 1)]
    if min(counts) >= SMALL_SAMPLE:
        return None
    return (f"small sample ({counts[1]} positive and {counts[0]} negative {unit}): bootstrap intervals (F1, MCC, "
            "PR AUC, Brier, balanced accuracy, calibration slope, figures at a fixed sensitivity or specificity) "
            "covered only about 85-94 % instead of 95 % at this size in medcls's coverage study "
            "(docs/intervals.md); Wilson and DeLong intervals held")


def assess_subgroups(probs, labels, threshold, metrics, column: np.ndarray, name: str, *, patients=None,
                     where: str = "", **options) -> dict:
    """`assess` for each value of a manifest column (site, sex, scanner, ...)."""
    subgroups = {}
    for value in sorted(set(column)):
        members = column == value
        subgroups[str(value)] = assess(probs[members], labels[members], threshold, metrics,
                                       patients=None if patients is None else patients[members],
                                       where=f"{where}subgroup {name}={value}", **options)
    return subgroups


def per_class_figures(probs: np.ndarray, labels: np.ndarray, threshold) -> dict:
    """Multi-class tasks: one-vs-rest values per class (Wilson / DeLong intervals) and the
    micro-averaged ROC AUC beside the macro averages of the main table."""
    from sklearn.metrics import roc_auc_score

    if probs.shape[1] == 2:
        return {}
    y_pred = decisions(probs, threshold)
    rows = {}
    for c in range(probs.shape[1]):
        tp, fp, tn, fn = confusion_counts(labels, y_pred, c)
        truth = (labels == c).astype(np.int64)
        auc = float(roc_auc_score(truth, probs[:, c])) if 0 < truth.sum() < len(truth) else float("nan")
        rows[c] = {
            "n": int(truth.sum()),
            "sensitivity": {"value": tp / (tp + fn) if tp + fn else float("nan"), **dict(zip(("low", "high"), wilson(tp, tp + fn)))},
            "specificity": {"value": tn / (tn + fp) if tn + fp else float("nan"), **dict(zip(("low", "high"), wilson(tn, tn + fp)))},
            "roc_auc": {"value": auc, **dict(zip(("low", "high"), delong_interval(truth, probs[:, c])))},
        }
    onehot = np.eye(probs.shape[1])[labels]
    micro = float(roc_auc_score(onehot, probs, average="micro")) if len(np.unique(labels)) > 1 else float("nan")
    return {"classes": rows, "micro_roc_auc": micro, "methods": "Wilson (sensitivity, specificity), DeLong (ROC AUC), 95%"}

