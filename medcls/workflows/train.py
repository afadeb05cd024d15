"""The fine-tuning workflow end to end: data, splits, two-stage training, honest evaluation, run folder."""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from pathlib import Path

import numpy as np

from medcls.config import TrainConfig, make_config, read_config_file, save_config
from medcls.core.augment import check_policy_output, make_policy
from medcls.core.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from medcls.core.distributed import check_config, device_for, from_environment
from medcls.core.engine import Mixer, MultiLabelLoss, MultiTaskLoss, Stage, fit, recalibrate_batchnorm
from medcls.core.execution import (
    choose_execution,
    resolve_device,
    seed_everything,
    tune_process,
)
from medcls.core.inference import Predictor
from medcls.core.loader import (
    TrainingImages,
    can_cache_features,
    class_weights,
    frozen_features,
    is_batched,
    loader_workers,
    make_loader,
    positive_weights,
)
from medcls.core.models import build_classifier, check_backbone_output, pretrained_weights
from medcls.core.runs import (
    RunInfo,
    run_manifest,
    save_model,
    write_finding_predictions,
    write_history,
    write_predictions,
    write_splits,
    write_task_predictions,
)
from medcls.core.timing import WARMUP_IMAGES, Workload, estimate
from medcls.data.decoding import StartAgain
from medcls.data.loading import backbone_interpolation, sizes_from_sources
from medcls.data.prepared import PreparedData, prepare_data
from medcls.data.readers import parse_window
from medcls.data.tasks import parse_tasks, standardised
from medcls.errors import ConfigError, DataError
from medcls.folders import CLAIM, RUN_MARKERS, claim_folder, removed_if_left_empty, reserve_folder
from medcls.logs import logger
from medcls.reports import plots, report
from medcls.reports.documents import training_document
from medcls.stats import multilabel
from medcls.stats.assess import split_results
from medcls.stats.calibration import balanced_offsets, remove_offsets
from medcls.stats.multitask import assess_tasks
from medcls.workflows.plan import make_plan, write_plan
from medcls.workflows.final_scoring import draw_split_figures, score_finding_splits, score_splits
from medcls.workflows.sharing import write_model_card
from medcls.workflows.tracking import ending_if_interrupted, epoch_values, finish_trackers, open_trackers, tracker_names


def stages_for(config: TrainConfig) -> list:
    if config.pretrained or config.weights:
        return [Stage("frozen", config.epochs, config.lr, 0),
                Stage("finetune", config.finetune_epochs, config.lr * config.finetune_lr_factor, config.unfreeze_blocks)]
    # From scratch nothing is worth freezing: both stages train every block.
    return [Stage("scratch", config.epochs, config.lr, -1),
            Stage("finetune", config.finetune_epochs, config.lr * config.finetune_lr_factor, -1)]


def resolve_pretrained(config: TrainConfig, registries) -> bool:
    """`pretrained` unset means: from pretrained weights when the backbone has any."""
    has_weights = registries["backbones"].get(config.backbone).metadata.get("pretrained", True)
    if config.pretrained is None:
        return bool(has_weights or config.weights)
    if config.pretrained and not has_weights and not config.weights:
        raise ConfigError(f"backbone {config.backbone!r} has no pretrained weights: train it from scratch "
                          "(--no-pretrained) or give --weights FILE.safetensors")
    return config.pretrained


def check_names(config: TrainConfig, registries) -> None:
    """Fail on a misspelled name before any data is read."""
    registries["backbones"].get(config.backbone)
    registries["policies"].get(config.policy)
    if config.format != "auto":
        registries["datasets"].get(config.format)
    if config.monitor != "loss":
        registries["metrics"].get(config.monitor)
    for name in tracker_names(config):
        check = registries["loggers"].get(name).metadata.get("check")
        if check is not None:
            check()  # the tracker's package and store, before any data is read

    parse_window(config.window)
    parse_tasks(config.tasks)


