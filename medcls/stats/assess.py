"""Score one split: every metric on the whole split, an interval for each (method and level named),
the 2x2 table at the operating point, and the figures a clinical paper reports beside them."""

from __future__ import annotations


import numpy as np

from medcls.errors import DataError
from medcls.stats.metrics import cross_entropy
from medcls.stats.bootstrap import bootstrap_binary, bootstrap_loop, bootstrap_multiclass
from medcls.stats.clustered import (MIN_UNITS_BOOTSTRAP, auc_interval, class_units, is_clustered, proportion_interval,
                                     refusal, too_few_for_bootstrap, too_few_in_the_tail)
from medcls.stats.metrics import confusion_counts, decisions  # noqa: F401  (decisions: re-exported)
from medcls.stats.bootstrap import WeightedBinary
from medcls.stats.operating_points import predictive_values

LEVEL = 0.95
PROPORTIONS = ("sensitivity", "specificity", "ppv", "npv", "accuracy")
# Figures that condition on the true class: a bootstrap stratified by class is right for them. Every
# other figure depends on the prevalence, which must vary between resamples as between samples.
PREVALENCE_FREE = ("sensitivity", "specificity", "roc_auc", "balanced_accuracy")
# Figures printed without an interval, and why (docs/intervals.md has the coverage that says so).
NO_INTERVAL = {"ece": "the plug-in ECE is biased upwards and no bootstrap interval covered it (docs/intervals.md)"}
# Skewed statistics whose percentile intervals under-cover: bias-corrected and accelerated (BCa).
BCA_INTERVAL = ("pr_auc", "f1", "mcc", "balanced_accuracy", "brier")
FIXED_POINTS = (0.90, 0.95)
# Multi-class figures averaged over the classes' one-vs-rest values (the built-in `multiclass="macro"`).
MACRO_OVER_CLASSES = ("roc_auc", "sensitivity", "specificity", "ppv", "npv", "f1", "pr_auc", "balanced_accuracy")
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
    (benchmarks/interval_coverage.py, docs/intervals.md), or `low` None with the reason it refuses.
    Binary proportions: Wilson, on the design-effect sample size when patients have several images;
    ROC AUC: DeLong, Obuchowski's clustered form for several images a patient (medcls.stats.clustered).
    Every other figure: a bootstrap, over patients when they have several images, stratified by
    class for figures conditional on the class (PREVALENCE_FREE), unstratified for those that depend
    on prevalence, BCa for skewed statistics; refused below MIN_UNITS_BOOTSTRAP patients (or images)
    of a class, where it under-covered, and where it collapses to a point. ECE gets no interval: its
    plug-in estimate is biased and no bootstrap interval covered it (docs/intervals.md)."""

    y_pred = decisions(probs, threshold) if y_pred is None else y_pred
    clustered = is_clustered(groups)
    binary = probs.shape[1] == 2
    out, vectorised, one_vs_rest, looped = {}, {}, {}, {}
    members = {"sensitivity": (y_pred == 1, labels == 1), "specificity": (y_pred == 0, labels == 0),
               "ppv": (labels == 1, y_pred == 1), "npv": (labels == 0, y_pred == 0),
               "accuracy": (y_pred == labels, np.ones(len(labels), dtype=bool))}
    too_few = too_few_for_bootstrap(labels, groups)
    for entry in metrics:
        if binary and entry.name in PROPORTIONS:
            hits, within = members[entry.name]
            found = proportion_interval(hits, within, groups, level)
            out[entry.name] = {**found.as_dict(level), "count": f"{int((hits & within).sum())}/{int(within.sum())}"}
        elif binary and entry.name == "roc_auc":
            out[entry.name] = auc_interval(labels, probs[:, 1], groups, level).as_dict(level)
        elif entry.name in NO_INTERVAL:
            out[entry.name] = refusal(NO_INTERVAL[entry.name]).as_dict(level)
        elif too_few:
            out[entry.name] = refusal(too_few, "bootstrap").as_dict(level)
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
            how = ", BCa" if name in BCA_INTERVAL else ""
            method = f"cluster bootstrap (patients, {kind}{how})" if clustered else f"bootstrap ({kind}{how})"
            out[name] = {"low": low, "high": high, "method": method, "level": level, "resamples": resamples}
            if low == high:  # every resample gave the same value: that is no evidence of certainty
                out[name].update(low=None, high=None, refused="the bootstrap collapsed to a point "
                                 "(the scores separate the classes on these cases)")

    for stratified in (True, False):
        chosen = {k: v for k, v in vectorised.items() if (k in PREVALENCE_FREE) == stratified}
        if chosen:
            record(bootstrap_binary(labels, probs[:, 1], y_pred, chosen, stratified=stratified,
                                    bca=tuple(k for k in chosen if k in BCA_INTERVAL), **options),
                   stratified, n_resamples)
        chosen = {k: v for k, v in one_vs_rest.items() if (k in PREVALENCE_FREE) == stratified}
        if chosen:
            record(bootstrap_multiclass(labels, probs, y_pred, chosen, stratified=stratified,
                                        bca=tuple(k for k in chosen if k in BCA_INTERVAL), **options),
                   stratified, n_resamples)
    if looped:
        # One Python call per resample: capped, and the count used is recorded beside the interval.
        options["n_resamples"] = min(n_resamples, LOOP_RESAMPLES)
        record(bootstrap_loop(labels, probs, y_pred, looped, stratified=False, **options), False,
               options["n_resamples"])
    return out


def operating_figures(probs, labels, threshold, *, groups=None, prevalence=None, level=LEVEL,
                      n_resamples=2000, seed=0, y_pred=None) -> dict:
    """The 2x2 table at the operating point, sensitivity at fixed specificity and the reverse,
    and PPV/NPV at a deployment prevalence, each with a bootstrap interval (binary tasks) or the
    reason it has none. `y_pred` overrides the decisions at `threshold` (cross-validation: each
    fold's own threshold), so the table agrees with the figures beside it."""

    if probs.shape[1] != 2:
        return {}
    y_pred = decisions(probs, threshold) if y_pred is None else y_pred
    tp, fp, tn, fn = confusion_counts(labels, y_pred, 1)
    figures = {"threshold": threshold, "table": {"tp": tp, "fp": fp, "tn": tn, "fn": fn}, "values": {}}
    statistics, tails = {}, {}
    for target in FIXED_POINTS:
        for figure in (f"sensitivity_at_specificity_{target:.2f}", f"specificity_at_sensitivity_{target:.2f}"):
            tails[figure] = too_few_in_the_tail(labels, groups, figure, target)
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
    clustered = is_clustered(groups)
    too_few = too_few_for_bootstrap(labels, groups)
    if too_few:
        for name, fn in statistics.items():
            figures["values"][name] = {"value": float(np.asarray(fn(point))[0]),
                                       **refusal(too_few, "bootstrap").as_dict(level)}
        return figures
    # Figures at a fixed point condition on the class (PPV/NPV at a stated prevalence too). They are
    # quantiles of the ROC curve, for which the jackknife (and so BCa) is unreliable: percentile.
    bounds = bootstrap_binary(labels, probs[:, 1], y_pred, statistics, groups=groups if clustered else None,
                              n_resamples=n_resamples, level=level, seed=seed)
    method = "cluster bootstrap (patients, stratified by class)" if clustered else "bootstrap (stratified by class)"
    for name, fn in statistics.items():
        low, high = bounds[name]
        figures["values"][name] = {"value": float(np.asarray(fn(point))[0]), "low": low, "high": high,
                                   "method": method, "level": level}
        if low == high or tails.get(name):
            figures["values"][name].update(low=None, high=None,
                                           refused=tails.get(name) or "the bootstrap collapsed to a point")
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
                     "would collapse to a point, so those figures have none; sensitivity, specificity and ROC "
                     "AUC carry Wilson bounds over the independent cases or patients; read them with the sample size")
    found = intervals(probs, labels, threshold, metrics, groups=groups, n_resamples=n_resamples, seed=seed,
                      y_pred=y_pred)
    absent = sorted(set(range(probs.shape[1])) - set(np.unique(labels).tolist()))
    for name, interval in found.items():
        value = values.get(name)
        if isinstance(value, float) and np.isnan(value):
            found[name] = refusal("the figure is not computable on this split", interval["method"]).as_dict(LEVEL)
        elif absent and probs.shape[1] > 2 and name in MACRO_OVER_CLASSES and interval.get("low") is not None:
            # The resamples average over the classes present, the estimate counts the absent one too.
            found[name] = refusal(f"class {absent[0]} has no case in this split", interval["method"]).as_dict(LEVEL)
    return {
        "level": level_name,
        "per_class": per_class_figures(probs, labels, threshold, groups),
        "values": values,
        "intervals": found,
        "operating": operating_figures(probs, labels, threshold, groups=groups, prevalence=prevalence,
                                       n_resamples=n_resamples, seed=seed, y_pred=y_pred),
        "notes": notes,
        "patients": None if patients is None else int(len(np.unique(patients))),
    }


