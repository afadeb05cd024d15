"""The public Python API: train from a notebook, get a `Run` back, predict, evaluate, export, explain.

    import medcls
    run = medcls.train(images=x, labels=y, backbone="efficientnet_lite0", epochs=3)
    run.metrics.test.roc_auc          # Estimate(value=0.93, low=0.85, high=0.97, method='DeLong')
    probs = run.predict(new_images)   # (N, K) calibrated probabilities
    again = medcls.load_run(run.path)

Every CLI command is a thin call of what this module offers; it adds no behaviour of its own.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from medcls.config import TrainConfig, make_config, read_config_file, save_config  # noqa: F401  (public)
from medcls.errors import ConfigError, DataError, PluginError
from medcls.plugins.manager import IN_PROCESS, get_plugin_manager, register_in_process, unregister_in_process
from medcls.plugins.registry import Registries

if TYPE_CHECKING:
    from medcls.core.runs import RunInfo

# --- typed results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A figure with its 95 % interval and how the interval was computed."""

    value: float
    low: float | None = None
    high: float | None = None
    method: str | None = None
    refused: str | None = None  # why there is no interval (too few patients, ...), when low is None

    def __float__(self) -> float:
        return float(self.value)

    def __format__(self, spec: str) -> str:  # f"{e}" is str(e), with the interval; f"{e:.2f}" the value
        return format(self.value, spec) if spec else str(self)

    def __str__(self) -> str:
        if self.refused:
            return f"{self.value:.3f} (no interval: {self.refused})"
        if self.low is None or self.high is None:
            return f"{self.value:.3f}"
        return f"{self.value:.3f} ({self.low:.3f}-{self.high:.3f})"


class SplitMetrics(Mapping):
    """One split's figures by name (`m["roc_auc"]` or `m.roc_auc`), each an Estimate; `n` cases."""

    def __init__(self, values: dict, intervals: dict | None = None, notes: Sequence[str] = ()) -> None:
        intervals = intervals or {}
        self.n = int(values.get("n", 0))
        self.notes = list(notes)  # what to read the figures with (small sample, perfect separation, ...)
        self._figures = {}
        for name, value in values.items():
            if name == "n" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            interval = intervals.get(name) or {}
            self._figures[name] = Estimate(float(value), interval.get("low"), interval.get("high"),
                                           interval.get("method"), interval.get("refused"))

    def __getitem__(self, name: str) -> Estimate:
        return self._figures[name]

    def __getattr__(self, name: str) -> Estimate:
        try:
            return self._figures[name]
        except KeyError:
            raise AttributeError(f"no metric {name!r}; available: {', '.join(self._figures)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._figures)

    def __len__(self) -> int:
        return len(self._figures)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={self._figures[k]}" for k in ("roc_auc", "sensitivity", "specificity")
                          if k in self._figures)
        return f"SplitMetrics(n={self.n}, {shown})"


@dataclass(frozen=True)
class RunMetrics:
    """Train, validation and test figures of a run, scored the same way, and the gap between them."""

    train: SplitMetrics
    val: SplitMetrics
    test: SplitMetrics
    gap: dict  # train minus test, per metric
    threshold: float | None
    reading: str

    @classmethod
    def from_json(cls, payload: dict) -> "RunMetrics":
        intervals = payload.get("intervals", {})
        splits = {s: SplitMetrics(payload.get(s, {}), intervals.get(s)) for s in ("train", "val", "test")}
        return cls(**splits, gap=dict(payload.get("gap", {})), threshold=payload.get("threshold"),
                   reading=payload.get("reading", ""))


@dataclass(frozen=True)
class Evaluation:
    """`Run.evaluate`: the cases scored, their figures, and the folder with the report."""

    split: str
    metrics: SplitMetrics
    path: Path

    @property
    def n(self) -> int:
        return self.metrics.n


@dataclass(frozen=True)
class CaseToReview:
    """A case given a low probability for its own label by a model that never saw it (a wrong
    label, a look-alike of the other class, or an image the models cannot read yet)."""

    case: str
    label: str
    fold: int | str | None  # its cross-validation fold; None for scored predictions without a fold column
    p_label: float  # the probability the model gave its own label
    auc_without: float | None  # the pooled ROC AUC of every other case (binary tasks)


