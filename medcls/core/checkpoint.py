"""Training checkpoints for `medcls train --resume`: one safetensors file per run, replaced
atomically after every epoch, holding the weights, the best weights so far, the optimizer and
schedule, the history and every random stream; nothing in it is ever unpickled."""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from medcls.errors import ConfigError

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class FitState:
    """Where training stands after an epoch: enough to continue as if never interrupted."""

    stage_index: int  # the stage to continue
    stage_epoch: int  # epochs of that stage already done
    stage_finished: bool  # the stage ended (its epochs ran out or it stopped early)
    epoch_number: int
    since_best: int
    best_score: float
    best_epoch: int
    stage_best: float = -math.inf  # the best monitored score within the stage (its patience counts from it)
    best_loss: float = math.inf  # the validation loss at the best epoch (it breaks ties of the score)
    stage_best_loss: float = math.inf  # the same within the stage
    stage_restarts: int = 0  # times the stage started again after a collapse (its rate is lr x 0.1 ** this)
    history: list = field(default_factory=list)  # EpochResult as dicts
    stopped_early: list = field(default_factory=list)
    restarts: list = field(default_factory=list)  # FitResult.restarts
    model: dict | None = None
    best_model: dict | None = None
    optimizer: dict | None = None
    schedule: dict | None = None
    loss: dict | None = None  # the loss's own state (multi-task: the learned task weights)
    ema: dict | None = None  # the moving average of the weights (`ema`), which goes on where it was


def numpy_state_json(state: tuple) -> list:
    """A numpy RandomState's state (kind, uint32 keys, position, gauss flag, gauss) as JSON."""
    kind, keys, *rest = state
    return [kind, keys.tolist(), *rest]


def numpy_state(values: list) -> tuple:
    kind, keys, *rest = values
    return (kind, np.array(keys, dtype=np.uint32), *rest)


def random_streams(generator: torch.Generator, transform) -> tuple[dict, dict]:
    """(tensors, JSON) of the torch, numpy, python, loader and augmentation random states."""
    tensors = {"rng.torch": torch.get_rng_state(), "rng.loader": generator.get_state()}
    version, internal, gauss = random.getstate()
    values = {"numpy": numpy_state_json(np.random.get_state()), "python": [version, list(internal), gauss]}
    if hasattr(transform, "R"):
        values["policy"] = numpy_state_json(transform.R.get_state())
    return tensors, values


def restore_random_streams(tensors: dict, values: dict, generator: torch.Generator, transform) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.loader"])
    np.random.set_state(numpy_state(values["numpy"]))
    version, internal, gauss = values["python"]
    random.setstate((version, tuple(internal), gauss))
    if "policy" in values and hasattr(transform, "R"):
        transform.R.set_state(numpy_state(values["policy"]))


def flatten_optimizer(state: dict) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict, values: dict) -> dict:
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in values["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": values["param_groups"]}


def save_checkpoint(path: Path, state: FitState, generator: torch.Generator, transform) -> None:
    """Write the checkpoint to a temporary file and rename it into place: a kill leaves the
    previous checkpoint or the new one, never half of one."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v for k, v in state.model.items()}
    tensors.update({f"best.{k}": v for k, v in state.best_model.items()})
    tensors.update({f"loss.{k}": v for k, v in (state.loss or {}).items()})
    tensors.update({f"ema.{k}": v for k, v in (state.ema or {}).items()})
    optimizer_tensors, optimizer_values = flatten_optimizer(state.optimizer) if state.optimizer else ({}, None)
    tensors.update(optimizer_tensors)
    rng_tensors, rng_values = random_streams(generator, transform)
    tensors.update(rng_tensors)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {k: v for k, v in asdict(state).items() if k not in ("model", "best_model", "optimizer", "loss", "ema")}
    meta.update({"optimizer": optimizer_values, "rng": rng_values})
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata={"medcls": json.dumps(meta, default=float)})
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def load_checkpoint(path: Path, generator: torch.Generator, transform) -> FitState:
    from safetensors import safe_open

    if not path.is_file():
        raise ConfigError(f"run folder '{path.parent}' has no {CHECKPOINT}: it finished, or never completed an epoch; "
                          "start it again without --resume")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads(handle.metadata()["medcls"])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:
        raise ConfigError(f"checkpoint '{path}' cannot be read ({exc}): start the run again without --resume") from None
    restore_random_streams(tensors, meta.pop("rng"), generator, transform)
    optimizer = meta.pop("optimizer")
    state = FitState(**meta)
    state.model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    state.best_model = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")}
    state.loss = {k[len("loss."):]: v for k, v in tensors.items() if k.startswith("loss.")} or None
    state.ema = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")} or None
    state.optimizer = unflatten_optimizer(tensors, optimizer) if optimizer else None
    return state
