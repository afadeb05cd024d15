"""The `medcls` command: parses flags, calls the public Python API (medcls.api), prints. Nothing else:
everything a command does, a notebook can do with the same call. Heavy imports happen inside commands."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import warnings
from pathlib import Path

import click

from medcls.config import CHOICES
from medcls.errors import DATA, FILE_SYSTEM, INTERRUPTED, ConfigError, MedclsError
from medcls.logs import DefaultHandler
from medcls.version import __version__

THRESHOLD_RULES = list(CHOICES["threshold_rule"])

LIST_KINDS = ("backbones", "policies", "metrics", "datasets", "readers", "weights", "loggers")


class MedclsGroup(click.Group):
    """Turns every MedclsError, and a file that cannot be read or written, into one line on stderr
    with a documented exit status (medcls.errors): no traceback."""

    def invoke(self, ctx):
        try:
            with library_warnings_as_medcls_warnings():
                return super().invoke(ctx)
        except MedclsError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:  # a read-only or full disk, a missing permission
            where = f" '{exc.filename}'" if getattr(exc, "filename", None) else ""
            click.echo(f"error: cannot read or write{where}: {exc.strerror or exc}; check the path, its "
                       "permissions and the free space", err=True)
            ctx.exit(FILE_SYSTEM)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(INTERRUPTED)


@contextlib.contextmanager
def library_warnings_as_medcls_warnings():
    """Warnings raised by libraries (Pillow's decompression-bomb check, matplotlib's missing
    glyphs, numpy's runtime warnings) shown once each as one medcls warning line, naming where
    they came from, instead of a raw multi-line warning."""
    def show(message, category, filename, lineno, file=None, line=None):
        origin = Path(filename).parts[-2] if len(Path(filename).parts) > 1 else filename
        logging.getLogger("medcls").warning(f"{category.__name__} from {origin}: {str(message).strip().splitlines()[0]}")

    with warnings.catch_warnings():
        warnings.simplefilter("default")  # each distinct warning once
        warnings.showwarning = show
        yield


def refuse_existing(out: str | None, overwrite: bool) -> None:
    """An --out file that exists may be the user's own (a label manifest, another run's
    predictions): it is replaced only when asked, and the check comes before any work."""
    if out not in (None, "-") and Path(out).exists() and not overwrite:
        raise ConfigError(f"--out '{out}' exists: give a new file name or pass --overwrite (nothing was overwritten)")


def log(message: str) -> None:
    click.echo(message, err=True)


class EchoHandler(logging.Handler):
    """The library's log records on stderr, one line each; warnings marked as such and each said
    once per command (a broken plugin is reported by every plugin manager the command makes)."""

    def __init__(self) -> None:
        super().__init__()
        self.warned: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno == logging.WARNING:
            if message in self.warned:
                return
            self.warned.add(message)
            message = f"warning: {message}"
        click.echo(message, err=True)


def attach_log_handler(level: int = logging.INFO) -> None:
    """Route the library's logger to stderr for this command (a fresh handler per command)."""
    logger = logging.getLogger("medcls")
    for handler in [h for h in logger.handlers if isinstance(h, (EchoHandler, DefaultHandler))]:
        logger.removeHandler(handler)
    logger.addHandler(EchoHandler())
    logger.setLevel(level)
    logger.propagate = False


def progress_bars(enabled: bool):
    """A tqdm bar per epoch on a terminal; nothing when output is captured (CI, logs)."""
    from medcls.logs import epoch_bars

    return epoch_bars if enabled else None


@click.group(cls=MedclsGroup)
@click.version_option(__version__, prog_name="medcls")
@click.option("--verbose", "-v", is_flag=True, help="Debug output too, e.g. the traceback of a plugin hook that failed.")
def cli(verbose):
    """medcls: fine-tune pretrained backbones on medical images and report sensitivity,
    specificity and ROC honestly. Extend it with plugins (see `medcls plugins`)."""
    attach_log_handler(logging.DEBUG if verbose else logging.INFO)
    from medcls.logs import auto_stage_bars, show_progress_bars

    show_progress_bars(auto_stage_bars if sys.stderr.isatty() else None)  # in logs and CI: one line per stage


def size_or_auto(ctx, param, value: str | None):
    """--image-size (a click callback): a number of pixels, or a word the config checks ('auto')."""
    return int(value) if value and value.isdigit() else value


