"""The fine-tuning workflow end to end: data, splits, two-stage training, honest evaluation, run folder."""

from __future__ import annotations

import dataclasses
import os
import random
import time
from functools import partial
from pathlib import Path

import numpy as np

from medcls.config import TrainConfig, save_config
from medcls.data.prepared import PreparedData, prepare_data
from medcls.errors import ConfigError


def resolve_device(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but no CUDA GPU is available: use --device cpu or --device auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was asked for but Apple MPS is not available: use --device cpu or --device auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a device name: use auto, cpu, cuda, cuda:N or mps") from None


def seed_everything(seed: int, deterministic: bool) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


class TrainingImages:
    """Training images as a torch Dataset that fetches whole batches from the image cache in one
    indexing operation (a per-image policy, one without batch(), is applied image by image)."""

    def __init__(self, cache, rows: np.ndarray, labels: np.ndarray, transform) -> None:
        self.cache, self.rows, self.labels = cache, rows, labels
        self.transform = None if is_batched(transform) else transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        images, labels = self.__getitems__([i])
        return images[0], int(labels[0])

    def __getitems__(self, indices: list[int]):
        """The DataLoader's batched fetch: (images (B, C, H, W), labels (B,)), already collated."""
        import torch

        images = self.cache.batch(self.rows[indices])
        if self.transform is not None:
            images = torch.stack([self.transform(image) for image in images])
        return images, torch.as_tensor(self.labels[indices])

    def prioritise(self, indices) -> None:
        """An epoch's order: images still decoding in the background are decoded in it."""
        self.cache.prioritise(self.rows[np.asarray(indices)])

    @staticmethod
    def collate(batch):
        return batch


class AnnouncedOrder:
    """A sampler that draws its epoch's order up front (the same draws, in the same order, from
    the same generator) and announces it, so that images still decoding follow training's order."""

    def __init__(self, sampler, announce) -> None:
        self.sampler, self.announce = sampler, announce

    def __iter__(self):
        order = list(self.sampler)
        self.announce(order)
        return iter(order)

    def __len__(self) -> int:
        return len(self.sampler)


def is_batched(transform) -> bool:
    return callable(getattr(transform, "batch", None))


def loader_workers(config: TrainConfig, transform) -> int:
    """Batched policies run in the training loop (no workers needed); per-image ones in one
    single-threaded worker, where their small tensor operations are fast."""
    if config.workers >= 0:
        return config.workers
    return 0 if is_batched(transform) else 1


def make_policy(config: TrainConfig, registries):
    entry = registries["policies"].get(config.policy)
    defaults = dict(entry.metadata.get("params", {}))
    unknown = sorted(set(config.aug) - set(defaults))
    if unknown:
        raise ConfigError(
            f"policy {config.policy!r} has no parameter {unknown[0]!r}; its parameters: "
            f"{', '.join(defaults) or 'none'} (see `medcls list policies`)"
        )
    params = {**defaults, **{k: type(defaults[k])(v) for k, v in config.aug.items()}}
    if config.laterality_sensitive and params.get("lr_flip", 0) > 0 and not config.allow_lr_flip:
        raise ConfigError(
            f"policy {config.policy!r} flips images left-right (lr_flip={params['lr_flip']}) but the data set is "
            "marked laterality-sensitive: use --aug lr_flip=0 or another policy, or --set allow_lr_flip=true"
        )
    transform = entry.obj(**params)
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=config.seed)
    return transform, params


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights normalised to mean 1 ('balanced' in scikit-learn's sense)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)
    return weights


def seed_worker(worker_id: int, seed: int) -> None:
    """Each loader worker gets its own augmentation stream (a copied transform would repeat)."""
    import torch

    info = torch.utils.data.get_worker_info()
    transform = info.dataset.transform
    if transform is not None and hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=seed + 1000 * (worker_id + 1))