@dataclasses.dataclass
class RunStart:
    """What every attempt at training one run shares: the checked config, where it runs, where it writes."""

    config: TrainConfig
    registries: dict
    out: Path
    device: object
    distributed: object
    progress_factory: object
    started: float
    parent_trackers: list | None = None  # a cross-validation's, ensemble's or experiment's trackers
    plan: object = None  # the recipe plan (medcls.workflows.plan), written to plan.json with the run


def train(config: TrainConfig, registries, *, progress_factory=None,
          data: PreparedData | None = None, train_rows=None, parent_trackers: list | None = None,
          given: set | None = None) -> dict:
    """Run the whole workflow and write the run folder; returns the summary that the CLI prints.
    Cross-validation and ensembles pass `data` already prepared (with their splits) and, for
    bagging, `train_rows` (a resample of the training rows); they and experiments pass their own
    trackers as `parent_trackers`, so that each run is logged as their nested run. `given`: the
    keys the user set, for the plan's record (None: those that differ from their defaults)."""

    started = time.perf_counter()
    requested = config
    config = dataclasses.replace(checked_config(config, registries),
                                 pretrained=resolve_pretrained(config, registries))
    distributed = from_environment(config.device)  # torchrun's process group, if launched by it
    check_config(config, distributed)
    if not distributed.writes:
        logger.setLevel(logging.ERROR)  # rank 0 speaks for all
        progress_factory = None
    out = run_folder(config, reserve=distributed.writes)
    with removed_if_left_empty(out if (config.out is None or (out / CLAIM).is_file()) and distributed.writes else None):
        start = RunStart(config, registries, out, device_for(distributed, resolve_device(config.device)),
                         distributed, progress_factory, started, parent_trackers)
        if data is None:
            transform, _ = make_policy(config, registries)  # a bad policy setting stops before any data is read
            # Training starts once the images of its first batches are decoded and the rest decode
            # meanwhile (see the config's comment); not for loader workers or DDP processes, which
            # would each need a filled cache.
            overlap = start.device.type != "cpu" if config.decode_while_training is None else config.decode_while_training
            background = overlap and loader_workers(config, transform) == 0 and not distributed.active
            data = prepare_data(config, registries, background=background)
            for warning in data.warnings:
                logger.warning(f"{warning}")
            if distributed.writes:  # (folds and members share data prepared, and planned, by their parent)
                start.plan = make_plan(requested, registries, given, cases=data.cases, multi_label=data.multi_label,
                                       resolved=config)
        try:
            return train_on(start, data, train_rows)
        except StartAgain as exc:
            # Decoding in the background found an unreadable image that training needed, or colour
            # where the first images were grey: start again, as if every image had been decoded first.
            logger.warning(f"{exc}")
            for warning in data.complete():
                logger.warning(f"{warning}")
            return train_on(start, data, train_rows)


def build_model(start: RunStart, data: PreparedData, tasks: list, transform, train_rows):
    """The classifier (main outputs, then auxiliary heads) checked against its plugin's contract and
    prepared for the device: returns it with its execution, where its weights came from and the
    loader's worker count."""
    import torch

    config, registries, distributed, device = start.config, start.registries, start.distributed, start.device
    model, weights_origin = build_classifier(registries, config.backbone,
                                             len(data.classes) + sum(task.outputs for task in tasks), data.cache.channels,
                                             config.dropout, config.pretrained, config.weights, config.slices,
                                             config.slice_pooling, config.backbone_args,
                                             input_shape=tuple(data.cache.images.shape[2:]), acs=config.acs)
    model.frozen_batchnorm = model.frozen_batchnorm and config.finetune_batchnorm == "frozen"
    backbone_entry, policy_entry = registries["backbones"].get(config.backbone), registries["policies"].get(config.policy)
    check_backbone_output(model, data.cache.channels, tuple(data.cache.images.shape[2:]), backbone_entry.name,
                          backbone_entry.plugin)
    check_policy_output(transform, data.cache.batch(train_rows[:2]), policy_entry.name, policy_entry.plugin)
    workers = loader_workers(config, transform)
    tune_process(workers, processes_per_machine=distributed.world)
    execution = choose_execution(device, model, config.precision, config.channels_last)
    if distributed.active and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # statistics over the global batch
    model = execution.prepare(model)
    if device.type == "cuda" and not config.deterministic:
        torch.backends.cudnn.benchmark = True
    acs_note = ", read in 3D through ACS convolutions" if config.acs else ""
    logger.info(f"model: {config.backbone} ({weights_origin}{acs_note}), {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
        f"parameters, on {execution.describe()}")
    return model, execution, weights_origin, workers