def small_sample(labels: np.ndarray, groups) -> str | None:
    """The note printed beside the intervals when the smaller class has too few independent units
    for bootstrap intervals to cover (docs/intervals.md), so those figures are printed without, else None."""
    by_class, unit = class_units(labels, groups)
    counts = [by_class.get(0, 0), by_class.get(1, 0)]
    if min(counts) >= MIN_UNITS_BOOTSTRAP:
        return None
    return (f"small sample ({counts[1]} positive and {counts[0]} negative {unit}): F1, MCC, PR AUC, Brier, "
            "balanced accuracy, the calibration slope and the figures at a fixed sensitivity or specificity are "
            f"printed without an interval (a bootstrap on fewer than {MIN_UNITS_BOOTSTRAP} {unit} of a class did not "
            "cover in medcls's coverage study, docs/intervals.md); sensitivity, specificity and ROC AUC keep theirs")


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


def per_class_figures(probs: np.ndarray, labels: np.ndarray, threshold, groups=None) -> dict:
    """Multi-class tasks: one-vs-rest values per class (Wilson / DeLong intervals, over patients when
    `groups` gives several images a patient) and the micro-averaged ROC AUC beside the macro
    averages of the main table."""
    from sklearn.metrics import roc_auc_score

    if probs.shape[1] == 2:
        return {}
    y_pred = decisions(probs, threshold)
    rows = {}
    for c in range(probs.shape[1]):
        tp, fp, tn, fn = confusion_counts(labels, y_pred, c)
        truth = (labels == c).astype(np.int64)
        auc = float(roc_auc_score(truth, probs[:, c])) if 0 < truth.sum() < len(truth) else float("nan")
        bounds = {"sensitivity": proportion_interval(y_pred == c, truth == 1, groups),
                  "specificity": proportion_interval(y_pred != c, truth == 0, groups),
                  "roc_auc": auc_interval(truth, probs[:, c], groups)}
        values = {"sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
                  "specificity": tn / (tn + fp) if tn + fp else float("nan"), "roc_auc": auc}
        rows[c] = {"n": int(truth.sum()), **{name: {"value": values[name], "low": found.low, "high": found.high,
                                                    **({"refused": found.refused} if found.refused else {})}
                                             for name, found in bounds.items()}}
    onehot = np.eye(probs.shape[1])[labels]
    micro = float(roc_auc_score(onehot, probs, average="micro")) if len(np.unique(labels)) > 1 else float("nan")
    methods = ("Wilson on the design-effect sample size (sensitivity, specificity), Obuchowski's clustered DeLong "
               "(ROC AUC), 95%" if is_clustered(groups) else "Wilson (sensitivity, specificity), DeLong (ROC AUC), 95%")
    return {"classes": rows, "micro_roc_auc": micro, "methods": methods}