def make_loader(dataset, labels: np.ndarray, config: TrainConfig, n_classes: int, workers: int, generator,
                distributed=None):
    """Training batches: shuffled (or class-balanced by a sampler) from `generator`, so that two
    loaders sharing one generator, one on images and one on features, draw the same batches;
    under DDP each process gets its shard (DistributedSampler, reshuffled every epoch)."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler
    from torch.utils.data.distributed import DistributedSampler

    sampler = None
    if distributed is not None and distributed.active:
        sampler = DistributedSampler(dataset, num_replicas=distributed.world, rank=distributed.rank, shuffle=True,
                                     seed=config.seed)
    elif config.class_balance == "sampler":
        weights = class_weights(labels, n_classes)[labels]
        sampler = WeightedRandomSampler(torch.as_tensor(weights), len(weights), generator=generator)
    if sampler is None:
        sampler = RandomSampler(dataset, generator=generator)  # what shuffle=True builds
    if hasattr(dataset, "prioritise") and not isinstance(sampler, DistributedSampler):
        sampler = AnnouncedOrder(sampler, dataset.prioritise)
    return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler,
                      collate_fn=getattr(dataset, "collate", None),
                      generator=generator, num_workers=workers,
                      drop_last=len(dataset) > config.batch_size * (distributed.world if distributed else 1),
                      worker_init_fn=partial(seed_worker, seed=config.seed) if workers else None,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def can_cache_features(config: TrainConfig, model, transform) -> bool:
    """Stage 1 can train on features computed once when the backbone is frozen (pretrained), no
    augmentation changes the images and the backbone has no dropout of its own."""
    return (config.feature_cache and (config.pretrained or bool(config.weights)) and config.epochs > 0
            and getattr(transform, "identity", False) and not model.stochastic_backbone() and not model.head_modules())


def frozen_features(model, data: PreparedData, train_rows, val_rows, train_labels, config: TrainConfig,
                    execution, generator, score_val):
    """The frozen backbone's features of the training and validation images, and a loader over
    them that shares the image loader's generator (same batches, same order)."""
    import torch
    from torch.utils.data import TensorDataset

    from medcls.engine import FrozenFeatures

    @torch.no_grad()
    def features(rows):
        model.set_trainable(0)
        model.train()  # as in stage 1: frozen batch norm in inference mode, nothing stochastic
        with execution.autocast():
            return torch.cat([model.features(execution.inputs(batch)).float()
                              for batch in data.batches(rows)(config.batch_size)])

    train_features, val_features = features(train_rows), features(val_rows)
    dataset = TensorDataset(train_features.cpu(), torch.as_tensor(train_labels))
    loader = make_loader(dataset, train_labels, config, len(data.classes), 0, generator)

    @torch.no_grad()
    def evaluate_val():
        model.eval()
        return score_val(model.head(val_features).float().softmax(1).cpu().numpy().astype(np.float64))

    return FrozenFeatures(loader, evaluate_val)


def stages_for(config: TrainConfig) -> list:
    from medcls.engine import Stage

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
    from medcls.data.readers import parse_window

    parse_window(config.window)


@dataclasses.dataclass
class RunStart:
    """What every attempt at training one run shares: the checked config, where it runs, where it writes."""

    config: TrainConfig
    registries: dict
    out: Path
    device: object
    distributed: object
    log: object
    progress_factory: object
    started: float