def loss_and_offsets(config: TrainConfig, data: PreparedData, tasks: list, train_labels, device):
    """The training loss (class-weighted when `class_balance` says so; multi-label, multi-task) and
    the logit offsets that move a balanced model back to the training prior (None without)."""
    import torch

    balance = positive_weights(train_labels) if data.multi_label else class_weights(train_labels, len(data.classes))
    weight = torch.as_tensor(balance, dtype=torch.float32, device=device) \
        if config.class_balance == "weighted_loss" else None
    # The balanced model's logits, moved back to the training prior for every score (see config).
    offsets = balanced_offsets(balance) if config.prior_correction and config.class_balance != "none" else None
    if data.multi_label:
        loss_fn = MultiLabelLoss(weight, config.label_smoothing)
    else:
        loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    if tasks:
        loss_fn = MultiTaskLoss(loss_fn, len(data.classes), tasks, config.task_weighting == "uncertainty").to(device)
    return loss_fn, offsets


def open_for_resume(config: TrainConfig, out: Path, distributed, generator, transform):
    """The run folder and its config exist from the first epoch on, so that a killed run can
    resume; with `resume`, the checkpoint's state (None when there is none)."""
    if distributed.writes:
        out.mkdir(parents=True, exist_ok=True)
        save_config(dataclasses.replace(config, resume=False), out / "config.yaml")
    resumed = load_checkpoint(out / CHECKPOINT, generator, transform) if config.resume else None
    if resumed is not None:
        logger.info(f"resuming after epoch {resumed.epoch_number} from {out / CHECKPOINT}")
        for epoch in resumed.history:
            logger.info(f"[{epoch['stage']}] epoch {epoch['epoch']}: (restored) val {config.monitor} "
                f"{epoch['val_metrics'].get(config.monitor, float('nan')):.4f}")
    return resumed


def check_split_classes(data: PreparedData, rows_of: dict[str, np.ndarray]) -> None:
    """Warn of a split without some class (or finding); refuse, before any training, a validation
    split that lacks a class: early stopping would follow an undefined ROC AUC, a binary operating
    point would be chosen on nothing, and the run would fail only after training."""
    for name, rows in rows_of.items():
        if data.multi_label:
            absent = [n for j, n in enumerate(data.classes) if not (data.cache_labels(rows)[:, j] == 1).any()]
            if absent:
                logger.warning(f"the {name} split ({len(rows)} images) has no case with finding(s) {', '.join(absent)}")
            continue
        present = set(np.unique(data.cache_labels(rows)).tolist())
        absent = ", ".join(repr(c) for i, c in enumerate(data.classes) if i not in present)
        if absent and name == "val":
            raise DataError(f"the val split ({len(rows)} images) has no case of class {absent}, so neither early "
                            "stopping nor the operating point can be chosen on it (its ROC AUC is undefined): add "
                            "data, raise val_fraction, or move cases of that class into the val split")
        if absent:
            logger.warning(f"the {name} split ({len(rows)} images) lacks class(es) {absent}")