@dataclass(frozen=True)
class CrossValidation:
    """`medcls.cross_validate`: the pooled out-of-fold figures with intervals, each fold's test
    figures, their mean and sd, the cases to look at again, and the folder (fold-N/ runs,
    oof_predictions.csv, cv_metrics.json, report.md)."""

    pooled: SplitMetrics
    folds: list[SplitMetrics]  # fold k at index k - 1
    thresholds: list  # each fold's operating point, chosen on its own validation split
    spread: dict  # per metric: mean and sd over folds
    to_review: list[CaseToReview]
    path: Path

    @classmethod
    def from_json(cls, payload: dict, path: Path) -> "CrossValidation":
        folds = [SplitMetrics({k: v for k, v in fold.items() if k not in ("fold", "threshold")},
                              {"roc_auc": fold.get("roc_auc_interval")}) for fold in payload["per_fold"]]
        return cls(SplitMetrics({**payload["pooled"], "n": payload["n"]}, payload["pooled_intervals"]), folds,
                   [fold["threshold"] for fold in payload["per_fold"]], dict(payload["spread"]),
                   [CaseToReview(**found) for found in payload.get("to_review", [])], Path(path))


# --- plugins and registries ------------------------------------------------------------------


def assess(labels, probabilities, *, patients=None, threshold: float | None = 0.5, resamples: int = 2000,
           seed: int = 0) -> SplitMetrics:
    """Every registered metric of one split with its interval, from arrays: integer labels (N,) and
    probabilities, (N,) of the positive class or (N, K) per class; `patients` (N,) ids make every
    interval count patients, not images. The same function training, evaluate, score and
    cross-validation call per split (medcls.stats.assess.assess); pure: no files, no figures.
    A figure whose data cannot support an interval has `low is None` and the reason in `refused`."""
    from medcls.stats.assess import assess as assess_split

    labels = np.asarray(labels)
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim == 1:
        probs = np.stack([1 - probs, probs], 1)
    if labels.ndim != 1 or len(labels) != len(probs):
        raise DataError(f"assess: labels of shape {labels.shape} do not match probabilities of shape {probs.shape}: "
                        "give one integer label per case")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise DataError(f"assess: labels must be integers 0..{probs.shape[1] - 1} (class indices of the probability "
                        "columns)")
    if patients is not None and len(patients) != len(labels):
        raise DataError(f"assess: {len(patients)} patient ids for {len(labels)} cases: give one per case")
    found = assess_split(probs, labels.astype(np.int64), threshold, list(make_registries()["metrics"]),
                         patients=None if patients is None else np.asarray(patients), n_resamples=resamples,
                         seed=seed, where="assess")
    operating = found["operating"].get("values", {})
    values = {**found["values"], **{name: v["value"] for name, v in operating.items()}}
    return SplitMetrics(values, {**found["intervals"], **operating}, found["notes"])