def train(config: TrainConfig, registries, *, log=lambda message: None, progress_factory=None,
          data: PreparedData | None = None, train_rows=None) -> dict:
    """Run the whole workflow and write the run folder; returns the summary that the CLI prints.
    Cross-validation and ensembles pass `data` already prepared (with their splits) and, for
    bagging, `train_rows` (a resample of the training rows)."""
    from medcls.data.decoding import StartAgain
    from medcls.distributed import check_config, device_for, from_environment

    started = time.perf_counter()
    config = dataclasses.replace(checked_config(config, registries),
                                 pretrained=resolve_pretrained(config, registries))
    distributed = from_environment(config.device)  # torchrun's process group, if launched by it
    check_config(config, distributed)
    if not distributed.writes:
        log = lambda message: None  # noqa: E731  (rank 0 speaks for all)
        progress_factory = None
    start = RunStart(config, registries, run_folder(config), device_for(distributed, resolve_device(config.device)),
                     distributed, log, progress_factory, started)
    if data is None:
        transform, _ = make_policy(config, registries)  # a bad policy setting stops before any data is read
        # Training starts once the images of its first batches are decoded and the rest decode
        # meanwhile (see the config's comment); not for loader workers or DDP processes, which
        # would each need a filled cache.
        overlap = start.device.type != "cpu" if config.decode_while_training is None else config.decode_while_training
        background = overlap and loader_workers(config, transform) == 0 and not distributed.active
        data = prepare_data(config, registries, background=background)
        for warning in data.warnings:
            log(f"warning: {warning}")
    try:
        return train_on(start, data, train_rows)
    except StartAgain as exc:
        # Decoding in the background found an unreadable image that training needed, or colour
        # where the first images were grey: start again, as if every image had been decoded first.
        log(f"warning: {exc}")
        for warning in data.complete():
            log(f"warning: {warning}")
        return train_on(start, data, train_rows)


def train_on(start: RunStart, data: PreparedData, train_rows=None) -> dict:
    """Build the model, fit it in two stages and write the run (one attempt of `train`)."""
    import torch

    from medcls.engine import fit, predict_probs
    from medcls.evaluation.assess import split_results
    from medcls.execution import choose_execution, tune_process
    from medcls.models import build_classifier

    config, registries, log, distributed, device, out = (start.config, start.registries, start.log,
                                                          start.distributed, start.device, start.out)
    seed_everything(config.seed, config.deterministic)
    transform, policy_params = make_policy(config, registries)
    val_rows, test_rows = data.rows("val"), data.rows("test")
    train_rows = data.rows("train") if train_rows is None else train_rows
    for name, rows in (("train", train_rows), ("val", val_rows), ("test", test_rows)):
        present = np.unique(data.cache_labels(rows))
        if len(present) < len(data.classes):
            log(f"warning: the {name} split ({len(rows)} images) lacks class(es) "
                f"{', '.join(data.classes[i] for i in set(range(len(data.classes))) - set(present))}")
    unit = "volumes" if data.cache.images.dim() == 5 else "images"
    log(f"data: {len(data.cache.kept)} {unit} ({data.format_name}), classes {data.classes}, "
        f"train/val/test = {len(train_rows)}/{len(val_rows)}/{len(test_rows)}, channels {data.cache.channels}, "
        f"{len(data.duplicates)} duplicate set(s) kept on one side")

    model, weights_origin = build_classifier(registries, config.backbone, len(data.classes), data.cache.channels,
                                             config.dropout, config.pretrained, config.weights, config.slices,
                                             config.slice_pooling)
    workers = loader_workers(config, transform)
    tune_process(workers, processes_per_machine=distributed.world)
    execution = choose_execution(device, model, config.precision, config.channels_last)
    if distributed.active and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # statistics over the global batch
    model = execution.prepare(model)
    if device.type == "cuda" and not config.deterministic:
        torch.backends.cudnn.benchmark = True
    log(f"model: {config.backbone} ({weights_origin}), {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
        f"parameters, on {execution.describe()}")

    train_labels = data.cache_labels(train_rows)
    weights = class_weights(train_labels, len(data.classes)) if config.class_balance == "weighted_loss" else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=device))
    generator = torch.Generator().manual_seed(config.seed)
    loader = make_loader(TrainingImages(data.cache, train_rows, train_labels, transform), train_labels, config,
                         len(data.classes), workers, generator, distributed)
    metrics = list(registries["metrics"])
    val_labels = data.cache_labels(val_rows)

    # Early stopping and the best checkpoint maximise the score: lower-is-better metrics are negated.
    lower_is_better = config.monitor == "loss" or not registries["metrics"].get(config.monitor).metadata.get(
        "higher_is_better", True)
    monitor_sign = -1.0 if lower_is_better else 1.0

    def score_val(probs):
        values = split_results(probs, val_labels, None if probs.shape[1] != 2 else 0.5, metrics)
        return values["loss"], values, monitor_sign * values[config.monitor]

    def evaluate_val():
        return score_val(predict_probs(model, data.batches(val_rows), execution, config.batch_size))

    frozen = None
    if can_cache_features(config, model, transform) and not distributed.active:
        frozen = frozen_features(model, data, train_rows, val_rows, train_labels, config, execution, generator,
                                 score_val)
        log("stage 1: backbone features computed once (no augmentation, frozen backbone)")

    def on_epoch(epoch, is_best):
        log(f"[{epoch.stage}] epoch {epoch.epoch}: train loss {epoch.train_loss:.4f}, val loss "
            f"{epoch.val_loss:.4f}, val {config.monitor} {epoch.val_metrics.get(config.monitor, float('nan')):.4f}, "
            f"lr {epoch.lr:.2e}, {epoch.seconds:.1f}s{' *best' if is_best else ''}")

    # The run folder and its config exist from the first epoch on, so that a killed run can resume.
    from medcls.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint

    if distributed.writes:
        out.mkdir(parents=True, exist_ok=True)
        save_config(dataclasses.replace(config, resume=False), out / "config.yaml")
    resumed = load_checkpoint(out / CHECKPOINT, generator, transform) if config.resume else None
    if resumed is not None:
        log(f"resuming after epoch {resumed.epoch_number} from {out / CHECKPOINT}")
        for epoch in resumed.history:
            log(f"[{epoch['stage']}] epoch {epoch['epoch']}: (restored) val {config.monitor} "
                f"{epoch['val_metrics'].get(config.monitor, float('nan')):.4f}")

    fitted = fit(model, stages_for(config), train_loader=loader, evaluate_val=evaluate_val, loss_fn=loss_fn,
                 execution=execution, config=config, on_epoch=on_epoch, progress_factory=start.progress_factory,
                 augment=transform.batch if is_batched(transform) else None, frozen=frozen,
                 checkpoint=(lambda state: save_checkpoint(out / CHECKPOINT, state, generator, transform))
                 if distributed.writes else None, resume=resumed, distributed=distributed)
    if not distributed.writes:
        return {"rank": distributed.rank}  # rank 0 scores and writes the run
    if data.cache.filling is not None:
        train_rows, val_rows, test_rows = completed_rows(data, train_rows, val_rows, log)

    return finish_run(config, registries, data, model, execution, fitted, out,
                      rows={"train": train_rows, "val": val_rows, "test": test_rows}, log=log,
                      facts={"weights_origin": weights_origin, "device": str(device), "started": start.started,
                             "policy_params": policy_params})