def parse_pairs(values, flag: str) -> dict:
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=flag)
        pairs[key.strip()] = yaml_value(value)
    return pairs


def yaml_value(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


@cli.command()
@click.option("--data", help="Folder (class per sub-folder), CSV manifest, .npz, or 'synthetic'.")
@click.option("--backbone", help="Backbone name: any timm model (resnet50, efficientnet_lite0, ...) or a plugin's.")
@click.option("--pretrained/--no-pretrained", default=None, help="Start from pretrained weights (default) or random.")
@click.option("--weights", type=click.Path(dir_okay=False), help="Backbone weights as .safetensors.")
@click.option("--policy", help="Augmentation policy for training batches: none, interpretable, aggressive, ...")
@click.option("--backbone-arg", "backbone_args", multiple=True, metavar="KEY=VALUE",
              help="A keyword argument for the backbone's constructor, e.g. drop_path_rate=0.1 (repeatable).")
@click.option("--aug", multiple=True, metavar="KEY=VALUE", help="Override a policy parameter (repeatable).")
@click.option("--epochs", type=int, help="Stage-1 epochs (frozen backbone, new head).")
@click.option("--finetune-epochs", type=int, help="Stage-2 epochs (blocks unfrozen: --unfreeze-blocks); 0 turns it off.")
@click.option("--unfreeze-blocks", type=int, help="Blocks stage 2 unfreezes (-1: all).")
@click.option("--lr", type=float, help="Stage-1 learning rate.")
@click.option("--batch-size", type=int, help="Images per training step.")
@click.option("--image-size", callback=size_or_auto,
              help="Images are resized to this many pixels square; 'auto' (default): from the source size.")
@click.option("--window", help="DICOM window: header (default), brain, lung, soft_tissue, bone, ... or 'centre,width'.")
@click.option("--format", "format_", help="Dataset layout (default: detect; see `medcls list datasets`).")
@click.option("--path-column", help="Manifest column with the image file.")
@click.option("--label-column", help="Manifest column with the class label.")
@click.option("--label-columns", help="Multi-label: manifest columns, one finding each (1, 0, -1 uncertain, blank).")
@click.option("--patient-column", help="Manifest column with the patient id.")
@click.option("--image-root", help="Folder that manifest paths are relative to.")
@click.option("--patient-from-dicom", is_flag=True, default=None, help="Group by the DICOM header's PatientID.")
@click.option("--patient-pattern", help="Regular expression for the patient id in each path (its first group), "
                                        "e.g. 'patient\\d+'.")
@click.option("--threshold-rule", type=click.Choice(THRESHOLD_RULES),
              help="How validation picks the operating point.")
@click.option("--target", type=float, help="Sensitivity or specificity the target_* rules must reach (e.g. 0.95).")
@click.option("--by", help="Manifest column for a subgroup table of the test split.")
@click.option("--out", type=click.Path(file_okay=False), help="Run folder for the model, metrics and report.")
@click.option("--log", "loggers", help="Experiment trackers, comma-separated: csv, tensorboard, mlflow (extras "
                                       "medcls[tensorboard], medcls[mlflow]).")
@click.option("--seed", type=int, help="One seed for splits, initialisation, augmentation and batch order.")
@click.option("--folds", type=int, help="Cross-validate: K folds grouped by patient, pooled out-of-fold metrics.")
@click.option("--ensemble", type=int, help="Train N bagged members and report their average beside them.")
@click.option("--devices", type=int, help="Train with DDP on N processes (GPUs, or CPU processes), launched by torchrun.")
@click.option("--device", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N or mps.")
@click.option("--strict", is_flag=True, default=None, help="Stop at the first unreadable image instead of skipping it.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML or TOML file; flags override its keys.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Set any config key (repeatable).")
@click.option("--resume", "resume_run", type=click.Path(file_okay=False),
              help="Continue an interrupted run (its folder) from its last checkpoint, with its own settings.")
def train(config_file, settings, aug, backbone_args, format_, resume_run, devices, **flags):
    """Fine-tune a backbone: frozen stage, then unfrozen blocks; print the train/val/test gap report.
    Any config key can be set with --set KEY=VALUE: `medcls config` lists them all."""
    from medcls import api

    if devices:
        sys.exit(api.launch_distributed(devices, sys.argv[1:]))
    overrides = {k: v for k, v in flags.items() if v is not None}
    progress = progress_bars(sys.stderr.isatty())
    if resume_run is not None:
        if overrides or settings or aug or backbone_args or config_file or format_:
            raise ConfigError("--resume continues a run with the settings in its config.yaml: give no other options")
        print_run(api.resume(resume_run, progress=progress))
        return
    if format_ is not None:
        overrides["format"] = format_
    overrides.update(parse_pairs(settings, "--set"))
    file_values = api.read_config_file(config_file) if config_file else {}
    if aug:
        overrides["aug"] = {**file_values.get("aug", {}), **parse_pairs(aug, "--aug")}
    if backbone_args:
        overrides["backbone_args"] = {**file_values.get("backbone_args", {}), **parse_pairs(backbone_args,
                                                                                            "--backbone-arg")}
    config = api.make_config(file_values, overrides, where=f"config file '{config_file}'")
    if config.folds:
        result = api.cross_validate(config=config, progress=progress)
        click.echo((result.path / "report.md").read_text("utf-8"))
        return
    # the file and the flags, not the merged config: the plan tells the keys the user set from the rest
    run = api.train(config=config_file, progress=progress, default_folder=True, **overrides)
    print_run(run)
    if run is not None and run.config.ensemble:
        spread = run.metrics_json.get("members", {}).get("spread", {}).get("roc_auc", {})
        click.echo(f"Members' test ROC AUC: {spread.get('mean', float('nan')):.3f} ± {spread.get('sd', float('nan')):.3f}"
                   f" (mean ± sd); the ensemble: {run.metrics.test['roc_auc']:.3f}")


@cli.command()
@click.option("--vary", required=True, metavar="KEY=V1,V2,...",
              help="The one setting to vary: any config key, or finetune=scratch,frozen,top,all; one value gives "
                   "that setting's seed spread.")
@click.option("--seeds", default="0,1,2", show_default=True, help="Training seeds per value (the split stays fixed).")
@click.option("--data", help="Data, as for train.")
@click.option("--backbone", help="Backbone, as for train.")
@click.option("--out", type=click.Path(file_okay=False), default="runs/experiment", show_default=True,
              help="Folder for the runs, experiment.csv, experiment.md and experiment.png.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML or TOML file with the fixed settings.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Set any config key (repeatable).")
def experiment(vary, seeds, data, backbone, out, config_file, settings):
    """Vary one setting with everything else fixed, repeat over seeds, and tabulate test results,
    e.g. --vary policy=none,interpretable,aggressive or --vary finetune=scratch,frozen,top,all."""
    from medcls import api

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{seeds!r} is not a comma-separated list of integers", param_hint="--seeds") from None
    overrides = {k: v for k, v in (("data", data), ("backbone", backbone)) if v is not None}
    overrides.update(parse_pairs(settings, "--set"))
    result = api.experiment(vary, seed_list, out=out, config=config_file, **overrides)
    click.echo((Path(result["out"]) / "experiment.md").read_text().split("\n\nPer run")[0])


@cli.command()
@click.argument("data", required=False)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML or TOML file, as for train.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Set any config key (repeatable).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the plan as JSON here.")
def plan(data, config_file, settings, json_out):
    """The data's fingerprint and the recipe `medcls train` would use on it, each key with its
    reason (yours, a rule's, or today's default), and what the data warns of. Decodes no image."""
    from medcls import api

    found = api.plan(data, config=config_file, **parse_pairs(settings, "--set"))
    click.echo("\n".join(found.lines()))
    if json_out:
        Path(json_out).write_text(json.dumps(found.to_json(), indent=1, default=str), encoding="utf-8")


@cli.command(name="compare-policies")
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--data", help="Data, as for train.")
@click.option("--backbone", help="Backbone, as for train.")
@click.option("--out", type=click.Path(file_okay=False), default="runs/compare-policies", show_default=True)
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE")
@click.pass_context
def compare_policies(ctx, seeds, data, backbone, out, settings):
    """Shortcut: experiment --vary policy=none,interpretable,aggressive."""
    ctx.invoke(experiment, vary="policy=none,interpretable,aggressive", seeds=seeds, data=data, backbone=backbone,
               out=out, config_file=None, settings=settings)


def print_run(run) -> None:
    if run is None:  # a DDP process other than rank 0: rank 0 reports
        return
    click.echo(run.gap_report())


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--data", help="Data to evaluate on (default: the run's own data).")
@click.option("--split", type=click.Choice(["test", "val", "train", "all"]), default=None,
              help="Which cases: a split of the run's own data (default test) or all (default for new data).")
@click.option("--out", "-o", type=click.Path(file_okay=False),
              help="New folder for metrics.json, report.md and report.html (default RUN/evaluation, then "
                   "RUN/evaluation-2, ...).")
@click.option("--by", help="Manifest column for a subgroup table (site, sex, scanner, ...).")
@click.option("--patient-level", type=click.Choice(["mean", "max"]), help="Also score per patient.")
@click.option("--prevalence", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Also report PPV and NPV at this deployment prevalence.")
@click.option("--bootstrap", type=click.IntRange(100), default=2000, show_default=True, help="Bootstrap resamples.")
@click.option("--tta", type=click.Choice(["none", "flip", "crops"]), default="none", show_default=True,
              help="Test-time augmentation: flip (image + mirror) or crops (10-crop); reported beside single-view.")
@click.option("--allow-changed", is_flag=True, help="Evaluate although files changed since training (warned).")
def evaluate(run, data, split, out, by, patient_level, prevalence, bootstrap, tta, allow_changed):
    """Score a trained run at its stored operating point, with intervals; writes metrics.json,
    report.md and a self-contained report.html."""
    from medcls import api

    result = api.load_run(run).evaluate(data, split=split, out=out, by=by, patient_level=patient_level,
                                        prevalence=prevalence, bootstrap=bootstrap, tta=tta,
                                        allow_changed=allow_changed)
    click.echo(json.dumps({"split": result.split, "n": result.n,
                           "metrics": {name: e.value for name, e in result.metrics.items()},
                           "out": str(result.path)}, indent=2, default=float))


PREDICTION_COLUMNS = [
    click.option("--label-column", default="label", show_default=True, help="Column with the true class."),
    click.option("--score", "score_column", help="Binary task: the column with P(positive) (default: p_<class> "
                                                 "columns, one per class, as medcls's predictions.csv)."),
    click.option("--patient-column", help="Column with patient ids: intervals resample patients."),
    click.option("--positive-class", help="The positive class when the names do not say it."),
    click.option("--threshold-rule", type=click.Choice(THRESHOLD_RULES),
                 default="youden", show_default=True, help="How the operating point is chosen on the val rows."),
    click.option("--target", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True,
                 help="Target sensitivity or specificity for the target_* rules."),
]


def prediction_columns(command):
    for option in reversed(PREDICTION_COLUMNS):
        command = option(command)
    return command


@cli.command()
@click.argument("predictions", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "-o", type=click.Path(file_okay=False),
              help="New folder for metrics.json, report.md, report.html (default: PREDICTIONS-scores beside it, "
                   "or mean-of-N-scores for N files).")
@prediction_columns
@click.option("--threshold", type=click.FloatRange(0, 1), help="A given operating point instead of one chosen on val.")
@click.option("--by", help="Column for a subgroup table (site, sex, scanner, ...).")
@click.option("--prevalence", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Also report PPV and NPV at this deployment prevalence.")
@click.option("--bootstrap", type=click.IntRange(100), default=2000, show_default=True, help="Bootstrap resamples.")
def score(predictions, out, label_column, score_column, patient_column, positive_class, threshold_rule, target,
          threshold, by, prevalence, bootstrap):
    """Score predictions from any tool (a CSV of labels and probabilities) as a medcls run is scored;
    several files for the same cases are scored as their mean (an ensemble of trained runs)."""
    from medcls import api

    result = api.score(predictions, out=out, label_column=label_column, score_column=score_column,
                       patient_column=patient_column, positive_class=positive_class, threshold=threshold,
                       threshold_rule=threshold_rule, target=target, by=by, prevalence=prevalence,
                       bootstrap=bootstrap)
    click.echo(f"operating point: {result.operating_point}")
    for split, figures in result.splits.items():
        shown = [f"{name} {figures[name]}" for name in ("roc_auc", "sensitivity", "specificity") if name in figures]
        click.echo(f"{split} ({figures.n} rows): " + "; ".join(shown))
    click.echo(f"report: {result.path / 'report.html'}")


@cli.command()
@click.argument("run_a", type=click.Path())
@click.argument("run_b", type=click.Path())
@click.option("--data", help="Data both runs are scored on (default: the runs' own data).")
@click.option("--split", type=click.Choice(["test", "val", "train", "all"]), default=None,
              help="Which cases (default: test of the runs' own data, all of new data).")
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="Also write the result as JSON here.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (otherwise refused).")
@prediction_columns
def compare(run_a, run_b, data, split, out, overwrite, label_column, score_column, patient_column, positive_class,
            threshold_rule, target):
    """Compare two runs, or two prediction CSV files, on the same cases: paired DeLong (ROC AUC),
    McNemar (sensitivity, specificity)."""
    from medcls import api

    refuse_existing(out, overwrite)
    result = api.compare(run_a, run_b, data=data, split=split, threshold_rule=threshold_rule, target=target,
                         label_column=label_column, score_column=score_column, patient_column=patient_column,
                         positive_class=positive_class)
    text = json.dumps(result, indent=2, default=float)
    if out:
        with open(out, "w") as fh:
            fh.write(text)
    click.echo(f"cases: {result['n']} ({result['split']})")
    for finding, compared in (result.get("findings") or {"": result}).items():
        if finding:
            click.echo(f"{finding} (Holm-adjusted AUC p over the findings: {compared['auc']['p_holm']:.4f})")
        auc, sens, spec = compared["auc"], compared["sensitivity"], compared["specificity"]
        click.echo(f"ROC AUC      A {auc['auc_a']:.3f}  B {auc['auc_b']:.3f}  difference {auc['difference']:+.3f} "
                   f"(95% CI {auc['low']:+.3f} to {auc['high']:+.3f}), p = {auc['p_value']:.4f} ({auc['method']})")
        for name, row in (("sensitivity", sens), ("specificity", spec)):
            click.echo(f"{name:12s} A {row['a']:.3f}  B {row['b']:.3f}  discordant {row['a_only_correct']}/"
                       f"{row['b_only_correct']}, p = {row['p_value']:.4f} ({row['method']})")


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "-o", type=click.Path(dir_okay=False), default="-", show_default=True,
              help="CSV file to write ('-' for standard output).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (otherwise refused).")
def predict(run, inputs, out, overwrite):
    """Write a CSV of calibrated class probabilities and decisions for image files or folders."""
    import csv

    from medcls import api

    refuse_existing(out, overwrite)
    bar = progress_bars(sys.stderr.isatty())
    progress = bar("reading", 0) if bar else None
    try:
        predictions = api.load_run(run).predictions(list(inputs), progress=progress)
    finally:
        if progress is not None:
            progress.close()
    handle = sys.stdout if out == "-" else open(out, "w", newline="")
    try:
        writer = csv.DictWriter(handle, fieldnames=predictions.columns)
        writer.writeheader()
        writer.writerows(predictions.rows())
    finally:
        if handle is not sys.stdout:
            handle.close()
    if predictions.failed:
        log(f"warning: {predictions.failed} of {len(predictions.inputs)} file(s) could not be read; "
            "see the error column")
    if predictions.failed == len(predictions.inputs):
        click.echo("error: none of the inputs could be read (each one's problem is in the error column)", err=True)
        sys.exit(DATA)


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", type=click.Path(file_okay=False), required=True, help="Folder for the PNGs.")
@click.option("--class", "target_class", help="Explain this class (default: the positive class, or the decision).")
def explain(run, inputs, out, target_class):
    """Grad-CAM heatmaps over images (volumes: middle slice): a PNG per input and a grid."""
    from medcls import api

    result = api.load_run(run).explain(list(inputs), out, target_class)
    failed = [r for r in result.rows if r["error"]]
    for row in failed:
        log(f"warning: {row['error']}")
    click.echo(f"wrote {len(result.rows) - len(failed)} heatmap(s) and {result.grid} (layer {result.layer})")


@cli.group()
def augment():
    """Look at augmentation policies."""


@augment.command()
@click.option("--policy", required=True, help="Policy name (see `medcls list policies -v`).")
@click.option("--data", default="synthetic", show_default=True, help="Data, as for train.")
@click.option("-n", "count", type=click.IntRange(1, 64), default=8, show_default=True, help="Images (rows).")
@click.option("-k", "views", type=click.IntRange(1, 16), default=6, show_default=True, help="Augmented views per image.")
@click.option("--aug", multiple=True, metavar="KEY=VALUE", help="Override a policy parameter (repeatable).")
@click.option("--image-size", default="auto", show_default=True,
              callback=size_or_auto,
              help="Pixels square, or 'auto' (from the source size, as train).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Set any config key (repeatable).")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default="augment-preview.png", show_default=True)
def preview(policy, data, count, views, aug, image_size, seed, settings, out):
    """Write a PNG grid: each row a real image, then K augmented views of it."""
    from medcls import api

    keys = {"image_size": image_size, "seed": seed, **parse_pairs(settings, "--set"), "aug": parse_pairs(aug, "--aug")}
    width, height = api.preview_policy(policy, out, data=data, count=count, views=views, **keys)
    click.echo(f"wrote {out} ({width}x{height} px): {min(count, 10**9)} images x {views} views of policy {policy!r}")


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript", "hf", "monai-bundle"]), default="onnx",
              show_default=True,
              help="hf: a Hugging Face-style folder (config.json, model.safetensors, README.md model card) "
                   "that timm loads as local-dir:PATH and medcls.load_run loads back; monai-bundle: a MONAI "
                   "bundle that `python -m monai.bundle run` executes on a folder of images.")
@click.option("-o", "--out", type=click.Path(file_okay=False),
              help="Folder (default RUN/FORMAT: RUN/onnx, RUN/torchscript, RUN/hf, RUN/monai-bundle).")
def export(run, fmt, out):
    """Export a run's model (preprocessed images in, probabilities out) with its threshold and preprocessing."""
    from medcls import api

    result = api.load_run(run).export(fmt, out)
    click.echo(f"wrote {result.path} and {result.json} (max difference from medcls's own probabilities "
               f"{result.max_abs_difference:.1e})")


@cli.command()
@click.option("--all", "include_builtin", is_flag=True, help="Include the built-in plugins.")
def plugins(include_builtin):
    """List installed plugins as JSON: name, version, hooks, error."""
    from medcls import api

    click.echo(json.dumps(api.plugins(include_builtin), indent=2))


@cli.command(name="list")
@click.argument("kind", type=click.Choice(LIST_KINDS))
@click.argument("pattern", required=False)
@click.option("--verbose", "-v", is_flag=True, help="Also print each entry's parameters and metadata.")
@click.option("--pretrained", is_flag=True, help="Backbones: the names with published pretrained weights (timm tags).")
def list_(kind, pattern, verbose, pretrained):
    """List registered backbones, policies, metrics, datasets, readers or weight sources."""
    from medcls import api

    if pretrained:
        if kind != "backbones":
            raise click.BadParameter("--pretrained lists backbones", param_hint="--pretrained")
        names = api.list_backbones(pattern, pretrained=True)
        for name in names:
            click.echo(name)
        if not names:
            log(f"no pretrained backbones match {pattern!r}")
        return
    entries = api.registered(kind, pattern)
    for entry in entries:
        click.echo(f"{entry.name:32s} {entry.plugin:28s} {entry.description}")
        if verbose:
            for key, value in entry.metadata.get("params", {}).items():
                click.echo(f"    {key} = {value}")
            for key, value in entry.metadata.items():
                if key != "params":
                    shown = f"{getattr(value, '__module__', '')}.{getattr(value, '__name__', '')}" if callable(value) \
                        else value
                    click.echo(f"    [{key}] {shown}")
    if not entries:
        log(f"no {kind} match {pattern!r}")


@cli.command(name="config")
@click.argument("pattern", required=False)
def config_(pattern):
    """List every config key (for --set, config files and medcls.train) with its default and meaning."""
    import fnmatch

    from medcls import api

    section = None
    for row in api.config_keys():
        if pattern and not fnmatch.fnmatchcase(row["key"], pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"):
            continue
        if row["section"] != section:
            section = row["section"]
            click.echo(f"\n[{section}]")
        choices = f" ({'|'.join(row['choices'])})" if row["choices"] else ""
        click.echo(f"  {row['key']} = {row['default']!r}{choices}\n      {row['help']}")


def main() -> None:
    cli(prog_name="medcls")


if __name__ == "__main__":
    main()
