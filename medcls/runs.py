"""A run folder: the trained model (safetensors + JSON), and loading it back for evaluate and predict."""

from __future__ import annotations

import json
from pathlib import Path

from medcls.errors import DataError

MODEL_FILE, MODEL_INFO = "model.safetensors", "model.json"


def save_model(model, info: dict, out: Path) -> None:
    from safetensors.torch import save_model as save_safetensors

    save_safetensors(model, str(out / MODEL_FILE), metadata={"format": "medcls", "backbone": info["backbone"]})
    (out / MODEL_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")


def load_model(run: str | Path, registries, device="cpu"):
    """The classifier of a finished run (weights never unpickled) and its model.json."""
    from safetensors.torch import load_model as load_safetensors

    from medcls.models import build_classifier

    run = Path(run)
    if not (run / MODEL_FILE).is_file() or not (run / MODEL_INFO).is_file():
        raise DataError(f"run folder '{run}' has no {MODEL_FILE} and {MODEL_INFO}: give the --out folder of `medcls train`")
    info = json.loads((run / MODEL_INFO).read_text(encoding="utf-8"))
    model, _ = build_classifier(registries, info["backbone"], len(info["classes"]), info["in_chans"],
                                info["dropout"], pretrained=False)
    load_safetensors(model, str(run / MODEL_FILE), device=str(device))
    return model.to(device).eval(), info