def completed_rows(data: PreparedData, train_rows, val_rows, log) -> tuple:
    """After training on images decoded in the background: wait for the rest (test images may
    still be decoding) and give every split's rows again, since unreadable images leave them.
    One among the training or validation images (one that the dropped last partial batch hid
    from every epoch), or a colour image among the last, means starting again."""
    from medcls.data.decoding import StartAgain

    provisional, channels = data.cache.kept, data.cache.channels  # every case, the count trained with
    for warning in data.complete():
        log(f"warning: {warning}")
    unreadable = set(provisional.tolist()) - set(data.cache.kept.tolist())
    used = unreadable & set(provisional[np.concatenate([train_rows, val_rows])].tolist())
    if used:
        raise StartAgain(f"image '{data.cases[min(used)].key}' turned out unreadable; training starts again without it")
    if data.cache.channels != channels:
        raise StartAgain(f"the images have {data.cache.channels} channels, not the {channels} the first ones "
                         f"suggested: training starts again with {data.cache.channels} channels")
    return data.rows("train"), data.rows("val"), data.rows("test")


def finish_run(config: TrainConfig, registries, data: PreparedData, model, execution, fitted, out: Path, *,
               rows: dict, log, facts: dict, extra_info: dict | None = None, extend=None) -> dict:
    """Score every split the same way (no augmentation or dropout), pick the operating point on
    validation, and write the run folder: model, metrics, figures, report. Returns the summary."""
    import json

    from medcls.checkpoint import CHECKPOINT
    from medcls.engine import predict_probs
    from medcls.evaluation import plots, report
    from medcls.evaluation.documents import training_document
    from medcls.runs import run_manifest, save_model, write_history, write_splits

    scores = {s: (predict_probs(model, data.batches(r), execution, config.batch_size), data.cache_labels(r))
              for s, r in rows.items()}
    scoring = score_splits(config, registries, data, rows, scores, log)
    results, threshold = scoring["results"], scoring["threshold"]

    out.mkdir(parents=True, exist_ok=True)
    info = {
        "backbone": config.backbone, "classes": data.classes, "in_chans": data.cache.channels,
        "image_size": config.image_size, "spatial_dims": int(data.cache.images.dim()) - 2,
        "volume_size": config.volume_size, "volume_spacing": config.volume_spacing, "slices": config.slices,
        "slice_pooling": config.slice_pooling, "dropout": config.dropout, "threshold": threshold,
        "threshold_rule": config.threshold_rule, "target": config.target, "window": config.window,
        "temperature": scoring["temperature"],
        "positive_class": data.classes[1] if len(data.classes) == 2 else None,
        "preprocessing": "decode (readers), resize to image_size (antialiased bilinear) or, for volumes, reorient "
                         "to RAS, crop/resample to volume_size (trilinear), window or percentiles; values in [0, 1]; "
                         "the model normalises internally", "weights_origin": facts["weights_origin"],
        **(extra_info or {}),
    }
    save_model(model, info, out)
    write_history(fitted.history, out / "history.csv")
    write_splits(data, out / "splits.csv")
    manifest = run_manifest(config, data)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    report.write_metrics_json(out / "metrics.json", {
        **results, "intervals": scoring["intervals"], "threshold": threshold, "reading": scoring["reading"],
        "best_epoch": fitted.best_epoch, "temperature": scoring["temperature"],
        "operating": {s: a["operating"] for s, a in scoring["assessed"].items()},
        "per_class": {s: a["per_class"] for s, a in scoring["assessed"].items()},
        "calibration": scoring["calibration"], "level": {s: a["level"] for s, a in scoring["assessed"].items()},
        "patient_level": scoring["patient_level"], "subgroups": scoring["subgroups"],
        "notes": {s: a["notes"] for s, a in scoring["assessed"].items()},
    })
    if fitted.history:
        plots.plot_learning_curves(fitted.history, out / "learning_curves.png")
    draw_split_figures(scoring, data.classes, out)
    summary = {
        "out": str(out), "results": results, "intervals": scoring["intervals"], "reading": scoring["reading"],
        "threshold": threshold, "best_epoch": fitted.best_epoch, "stopped_early": fitted.stopped_early,
        "weights_origin": facts["weights_origin"], "device": facts["device"],
        "seconds": time.perf_counter() - facts["started"], "policy_params": facts["policy_params"],
        "warnings": data.warnings, "epochs_run": len(fitted.history),
        "scores": scores,  # (probabilities, labels) per split, for cross-validation and ensembles
    }
    document = training_document(config, data, summary, scoring)
    if extend is not None:
        extend(document)
    document.write(out)
    (out / CHECKPOINT).unlink(missing_ok=True)  # the run is complete: model.safetensors holds it
    return summary