def train_on(start: RunStart, data: PreparedData, train_rows=None) -> dict:
    """Build the model, fit it in two stages and write the run (one attempt of `train`)."""
    import torch

    config, registries, distributed, device, out = (start.config, start.registries,
                                                          start.distributed, start.device, start.out)
    seed_everything(config.seed, config.deterministic)
    transform, policy_params = make_policy(config, registries)
    val_rows, test_rows = data.rows("val"), data.rows("test")
    train_rows = data.rows("train") if train_rows is None else train_rows
    if data.multi_label:
        check_multilabel(config)
    check_split_classes(data, {"train": train_rows, "val": val_rows, "test": test_rows})
    unit = "volumes" if data.cache.images.dim() == 5 else "images"
    logger.info(f"data: {len(data.cache.kept)} {unit} ({data.format_name}), classes {data.classes}, "
        f"train/val/test = {len(train_rows)}/{len(val_rows)}/{len(test_rows)}, channels {data.cache.channels}, "
        f"{len(data.duplicates)} duplicate set(s) kept on one side")

    # Multi-task: auxiliary heads after the main outputs, regression targets standardised on training cases.
    tasks = standardised(data.tasks, data.task_targets, data.cache.kept[train_rows]) if data.tasks else []
    model, execution, weights_origin, workers = build_model(start, data, tasks, transform, train_rows)
    if not config.resume:
        tell_the_time(config, model, execution, data, {"train": train_rows, "val": val_rows, "test": test_rows},
                      can_cache_features(config, model, transform) and not distributed.active)

    train_labels = data.cache_labels(train_rows)
    loss_fn, offsets = loss_and_offsets(config, data, tasks, train_labels, device)
    train_targets = data.training_targets(train_rows, tasks)
    generator = torch.Generator().manual_seed(config.seed)
    loader = make_loader(TrainingImages(data.cache, train_rows, train_targets, transform), train_labels, config,
                         len(data.classes), workers, generator, distributed)
    metrics = list(registries["metrics"])
    val_labels = data.cache_labels(val_rows)

    # Early stopping and the best checkpoint maximise the score: lower-is-better metrics are negated.
    lower_is_better = config.monitor == "loss" or not registries["metrics"].get(config.monitor).metadata.get(
        "higher_is_better", True)
    monitor_sign = -1.0 if lower_is_better else 1.0

    scorer = Predictor(model, execution, classes=data.classes, batch_size=config.batch_size,
                       multi_label=data.multi_label, tasks=tasks)

    def score_val(probs):
        if offsets is not None:
            probs = remove_offsets(probs, offsets, data.multi_label)
        if data.multi_label:  # the macro average over findings of each metric
            values = multilabel.results(probs, val_labels, None, metrics)
        else:
            values = split_results(probs, val_labels, None if probs.shape[1] != 2 else 0.5, metrics)
        return values["loss"], values, monitor_sign * values[config.monitor]

    # Precise BN: an evenly spread share of the training images, without augmentation.
    calibration_rows = train_rows[np.linspace(0, len(train_rows) - 1, min(len(train_rows), config.precise_bn)).astype(int)] \
        if config.precise_bn else train_rows[:0]

    def evaluate_val():
        if len(calibration_rows):
            recalibrate_batchnorm(model, data.batches(calibration_rows)(config.batch_size), execution)
        return score_val(scorer.probabilities(data.batches(val_rows), calibrated=False))

    frozen = None
    if can_cache_features(config, model, transform) and not distributed.active:
        frozen = frozen_features(model, data, train_rows, val_rows, train_labels, config, execution, generator,
                                 score_val, train_targets)
        logger.info("stage 1: backbone features computed once (no augmentation, frozen backbone)")

    trackers = open_trackers(config, registries, out, start.parent_trackers) if distributed.writes else []

    with ending_if_interrupted(trackers):
        def on_epoch(epoch, is_best):
            for tracker in trackers:
                tracker.epoch(epoch.epoch, epoch_values(epoch))
            logger.info(f"[{epoch.stage}] epoch {epoch.epoch}: train loss {epoch.train_loss:.4f}, val loss "
                f"{epoch.val_loss:.4f}, val {config.monitor} {epoch.val_metrics.get(config.monitor, float('nan')):.4f}, "
                f"lr {epoch.lr:.2e}, {epoch.seconds:.1f}s{' *best' if is_best else ''}")

        resumed = open_for_resume(config, out, distributed, generator, transform)
        fitted = fit(model, stages_for(config), train_loader=loader, evaluate_val=evaluate_val, loss_fn=loss_fn,
                     execution=execution, optimisation=config.section("optimisation"), on_epoch=on_epoch,
                     progress_factory=start.progress_factory,
                     augment=transform.batch if is_batched(transform) else None, frozen=frozen,
                     checkpoint=(lambda state: save_checkpoint(out / CHECKPOINT, state, generator, transform))
                     if distributed.writes else None, resume=resumed, distributed=distributed,
                     mixer=Mixer(config.mixup, config.cutmix, config.seed))
        if not distributed.writes:
            return {"rank": distributed.rank}  # rank 0 scores and writes the run
        if offsets is not None:
            getattr(model, "module", model).shift_logits(offsets)
            logger.info(f"probabilities moved back to the training prior: logit offsets "
                        f"{', '.join(f'{v:+.3f}' for v in offsets)} folded into the head")
        if data.cache.filling is not None:
            train_rows, val_rows, test_rows = completed_rows(data, train_rows, val_rows)

        summary = finish_run(config, registries, data, model, execution, fitted, out,
                             rows={"train": train_rows, "val": val_rows, "test": test_rows},
                             facts={"weights_origin": weights_origin, "device": str(device), "started": start.started,
                                    "policy_params": policy_params, "tasks": tasks,
                                    "task_weights": learned_task_weights(loss_fn)},
                             extra_info={"prior_offsets": None if offsets is None else [round(float(v), 6) for v in offsets]})
        if start.plan is not None:
            write_plan(start.plan, out)
        finish_trackers(trackers, summary, out)
    return summary