def make_registries() -> Registries:
    """Everything registered by the built-ins, installed plugins and `register_plugin` calls."""
    return Registries(get_plugin_manager())


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register an in-process plugin (a module or object with `@medcls.hookimpl` functions), e.g. a
    backbone defined in a notebook; every later call of medcls in this process sees it. The name
    (default: the module's or class's) is returned; registering that name again replaces the
    plugin, as running a notebook cell again expects."""
    return register_in_process(plugin, name)


def unregister_plugin(name: str) -> None:
    """Forget a plugin registered with `register_plugin`; later calls no longer see its parts."""
    if not unregister_in_process(name):
        known = ", ".join(repr(n) for n, _ in IN_PROCESS) or "none"
        raise PluginError(f"no plugin named {name!r} was registered in this process (registered: {known})")


def list_backbones(pattern: str | None = None, *, pretrained: bool = False) -> list[str]:
    """Registered backbone names, optionally filtered by a glob (`'convnext*'`) or a substring;
    with `pretrained`, the names with published weights (timm's tags: `convnext_small.fb_in22k`)."""
    found = make_registries()["backbones"]
    if pretrained:
        return found.pretrained_names(pattern)
    return [entry.name for entry in found.matching(pattern)]


def create_classifier(backbone: str, num_classes: int, *, in_chans: int = 3, pretrained: bool = False,
                      dropout: float = 0.0, weights: str | None = None, slices: int = 0,
                      acs: bool = False, input_shape: tuple | None = None, **backbone_args):
    """A medcls classifier (backbone, input normalisation, dropout, new head) like
    `timm.create_model`: it takes images in [0, 1] and returns class logits. Pretrained weights are
    never replaced by random ones silently: unavailable weights raise WeightsUnavailableError."""
    from medcls.core.models import build_classifier

    if num_classes < 2:
        raise ConfigError(f"num_classes = {num_classes}: a classifier needs at least 2 classes")
    model, _ = build_classifier(make_registries(), backbone, num_classes, in_chans, dropout, pretrained, weights, slices,
                                backbone_args=backbone_args or None, input_shape=input_shape, acs=acs)
    return model


# --- training ----------------------------------------------------------------------------------


def train(data: str | os.PathLike | None = None, *, images=None, labels=None, patients=None, split=None,
          config: TrainConfig | str | os.PathLike | None = None, progress=None, default_folder: bool = False,
          **keys: Any) -> "Run | None":
    """Train a run and return it.

    `data`: a folder (a sub-folder per class), a CSV manifest, an .npz, or "synthetic"; or, instead,
    in-memory `images` (numpy or torch: (N, H, W), (N, H, W, C), (N, C, H, W), or volumes
    (N, D, H, W) for a 3D backbone; uint8 or floats in [0, 1]) with `labels` and optionally
    `patients` (grouped into one split each) and `split` (train/val/test per image). `config`: a YAML
    or TOML file, or a TrainConfig; every config key can be given as a keyword (`backbone="resnet18",
    epochs=3`) and is checked as the CLI checks it. Without `out` the run lives in a temporary folder
    that disappears with the Run object; give `out=` to keep it, or `default_folder=True` for a new
    folder runs/<backbone>-<date>-<time> (what `medcls train` does without --out). `progress(stage, epoch)` may return
    a per-epoch progress callback (the CLI's bars). Under torchrun, processes other than rank 0
    return None (rank 0 writes the run).
    """
    from medcls.workflows.ensemble import train_ensemble
    from medcls.workflows.train import train as train_run

    if images is not None and data is not None:
        raise ConfigError("give either data (a path or 'synthetic') or images with labels, not both")
    if images is None and (labels is not None or patients is not None or split is not None):
        raise ConfigError("labels, patients and split go with images=: give the images too")
    overrides = dict(keys)
    if data is not None:
        overrides["data"] = str(data)
    scratch = None
    no_folder = overrides.get("out") is None and (not isinstance(config, TrainConfig) or config.out is None)
    if no_folder and not default_folder:
        scratch = tempfile.TemporaryDirectory(prefix="medcls-run-")
        overrides["out"] = str(Path(scratch.name) / "run")
    chosen = configure(config, overrides, where="medcls.train")
    found = make_registries()
    given = chosen_keys(config, overrides)
    chosen = planned(chosen, found, given)
    if images is not None:
        chosen = with_arrays(chosen, found, images, labels, patients=patients, split=split)
    if chosen.folds:
        raise ConfigError("cross-validation trains a model per fold, not one Run: call "
                          "medcls.cross_validate(..., folds=K) (or `medcls train --folds K`)")
    if chosen.ensemble:
        summary = train_ensemble(chosen, found, progress_factory=epoch_progress(progress), given=given)
    else:
        summary = train_run(chosen, found, progress_factory=epoch_progress(progress), given=given)
    if "out" not in summary:
        return None  # a DDP process other than rank 0
    return load_run(summary["out"], registries=found, _scratch=scratch)


def chosen_keys(config, overrides: dict) -> set[str]:
    """The keys the user set: the keywords and the config file's; for a TrainConfig, those that
    differ from their defaults."""
    from medcls.workflows.plan import given_keys

    if isinstance(config, TrainConfig):
        return given_keys(config) | set(overrides)
    return set(overrides) | (set(read_config_file(config)) if config is not None else set())


def planned(config: TrainConfig, found, given: set[str]) -> TrainConfig:
    """The plan's rules applied to the keys the user did not set, each said in one line."""
    from medcls.workflows.plan import planned_config

    config, ruled = planned_config(config, found, given)
    if ruled:
        shown = ", ".join(f"{key} {getattr(config, key)}" for key in ruled)
        logging.getLogger("medcls").info(f"plan: {shown}: {next(iter(ruled.values()))}")
    return config


def plan(data: str | os.PathLike | None = None, *, config: TrainConfig | str | os.PathLike | None = None,
         **keys: Any):
    """The data's fingerprint (images, patients, classes, size, 2D or 3D, its own split) and the
    recipe a training on it would use, each key with its reason (`medcls.workflows.plan.Plan`):
    the keys given here or in `config` are the user's, sizes follow their rules, the rest are
    today's defaults. Lists the data and reads file headers; decodes no image."""
    from medcls.workflows.plan import make_plan, planned_config
    from medcls.workflows.train import checked_config, resolve_pretrained

    overrides = dict(keys)
    if data is not None:
        overrides["data"] = str(data)
    chosen = configure(config, overrides, where="medcls.plan")
    found = make_registries()
    given = chosen_keys(config, overrides)
    planned_here = planned_config(chosen, found, given)[0]
    resolved = dataclasses.replace(checked_config(planned_here, found), pretrained=resolve_pretrained(planned_here, found))
    return make_plan(chosen, found, given, resolved=resolved)


def epoch_progress(progress):
    """`progress=None`: per-epoch bars in a notebook (tqdm's widget), none elsewhere; False: none."""
    from medcls.logs import default_epoch_bars

    return default_epoch_bars() if progress is None else (progress or None)


def resume(run: str | os.PathLike, *, progress=None) -> "Run | None":
    """Continue an interrupted run (its folder) from its last checkpoint, with its own settings;
    it ends where the uninterrupted run would have."""
    from medcls.workflows.train import resume_config

    return train(config=resume_config(run), progress=progress)


def launch_distributed(devices: int, argv: list[str]) -> int:
    """Run `medcls <argv>` (without --devices) under torchrun on `devices` processes (DDP); returns
    torchrun's exit status."""
    from medcls.core.distributed import launch, without_option

    return launch(devices, without_option(argv, "--devices"))


def with_arrays(config: TrainConfig, found: Registries, images, labels, *, patients=None, split=None) -> TrainConfig:
    """The config reading in-memory images (registered as a `memory:` source): volumes when the
    backbone reads volumes, else 2D images."""
    from medcls.data.arrays import array_cases, remember
    from medcls.data.loading import spatial_dims

    if labels is None:
        raise ConfigError("images= needs labels=: one class label per image")
    volumes = spatial_dims(config, found) == 3
    return dataclasses.replace(config, data=remember(
        array_cases(images, labels, patients=patients, split=split, volumes=volumes)))


def configure(config: TrainConfig | str | os.PathLike | None, overrides: dict, *, where: str) -> TrainConfig:
    """A TrainConfig from a file or another TrainConfig, with keyword overrides, checked."""
    if isinstance(config, TrainConfig):
        return make_config(config.to_dict(), overrides, where=where)
    file_values = read_config_file(config) if config is not None else {}
    return make_config(file_values, overrides, where=f"config file '{config}'" if config else where)


def cross_validate(data: str | os.PathLike | None = None, *, images=None, labels=None, patients=None,
                   config: TrainConfig | str | os.PathLike | None = None, progress=None,
                   **keys: Any) -> CrossValidation:
    """K-fold cross-validation grouped by patient (`folds`, default 5): a run per fold under `out`;
    returns each fold's figures, the pooled out-of-fold figures with intervals and the cases to
    look at again."""
    from medcls.workflows.crossval import cross_validate as run_folds

    overrides = dict(keys)
    if data is not None:
        overrides["data"] = str(data)
    chosen = configure(config, overrides, where="medcls.cross_validate")
    if not chosen.folds:
        chosen = dataclasses.replace(chosen, folds=5)
    found = make_registries()
    if images is not None:
        chosen = with_arrays(chosen, found, images, labels, patients=patients)
    result = run_folds(chosen, found, progress_factory=epoch_progress(progress))
    return CrossValidation.from_json(result, result["out"])


def experiment(vary: str, seeds: list[int], *, out: str | os.PathLike = "runs/experiment",
               config: TrainConfig | str | os.PathLike | None = None, **keys: Any) -> dict:
    """Vary one setting (`"policy=none,interpretable,aggressive"`, `"finetune=scratch,frozen,top,all"`)
    with everything else fixed and the split held, repeat over `seeds`, and tabulate test results
    (experiment.csv, experiment.md, experiment.png in `out`)."""
    from medcls.workflows.experiment import parse_vary, run_experiment

    key, values = parse_vary(vary)
    chosen = configure(config, keys, where="medcls.experiment")
    return run_experiment(chosen, key, values, list(seeds), make_registries(), out=Path(out))


def compare(run_a: str | os.PathLike, run_b: str | os.PathLike, *, data: str | None = None,
            split: str | None = None, threshold_rule: str = "youden", target: float = 0.95, **columns) -> dict:
    """Two runs, or two prediction CSV files, on the same cases: paired DeLong for ROC AUC, exact
    McNemar for sensitivity and specificity; refuses when the cases differ. Files are matched by
    their key column, each at its operating point from its own validation rows (`threshold_rule`);
    `columns` are `read_prediction_file`'s column options."""
    files = [str(p).lower().endswith(".csv") for p in (run_a, run_b)]
    if any(files):
        from medcls.workflows.score import compare_prediction_files

        if not all(files):
            raise ConfigError(f"compare two runs or two prediction files, not one of each ('{run_a}', '{run_b}')")
        return compare_prediction_files(run_a, run_b, split=split, threshold_rule=threshold_rule, target=target,
                                        **columns)
    from medcls.workflows.compare import compare_runs

    return compare_runs(run_a, run_b, make_registries(), data=data, split=split)


@dataclass(frozen=True)
class Scores:
    """`medcls.score`: the figures of every split of a predictions file, and the report folder."""

    classes: list[str]
    threshold: float | None
    operating_point: str
    splits: dict[str, SplitMetrics]
    path: Path
    to_review: list[CaseToReview] = field(default_factory=list)  # of the main split, lowest P(label) first

    @property
    def test(self) -> SplitMetrics:
        """The main split: test rows, else the only one."""
        return next(iter(self.splits.values()))


def score(predictions: str | os.PathLike | Sequence[str | os.PathLike], *, out: str | os.PathLike | None = None,
          label_column: str = "label",
          score_column: str | None = None, split_column: str = "split", patient_column: str | None = None,
          positive_class: str | None = None, threshold: float | None = None, threshold_rule: str = "youden",
          target: float = 0.95, by: str | None = None, prevalence: float | None = None, bootstrap: int = 2000,
          seed: int = 0) -> Scores:
    """The whole evaluation for predictions from any tool: a CSV with a label column and p_<class>
    (or prob_<class>) columns (or `score_column` with P(positive)), optional key, split, patient and
    subgroup columns. Several files for the same cases (matched by key) are scored as the mean of
    their probabilities: an ensemble of runs already trained. The threshold comes from the
    validation rows by `threshold_rule`, or is given. Writes metrics.json, report.md and report.html
    into `out` (default: a new folder beside the first file)."""
    from medcls.folders import claim_folder, removed_if_left_empty, reserve_folder
    from medcls.workflows.score import score_predictions

    sources = [Path(predictions)] if isinstance(predictions, (str, os.PathLike)) else [Path(p) for p in predictions]
    if not sources:
        raise ConfigError("medcls.score needs at least one predictions file")
    name = f"{sources[0].stem}-scores" if len(sources) == 1 else f"mean-of-{len(sources)}-scores"
    for source in sources:  # a missing file is named before any folder is made for its report
        if not source.is_file():
            raise DataError(f"predictions file '{source}' does not exist")
    folder = claim_folder(out, by="medcls score") if out is not None else reserve_folder(sources[0].with_name(name))
    with removed_if_left_empty(folder):
        result = score_predictions(sources, make_registries(), out=folder, label_column=label_column,
                                   score_column=score_column, split_column=split_column, patient_column=patient_column,
                                   positive_class=positive_class, threshold=threshold, threshold_rule=threshold_rule,
                                   target=target, by=by, prevalence=prevalence, n_resamples=bootstrap, seed=seed)
    return Scores(result["classes"], result["threshold"], result["operating_point"],
                  {s: SplitMetrics(result[s], result["intervals"][s]) for s in result["splits"]}, folder,
                  [CaseToReview(**found) for found in result["to_review"]])


def preview_policy(policy: str, out: str | os.PathLike, *, data: str = "synthetic", count: int = 8, views: int = 6,
                   **keys: Any) -> tuple[int, int]:
    """A PNG grid of `count` real images, each beside `views` augmented versions; returns its size."""
    from medcls.workflows.preview import preview

    chosen = make_config(overrides={**keys, "policy": policy, "data": data}, where="medcls.preview_policy")
    return preview(chosen, make_registries(), count=count, views=views, out=Path(out))


def registered(kind: str, pattern: str | None = None) -> list:
    """What plugins registered of one kind (backbones, policies, metrics, datasets, readers,
    weights), optionally matching a pattern: entries with name, plugin, description, metadata."""
    from medcls.plugins.registry import KINDS

    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}: choose one of {', '.join(KINDS)}")
    return make_registries()[kind].matching(pattern)


