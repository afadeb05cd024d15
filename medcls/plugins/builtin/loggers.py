"""Built-in experiment trackers: TensorBoard and MLflow, each an optional extra
(`pip install "medcls[tensorboard]"`, `"medcls[mlflow]"`).

MLflow writes to `MLFLOW_TRACKING_URI` when it is set (a team's server) and otherwise to a local
store beside the run folder, `<runs>/mlruns`, that needs no server (`mlflow ui --backend-store-uri
<runs>/mlruns` shows it). That local store is MLflow's file store, which MLflow keeps in
maintenance mode and enables only on request: medcls requests it for its own default location.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from medcls.errors import ConfigError
from medcls.plugins.hookspecs import hookimpl

EXPERIMENT = "medcls"


def missing(extra: str, package: str) -> ConfigError:
    return ConfigError(f"logging to {extra} needs the {package} package: pip install 'medcls[{extra}]'")


class CsvTracker:
    """Every logged value as a row of `<run>/log.csv` (step, name, value; step 0 for the final
    figures): the per-epoch history and the final figures in one long table any tool reads."""

    def __init__(self, out: Path) -> None:
        import csv

        Path(out).mkdir(parents=True, exist_ok=True)
        self.file = open(Path(out) / "log.csv", "w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)
        self.writer.writerow(["step", "name", "value"])

    def child(self, out: Path) -> "CsvTracker":
        return CsvTracker(out)

    def start(self, params: dict) -> None:
        pass  # the configuration is the run's config.yaml

    def epoch(self, step: int, values: dict) -> None:
        self.writer.writerows([step, name, f"{value:.8g}"] for name, value in values.items())
        self.file.flush()

    def finish(self, values: dict, artefacts: list[Path]) -> None:
        self.writer.writerows([0, name, f"{value:.8g}"] for name, value in values.items())
        self.file.close()

    def fail(self, status: str) -> None:
        self.file.close()  # the epochs logged so far stay


class TensorBoardTracker:
    """Scalars per epoch, the final figures, the run's figures as images and the hyper-parameters,
    in `<run>/tensorboard`."""

    def __init__(self, out: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise missing("tensorboard", "tensorboard") from None
        self.writer = SummaryWriter(str(out / "tensorboard"))
        self.params: dict = {}

    def child(self, out: Path) -> "TensorBoardTracker":
        """A nested run (a fold, a member, an experiment's run): its own event files inside this
        run's folder, so `tensorboard --logdir` on this folder shows them together."""
        return TensorBoardTracker(out)

    def start(self, params: dict) -> None:
        self.params = params
        self.writer.add_text("config", "```\n" + json.dumps(params, indent=1, default=str) + "\n```")

    def epoch(self, step: int, values: dict) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def finish(self, values: dict, artefacts: list[Path]) -> None:
        import numpy as np
        from PIL import Image

        for path in artefacts:
            if path.suffix == ".png":
                with Image.open(path) as image:
                    self.writer.add_image(path.stem, np.asarray(image.convert("RGB")), dataformats="HWC")
        hparams = {k: v for k, v in self.params.items() if isinstance(v, (int, float, str, bool))}
        self.writer.add_hparams(hparams, {f"final/{k}": v for k, v in values.items()}, run_name="hparams")
        self.writer.close()

    def fail(self, status: str) -> None:
        self.writer.close()


def mlflow_store(uri: str):
    """An MLflow client on `uri` and the id of medcls's experiment there (created when absent);
    MLflow's own refusal of the URI (a scheme it does not know, a store it cannot open) is one line."""
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise missing("mlflow", "mlflow") from None
    if uri.startswith("file:") or "://" not in uri:  # a folder store, medcls's default or the user's own
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # see the module docstring
    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(EXPERIMENT)
        return client, (found.experiment_id if found else client.create_experiment(EXPERIMENT))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"MLflow cannot use the tracking URI {uri!r} ({first}): set MLFLOW_TRACKING_URI to a "
                          "server (http://...), a sqlite:///FILE.db or a folder, or leave it unset for a store "
                          "beside the runs") from None


def check_mlflow() -> None:
    """Before any data is read: the mlflow package, and the store MLFLOW_TRACKING_URI names (the
    default store beside the runs needs no check)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        mlflow_store(uri)
    else:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise missing("mlflow", "mlflow") from None


def check_tensorboard() -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise missing("tensorboard", "tensorboard") from None


class MLflowTracker:
    """Parameters, per-epoch metrics, final metrics with interval bounds, tags (backbone, data hash,
    medcls commit) and the run's files as artefacts, through `mlflow.MlflowClient` (no global state)."""

    def __init__(self, out: Path, parent: "MLflowTracker | None" = None) -> None:
        uri = os.environ.get("MLFLOW_TRACKING_URI") if parent is None else parent.uri
        if not uri:
            store = (Path(out).resolve().parent / "mlruns")
            uri = store.as_uri()
        self.uri, self.out = uri, Path(out)
        self.client, experiment = mlflow_store(uri)
        self.experiment_id = experiment if parent is None else parent.experiment_id
        # A nested run carries MLflow's own parent tag, so the UI folds it under its parent.
        tags = {"mlflow.parentRunId": parent.run_id} if parent is not None else {}
        name = self.out.name
        if parent is not None and parent.out in self.out.parents:
            name = f"{parent.out.name}/{self.out.relative_to(parent.out)}"
        self.run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id

    def child(self, out: Path) -> "MLflowTracker":
        """A nested run (a fold, a member, an experiment's run) under this one."""
        return MLflowTracker(out, parent=self)

    def start(self, params: dict) -> None:
        import getpass

        from mlflow.entities import Param, RunTag

        from medcls.core.runs import git_commit

        tags = {"backbone": str(params.get("backbone")), "tool": "medcls", "mlflow.source.name": "medcls",
                "mlflow.source.type": "LOCAL"}
        commit = git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        try:
            tags["mlflow.user"] = getpass.getuser()
        except Exception:  # no user name in this environment (a container without one)
            pass
        self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()],
                              tags=[RunTag(k, v) for k, v in tags.items()])

    def fail(self, status: str) -> None:
        """The run ends FAILED (an error) or KILLED (interrupted), never left RUNNING."""
        self.client.set_terminated(self.run_id, status)

    def epoch(self, step: int, values: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def finish(self, values: dict, artefacts: list[Path]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])
        manifest = self.out / "manifest.json"
        if manifest.is_file():
            facts = json.loads(manifest.read_text())
            self.client.log_batch(self.run_id, tags=[RunTag("data_sha256", str(facts.get("data_sha256"))),
                                                     RunTag("medcls_commit", str(facts.get("medcls_commit")))])
        for path in artefacts:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id)


@hookimpl
def medcls_register_loggers(register):
    register("csv", CsvTracker, description="Every epoch's and the final figures as rows of RUN/log.csv")
    register("tensorboard", TensorBoardTracker, description="TensorBoard event files in RUN/tensorboard",
             extra="tensorboard", check=check_tensorboard)
    register("mlflow", MLflowTracker, description="MLflow: MLFLOW_TRACKING_URI, else a local store beside the runs",
             extra="mlflow", check=check_mlflow)