def tell_the_time(config: TrainConfig, model, execution, data: PreparedData, rows: dict, cached_features: bool) -> None:
    """One line before training: how long the run will take here, from a timed warm-up."""
    stages = stages_for(config)
    per_epoch = min(len(rows["train"]), config.epoch_size) if config.epoch_size else len(rows["train"])
    workload = Workload(train_images=per_epoch, val_images=len(rows["val"]), scored_images=sum(len(r) for r in rows.values()),
                frozen_epochs=sum(s.epochs for s in stages if s.name == "frozen"),
                full_epochs=sum(s.epochs for s in stages if s.name != "frozen"), cached_features=cached_features)
    images = data.cache.batch(rows["train"][:min(WARMUP_IMAGES, config.batch_size)])
    logger.info(estimate(getattr(model, "module", model), images, execution, workload).describe())


# What multi-label runs cannot do yet (issue 17): each is refused by name rather than run wrongly.
MULTILABEL_UNSUPPORTED = {
    "calibration": ("temperature", "temperature scaling is fitted to softmax outputs"),
    "class_balance": ("sampler", "a class-balanced sampler needs one class per case; use weighted_loss (per-finding positive weights)"),
}
MULTILABEL_UNSET = ("patient_level", "by")


def check_multilabel(config: TrainConfig) -> None:
    """Multi-label data with an option that only single-label tasks have: a ConfigError naming it."""
    for key, (value, why) in MULTILABEL_UNSUPPORTED.items():
        if getattr(config, key) == value:
            raise ConfigError(f"{key} = {value!r} is not available for multi-label data ({why}): leave it at its default")
    for key in MULTILABEL_UNSET:
        if getattr(config, key) is not None:
            raise ConfigError(f"{key} is not available for multi-label data yet: leave it unset")


def learned_task_weights(loss_fn) -> list[float] | None:
    """Uncertainty weighting: the weight exp(-s) each head ended with (main first), else None."""
    log_variance = getattr(loss_fn, "log_variance", None)
    return None if log_variance is None else [round(float(v), 4) for v in (-log_variance.detach()).exp().cpu()]