def plugins(include_builtin: bool = False) -> list[dict]:
    """Installed plugins (and with include_builtin the built-in ones): name, version, hooks, error."""
    from medcls.plugins.manager import describe_plugins

    return describe_plugins(get_plugin_manager(), include_builtin=include_builtin)


def config_keys() -> list[dict]:
    """Every config key with its section, type, default and one-line meaning."""
    from medcls.config import describe_keys

    return describe_keys()


# --- a finished run ----------------------------------------------------------------------------


def finding_table(payload: dict) -> str:
    """Multi-label: each finding's operating point and test figures with intervals, as printed."""
    from medcls.reports.report import format_value, markdown_table

    test = payload.get("findings", {}).get("test", {})
    rows = [[name, f"{threshold:.4f}", *[format_value(found["values"].get(m), found["intervals"].get(m))
                                          for m in ("roc_auc", "sensitivity", "specificity")]]
            for (name, found), threshold in zip(test.get("findings", {}).items(), payload.get("threshold") or [])]
    summary = test.get("summary", {})
    intervals = test.get("summary_intervals", {})
    return ("Per finding (test), each at its own operating point chosen on validation:\n"
            + markdown_table(["finding", "threshold", "roc_auc", "sensitivity", "specificity"], rows)
            + f"\nMacro ROC AUC {format_value(summary.get('macro_roc_auc'), intervals.get('macro_roc_auc'))}, "
              f"micro ROC AUC {format_value(summary.get('micro_roc_auc'), intervals.get('micro_roc_auc'))}.")