def score_splits(config: TrainConfig, registries, data: PreparedData, rows: dict, scores: dict, log) -> dict:
    """Calibrate and pick the operating point on validation, then assess every split the same way."""
    from medcls.evaluation import report
    from medcls.evaluation.assess import assess, assess_subgroups
    from medcls.evaluation.calibration import apply_temperature, calibration_slope_intercept, fit_temperature
    from medcls.evaluation.operating_points import choose_threshold

    metrics = list(registries["metrics"])
    temperature = None
    if config.calibration == "temperature":
        temperature = fit_temperature(*scores["val"])
        scores = {s: (apply_temperature(p, temperature), y) for s, (p, y) in scores.items()}
        log(f"calibration: temperature {temperature:.3f} fitted on validation")
    threshold = None
    if len(data.classes) == 2:
        probs, labels = scores["val"]
        threshold = choose_threshold(config.threshold_rule, labels, probs[:, 1], target=config.target,
                                     fixed=config.threshold)
    options = dict(prevalence=config.prevalence, n_resamples=config.bootstrap, seed=config.seed)
    patients = {s: data.patients(r) for s, r in rows.items()}
    assessed = {s: assess(p, y, threshold, metrics, patients=patients[s], where=f"{s} split", **options)
                for s, (p, y) in scores.items()}
    results = {s: a["values"] for s, a in assessed.items()}
    results["gap"] = report.gap(results["train"], results["test"])
    patient_level = None
    if config.patient_level:
        patient_level = {s: assess(p, y, threshold, metrics, patients=patients[s], where=f"{s} split",
                                   patient_level=config.patient_level, **options) for s, (p, y) in scores.items()}
    subgroups = {}
    if config.by:
        subgroups = assess_subgroups(*scores["test"], threshold, metrics, data.column(rows["test"], config.by),
                                     config.by, patients=patients["test"], where="test ", **options)
    calibration = {s: calibration_slope_intercept(y, p[:, 1]) for s, (p, y) in scores.items() if p.shape[1] == 2}
    return {"scores": scores, "threshold": threshold, "temperature": temperature, "assessed": assessed,
            "results": results, "intervals": {s: a["intervals"] for s, a in assessed.items()},
            "reading": report.read_gap(results["train"], results["val"], results["test"]),
            "patient_level": patient_level, "subgroups": subgroups, "calibration": calibration,
            "groups": patients["test"]}