def completed_rows(data: PreparedData, train_rows, val_rows) -> tuple:
    """After training on images decoded in the background: wait for the rest (test images may
    still be decoding) and give every split's rows again, since unreadable images leave them.
    One among the training or validation images (one that the dropped last partial batch hid
    from every epoch), or a colour image among the last, means starting again."""

    provisional, channels = data.cache.kept, data.cache.channels  # every case, the count trained with
    for warning in data.complete():
        logger.warning(f"{warning}")
    unreadable = set(provisional.tolist()) - set(data.cache.kept.tolist())
    used = unreadable & set(provisional[np.concatenate([train_rows, val_rows])].tolist())
    if used:
        raise StartAgain(f"image '{data.cases[min(used)].key}' turned out unreadable; training starts again without it")
    if data.cache.channels != channels:
        raise StartAgain(f"the images have {data.cache.channels} channels, not the {channels} the first ones "
                         f"suggested: training starts again with {data.cache.channels} channels")
    return data.rows("train"), data.rows("val"), data.rows("test")


def finish_run(config: TrainConfig, registries, data: PreparedData, model, execution, fitted, out: Path, *,
               rows: dict, facts: dict, extra_info: dict | None = None, extend=None,
               extra_metrics=None) -> dict:
    """Score every split the same way (no augmentation or dropout), pick the operating point on
    validation, and write the run folder: model, metrics, figures, report. Returns the summary."""
    import json

    tasks = facts.get("tasks") or []
    scorer = Predictor(model, execution, classes=data.classes, batch_size=config.batch_size,
                       multi_label=data.multi_label, tasks=tasks)
    scores = {s: (scorer.probabilities(data.batches(r), calibrated=False), data.cache_labels(r))
              for s, r in rows.items()}
    scoring = (score_finding_splits if data.multi_label else score_splits)(config, registries, data, rows, scores, scorer)
    scoring["reading"] += report.read_stages(fitted.history, config.monitor, fitted.best_epoch)
    scoring["reading"] += "".join(f" {restart[0].upper()}{restart[1:]}." for restart in fitted.restarts)
    if tasks:
        task_outputs = {s: scorer.task_outputs(data.batches(r)) for s, r in rows.items()}
        scoring["tasks"] = assess_tasks(
            tasks, task_outputs, {s: data.cache_task_targets(r) for s, r in rows.items()}, list(registries["metrics"]),
            patients={s: data.patients(r) for s, r in rows.items()}, threshold_rule=config.threshold_rule,
            target=config.target, n_resamples=config.bootstrap, seed=config.seed)
        scoring["task_weights"] = facts.get("task_weights")
    results, threshold = scoring["results"], scoring["threshold"]

    out.mkdir(parents=True, exist_ok=True)
    info = {
        "backbone": config.backbone, "classes": data.classes, "in_chans": data.cache.channels,
        "image_size": config.image_size, "spatial_dims": int(data.cache.images.dim()) - 2,
        "volume_size": config.volume_size, "volume_spacing": config.volume_spacing, "slices": config.slices,
        "acs": config.acs, "slice_pooling": config.slice_pooling, "dropout": config.dropout, "threshold": threshold,
        "threshold_rule": config.threshold_rule, "target": config.target, "window": config.window,
        "temperature": scoring["temperature"], "backbone_args": config.backbone_args,
        "conformal": scoring["conformal"], "input_shape": list(data.cache.images.shape[2:]),
        "interpolation": backbone_interpolation(config.backbone), "crop_foreground": config.crop_foreground,
        "normalisation": normalisation(model),
        "plugins": {"backbone": registries.provenance(registries["backbones"].get(config.backbone))},
        "positive_class": data.classes[1] if len(data.classes) == 2 and not data.multi_label else None,
        "multi_label": data.multi_label,
        **({"tasks": [{**task.to_dict(), "threshold": scoring["tasks"]["val"][task.name]["threshold"]}
                      for task in tasks], "task_weighting": config.task_weighting} if tasks else {}),
        **({"uncertain": config.uncertain, "blank_findings": config.blank_findings} if data.multi_label else {}),
        "preprocessing": "decode (readers), " + ("cut to the object's box (crop_foreground), " if config.crop_foreground else "")
                         + "resize to image_size (antialiased, by `interpolation`) or, for volumes, reorient "
                         "to RAS, crop/resample to volume_size (trilinear), window or percentiles; values in [0, 1]; "
                         "the model normalises internally", "weights_origin": facts["weights_origin"],
        **(extra_info or {}),
    }
    save_model(model, info, out)
    write_history(fitted.history, out / "history.csv")
    if tasks:
        write_task_predictions(out / "task_predictions.csv", tasks,
                               {s: (data.keys(r), data.cache_task_targets(r), task_outputs[s]) for s, r in rows.items()})
    write_splits(data, out / "splits.csv")
    (write_finding_predictions if data.multi_label else write_predictions)(
        out / "predictions.csv", data.classes,
        {s: (data.keys(r), y, p) for (s, r), (p, y) in zip(rows.items(), scoring["scores"].values())}, scorer.decide)
    manifest = {**run_manifest(config, data), "plugins": plugins_used(config, registries, data),
                "device": facts["device"],
                "seconds": round(time.perf_counter() - facts["started"], 1)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    report.write_metrics_json(out / "metrics.json", {
        **results, "intervals": scoring["intervals"], "threshold": threshold, "reading": scoring["reading"],
        "best_epoch": fitted.best_epoch, "restarts": fitted.restarts, "temperature": scoring["temperature"],
        "operating": {s: a["operating"] for s, a in scoring["assessed"].items()},
        "per_class": {s: a["per_class"] for s, a in scoring["assessed"].items()},
        "calibration": scoring["calibration"], "level": {s: a["level"] for s, a in scoring["assessed"].items()},
        "patient_level": scoring["patient_level"], "subgroups": scoring["subgroups"],
        "subgroup_differences": scoring["subgroup_differences"], "abstention": {"test": scoring["abstention"]},
        "notes": {s: a["notes"] for s, a in scoring["assessed"].items()},
        **({"findings": scoring["findings"]} if data.multi_label else {}),
        **({"tasks": scoring["tasks"], "task_weights": scoring["task_weights"]} if tasks else {}),
        **({"members": extra_metrics} if extra_metrics else {}),
    })
    if config.figures:
        if fitted.history:
            plots.plot_learning_curves(fitted.history, out / "learning_curves.png")
        draw_split_figures(scoring, data.classes, out)
    summary = {
        "out": str(out), "results": results, "intervals": scoring["intervals"], "reading": scoring["reading"],
        "threshold": threshold, "best_epoch": fitted.best_epoch, "stopped_early": fitted.stopped_early,
        "restarts": fitted.restarts,
        "weights_origin": facts["weights_origin"], "device": facts["device"],
        "seconds": time.perf_counter() - facts["started"], "policy_params": facts["policy_params"],
        "warnings": data.warnings, "epochs_run": len(fitted.history),
        "scores": scoring["scores"],  # calibrated (probabilities, labels) per split, for cross-validation
    }
    document = training_document(config, data, summary, scoring)
    if extend is not None:
        extend(document)
    document.write(out)
    write_model_card(out, RunInfo(info))
    (out / CHECKPOINT).unlink(missing_ok=True)  # the run is complete: model.safetensors holds it
    return summary


def normalisation(model) -> dict | None:
    """The mean and std the classifier normalises [0, 1] images with (from the backbone's
    pretrained_cfg or its own), recorded in model.json."""
    mean, std = getattr(model, "mean", None), getattr(model, "std", None)
    if mean is None or std is None:
        return None
    recorded = {"mean": [round(float(v), 6) for v in mean.flatten()], "std": [round(float(v), 6) for v in std.flatten()]}
    cfg = getattr(getattr(model, "backbone", None), "pretrained_cfg", None)
    if isinstance(cfg, dict):  # what the backbone was pretrained with; medcls resizes antialiased bilinear
        recorded["pretrained_cfg"] = {k: cfg[k] for k in ("interpolation", "input_size", "crop_pct") if k in cfg}
    return recorded


def plugins_used(config: TrainConfig, registries, data: PreparedData) -> list[dict]:
    """Every plugin distribution (and version) the run used: backbone, policy, layout, metrics."""
    entries = [registries["backbones"].get(config.backbone), registries["policies"].get(config.policy),
               registries["datasets"].get(data.format_name), *registries["metrics"]]
    seen, used = set(), []
    for entry in entries:
        row = registries.provenance(entry)
        if (row["plugin"], row["name"]) not in seen:
            seen.add((row["plugin"], row["name"]))
            used.append(row)
    return used


def check_weights(config: TrainConfig, registries) -> None:
    """Pretrained weights found before any data is read: a backbone whose weights are on no source
    reachable here stops in seconds, naming the backbones that do work (not after decoding)."""
    if not resolve_pretrained(config, registries):
        return
    members = config.ensemble_backbones if config.ensemble and config.ensemble_backbones else config.backbone
    names = [b.strip() for b in members.split(",") if b.strip()]
    for name in dict.fromkeys(names):
        pretrained_weights(name, registries["weights"], config.weights)


def checked_config(config: TrainConfig, registries) -> TrainConfig:
    """Names and pretrained weights checked before any data is read, and the data path made
    absolute, so that `medcls evaluate RUN` finds the data (and its split) from any folder."""
    check_names(config, registries)
    check_weights(config, registries)
    if Path(config.data).exists():
        config = dataclasses.replace(config, data=str(Path(config.data).resolve()))
    return sizes_from_sources(config, registries)


def open_run(config: TrainConfig, registries, *, split: bool) -> tuple[TrainConfig, Path, PreparedData]:
    """The start that cross-validation and ensembles share: checked config, the run folder with
    its config.yaml, and the data prepared once for every run inside it."""
    config = checked_config(config, registries)
    out = run_folder(config)
    # config.yaml only once the data is checked
    with removed_if_left_empty(out if config.out is None or (out / CLAIM).is_file() else None):
        data = prepare_data(config, registries, split=split)
        if data.multi_label:
            check_multilabel(config)
        if data.tasks and config.ensemble:
            raise ConfigError("tasks (multi-task heads) cannot be combined with ensembles yet: train one model")
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    for warning in data.warnings:
        logger.warning(f"{warning}")
    return config, out, data


def resume_config(run) -> TrainConfig:
    """The configuration an interrupted run was started with, set to continue it."""

    saved = Path(run) / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"--resume: '{run}' has no config.yaml: give the --out folder of an interrupted `medcls train`")
    return make_config(read_config_file(saved), {"out": str(run), "resume": True}, where=f"run config '{saved}'")