def load_run(path: str | os.PathLike, *, device: str = "auto", registries: Registries | None = None,
             _scratch=None) -> "Run":
    """A finished run folder (from `medcls train` or `medcls.train(out=...)`) as a Run."""
    from medcls.core.runs import load_model

    path = Path(path)
    found = registries or make_registries()
    model, info = load_model(path, found)
    return Run(path, model, info, found, device=device, scratch=_scratch)


class Run:
    """A trained model with everything it was trained with: `.model` (an nn.Module taking images in
    [0, 1] and returning logits), `.classes`, `.positive_class`, `.threshold`, `.temperature`,
    `.metrics`, `.history`, `.config`, `.path`; and what can be done with it: `.predict`, `.decide`,
    `.evaluate`, `.export`, `.explain`."""

    def __init__(self, path: Path, model, info: RunInfo, found: Registries, *, device: str = "auto",
                 scratch=None) -> None:
        self.path, self.model, self.info, self.registries = Path(path), model, info, found
        self.device = device
        self._scratch = scratch  # a temporary run folder lives as long as the Run
        self._predictor = None

    def save(self, out: str | os.PathLike) -> "Run":
        """Keep a run trained without `out=` (it lives in a temporary folder, removed with the Run):
        copy it into `out`, a new or empty folder, and work from there."""
        import shutil

        from medcls.reports.report import require_new_folder

        out = Path(out)
        if not (self.path / "model.json").is_file():
            raise DataError(f"run folder '{self.path}' is gone (its model.json with it): nothing is left to save; "
                            "train again with out= to keep the run from the start")
        require_new_folder(out, "out")
        shutil.copytree(self.path, out, dirs_exist_ok=True)
        save_config(dataclasses.replace(self.config, out=str(out)), out / "config.yaml")  # where it lives now
        self.path, self._scratch = out, None  # the temporary folder goes with its last reference
        return self

    def _require_lasting(self, out, what: str) -> None:
        """`what` (export, explain) writes into the run's folder unless given `out`: a temporary run
        asks for a folder of its own rather than write files that vanish with it."""
        if out is None and self._scratch is not None:
            raise ConfigError(f"this run lives in a temporary folder, removed with the Run: give {what} an out= "
                              "folder, or keep the run first with run.save('runs/NAME')")

    def __repr__(self) -> str:
        test = self.metrics.test
        shown = f", test ROC AUC {test['roc_auc']}" if "roc_auc" in test else ""
        return f"Run({str(self.path)!r}, backbone={self.info.backbone!r}, classes={self.classes}{shown})"

    # what the run is

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    @property
    def multi_label(self) -> bool:
        """Whether `.classes` are findings, each with its own sigmoid probability and threshold."""
        return bool(self.info.multi_label)

    @property
    def positive_class(self) -> str | None:
        return self.info.positive_class

    @property
    def threshold(self) -> float | None:
        return self.info.threshold

    @property
    def temperature(self) -> float | None:
        return self.info.temperature

    @property
    def reads_volumes(self) -> bool:
        return int(self.info.spatial_dims) == 3

    @functools.cached_property
    def config(self) -> TrainConfig:
        """The run's config.yaml, read once (a shared Hugging Face folder has none: the defaults with
        the model's own settings)."""
        if not (self.path / "config.yaml").is_file():
            keys = {k: self.info[k] for k in ("backbone", "image_size", "slices", "window", "crop_foreground")
                    if k in self.info}
            return make_config({}, keys, where=f"model folder '{self.path}'")
        return make_config(read_config_file(self.path / "config.yaml"), where=f"run config '{self.path}'")

    @property
    def metrics(self) -> RunMetrics:
        return RunMetrics.from_json(self.metrics_json)

    @property
    def metrics_json(self) -> dict:
        """metrics.json as written: every figure, interval, operating point and note per split."""
        return json.loads((self.path / "metrics.json").read_text(encoding="utf-8"))

    def gap_report(self) -> str:
        """The train/validation/test table with intervals, its reading and the operating point, as
        `medcls train` prints it."""
        from medcls.reports.report import gap_table

        payload, manifest = self.metrics_json, self.manifest
        lines = (["Macro averages over the findings (each finding's own table below):"] if self.multi_label else []) + [
                 gap_table(payload, payload.get("intervals", {})),
                 "95% intervals; how each was computed (Wilson, DeLong, bootstrap) is in report.md.", "",
                 f"Reading: {payload.get('reading', '')}"]
        if payload.get("tasks"):
            from medcls.reports.documents import task_rows
            from medcls.reports.report import markdown_table

            header, rows = task_rows(payload["tasks"])
            lines.append("Auxiliary heads:\n" + markdown_table(header, [r for r in rows if r[2] == "test"]))
        if self.multi_label:
            lines.append(finding_table(payload))
        elif payload.get("threshold") is not None:
            lines.append(f"Operating point {payload['threshold']:.4f}, chosen on validation; test figures at that point.")
        lines.append(f"Run folder: {self.path} ({manifest.get('seconds', float('nan')):.0f}s on "
                     f"{manifest.get('device', '?')})")
        return "\n".join(lines)

    @property
    def manifest(self) -> dict:
        """Versions, commit, seed, data hashes, device and training time (manifest.json)."""
        path = self.path / "manifest.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    @property
    def history(self) -> list[dict]:
        """One dict per epoch (stage, learning rate, training loss, validation figures), as in history.csv."""
        path = self.path / "history.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as fh:
            return [{k: (v if k == "stage" else int(v) if k == "epoch" else float(v)) for k, v in row.items()}
                    for row in csv.DictReader(fh)]

    # what can be done with it

    @property
    def predictor(self):
        """The one inference path (medcls.core.inference.Predictor) on the run's device."""
        from medcls.core.inference import run_predictor

        if self._predictor is None:
            config = self.config
            self._predictor = run_predictor(self.model, self.info, device=self.device, precision=config.precision,
                                            channels_last=config.channels_last)
        return self._predictor

    def read(self, inputs, progress=None):
        """Inputs brought to the run's grid as training brought its images: arrays (as for
        `medcls.train(images=...)`), a file, a folder, a DICOM series folder, a NIfTI volume, or a
        list of paths. Returns medcls.core.inference.ReadInputs (a row per input, with its error)."""
        from medcls.core.inference import read_cases, read_paths
        from medcls.data.arrays import array_cases
        from medcls.logs import stage

        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        with stage(f"reading {len(inputs)} input(s)"):
            if isinstance(inputs, (list, tuple)) and all(isinstance(i, (str, os.PathLike)) for i in inputs):
                return read_paths(self.info, inputs, self.registries, progress)
            return read_cases(self.info, array_cases(inputs, volumes=self.reads_volumes, name="input"),
                              self.registries, progress)

    def predict(self, inputs, *, tta: str = "none") -> np.ndarray:
        """(N, K) calibrated class probabilities (columns in `.classes` order). An input that cannot
        be read is an error naming it; `predictions()` keeps going and reports each error instead."""
        read = self.read(inputs)
        failed = [row for row in read.rows if row["error"]]
        if failed:
            raise DataError(f"{failed[0]['error']} ({len(failed)} of {len(read.rows)} input(s) unreadable; "
                            "run.predictions() lists each)")
        mirrors = not self.config.laterality_sensitive or self.config.allow_lr_flip
        return self.predictor.probabilities(read.stacked(), tta=tta, mirrors=mirrors)

    def decide(self, inputs) -> np.ndarray:
        """The class name per input at the stored operating point (binary) or the most probable class;
        multi-label: an (N, findings) boolean array, each finding at its own operating point."""
        decided = self.predictor.decide(self.predict(inputs))
        return decided.astype(bool) if self.multi_label else np.array(self.classes, dtype=object)[decided]

    def refer(self, inputs) -> np.ndarray:
        """Per input, whether it goes to a human reader: its split-conformal prediction set (fitted on
        validation at `abstain_coverage`) is not a single class. An error for runs trained without it."""
        if self.predictor.conformal is None:
            raise ConfigError(f"run '{self.path}' was trained without abstention (abstain_coverage none)")
        return self.predictor.refer(self.predict(inputs))

    def predictions(self, inputs, progress=None):
        """Per-input probabilities, decisions and read errors (medcls.workflows.predict.Predictions)."""
        from medcls.workflows.predict import predictions_for

        return predictions_for(self.read(inputs, progress), self.predictor)

    def evaluate(self, data: str | os.PathLike | None = None, *, images=None, labels=None, patients=None,
                 split: str | None = None, out: str | os.PathLike | None = None, by: str | None = None,
                 patient_level: str | None = None, prevalence: float | None = None, bootstrap: int = 2000,
                 tta: str = "none", allow_changed: bool = False) -> Evaluation:
        """Score at the stored operating point, with intervals: the run's own test split by default,
        or new data (a path, or images with labels: every case). Writes metrics.json,
        predictions.csv, report.md and report.html into `out` (a new or empty folder; default
        RUN/evaluation, then RUN/evaluation-2, ...)."""
        from medcls.data.arrays import array_cases, remember
        from medcls.workflows.evaluate import evaluate_run

        if images is not None:
            if data is not None:
                raise ConfigError("give either data or images with labels, not both")
            data = remember(array_cases(images, labels, patients=patients, volumes=self.reads_volumes, name="evaluate"))
        if out is None and self._scratch is not None:
            logging.getLogger("medcls").warning(
                "the evaluation report is written into this run's temporary folder, removed with the Run: give "
                "out= to keep it, or keep the run with run.save('runs/NAME')")
        result = evaluate_run(self.path, self.registries, data=None if data is None else str(data), split=split,
                              out=out, by=by, patient_level=patient_level, prevalence=prevalence,
                              n_resamples=bootstrap, tta=tta, device=self.device, allow_changed=allow_changed)
        return Evaluation(result["split"], SplitMetrics({**result["metrics"], "n": result["n"]}, result["intervals"]),
                          Path(result["out"]))

    def export(self, format: str = "onnx", out: str | os.PathLike | None = None):
        """ONNX or TorchScript taking images in [0, 1] and returning calibrated probabilities, with
        export.json; kept only if it matches `predict` within 1e-4; or ("hf") a Hugging Face-style
        folder timm and medcls both load (medcls.workflows.export.Exported)."""
        from medcls.workflows.export import export_run

        self._require_lasting(out, "export")
        return export_run(self.path, self.registries, format, out)

    def explain(self, inputs, out: str | os.PathLike | None = None, target_class: str | None = None):
        """Grad-CAM heatmaps (PNG per input and a grid) with the calibrated probability and the
        decision `predict` gives (medcls.workflows.explain.Explanation); into `out`, or else a new
        RUN/explain[-N] folder."""
        from medcls.core.runs import load_model
        from medcls.workflows.explain import explain_read
        from medcls.folders import claim_folder, removed_if_left_empty, reserve_folder

        self._require_lasting(out, "explain")  # before any work
        model, _ = load_model(self.path, self.registries)
        # A new folder: explain, explain-2, ... in the run, or `out` claimed (never a run's, never one with files)
        folder = claim_folder(out, by="medcls explain") if out else reserve_folder(self.path / "explain")
        with removed_if_left_empty(folder):
            return explain_read(model, self.info, self.read(inputs), folder, target_class, predictor=self.predictor)