def draw_split_figures(scoring: dict, classes: list[str], out: Path) -> None:
    from medcls.evaluation import plots

    threshold = scoring["threshold"]
    scores = scoring["scores"]
    plots.plot_roc({s: (p, y, threshold) for s, (p, y) in scores.items()}, classes, out / "roc.png",
                   groups=scoring["groups"])
    plots.plot_confusion(*scores["test"], threshold, classes, out / "confusion_matrix.png")
    if len(classes) == 2:
        plots.plot_pr(*scores["test"], out / "pr.png")
        plots.plot_calibration(*scores["test"], out / "calibration.png")
        plots.plot_decision_curve(*scores["test"], out / "decision_curve.png")


def checked_config(config: TrainConfig, registries) -> TrainConfig:
    """Names checked before any data is read, and the data path made absolute, so that
    `medcls evaluate RUN` finds the data (and its split) from any folder."""
    check_names(config, registries)
    if Path(config.data).exists():
        config = dataclasses.replace(config, data=str(Path(config.data).resolve()))
    return config


def open_run(config: TrainConfig, registries, log, *, split: bool) -> tuple[TrainConfig, Path, PreparedData]:
    """The start that cross-validation and ensembles share: checked config, the run folder with
    its config.yaml, and the data prepared once for every run inside it."""
    config = checked_config(config, registries)
    out = run_folder(config)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    data = prepare_data(config, registries, split=split)
    for warning in data.warnings:
        log(f"warning: {warning}")
    return config, out, data


def resume_config(run) -> TrainConfig:
    """The configuration an interrupted run was started with, set to continue it."""
    from medcls.config import make_config, read_config_file

    saved = Path(run) / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"--resume: '{run}' has no config.yaml: give the --out folder of an interrupted `medcls train`")
    return make_config(read_config_file(saved), {"out": str(run), "resume": True}, where=f"run config '{saved}'")


def run_folder(config: TrainConfig) -> Path:
    """The --out folder, checked before any work so that a finished run is never overwritten."""
    if config.out is None:
        return Path("runs") / f"{config.backbone}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' is a file: give a folder")
    if config.resume:
        if not out.is_dir():
            raise ConfigError(f"--resume: run folder '{out}' does not exist")
        return out
    if (out / "model.safetensors").exists() and not config.overwrite:
        raise ConfigError(f"run folder '{out}' already holds a run: choose another --out or pass --set overwrite=true")
    return out