def run_folder(config: TrainConfig, *, reserve: bool = True) -> Path:
    """The --out folder, checked before any work so that no run is ever overwritten. Without --out
    a new folder runs/<backbone>-<date>-<time>[-N] is created at once (`reserve`), so that two
    trainings started in the same second never share one."""
    if config.out is None:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", config.backbone)
        base = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        return reserve_folder(base) if reserve else base
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' is a file: give a folder")
    if config.resume:
        if not out.is_dir():
            raise ConfigError(f"--resume: run folder '{out}' does not exist")
        return out
    found = [marker for marker in RUN_MARKERS if (out / marker).exists()]
    if found and not config.overwrite:
        interrupted = "checkpoint.safetensors" in found and "model.safetensors" not in found
        raise ConfigError(f"run folder '{out}' already holds a run ({found[0]}): "
                          + (f"continue it with --resume {out}, " if interrupted else "")
                          + "choose another --out or pass --set overwrite=true")
    if config.overwrite or not reserve:
        return out
    if (out / CLAIM).exists():
        raise ConfigError(f"run folder '{out}' is being written by another command ({CLAIM}): choose another --out")
    # Claimed like a default folder, so that two trainings given the same --out never share it.
    return claim_folder(out, by="medcls train") if not out.is_dir() or not any(out.iterdir()) else out


