"""Helpers the test modules share (no test module imports another; tests/test_layers.py holds it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

from medcls.cli import cli
from medcls.data.synthetic import synthetic_cases

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# CLI settings of a tiny, fast training run: FAST trains both stages, TINY one epoch at 32 px. Neither
# draws the report's figures (a third of a tiny run's time): FIGURES adds them back where a test needs them.
FAST = ["--backbone", "test_resnet", "--no-pretrained", "--epochs", "2", "--finetune-epochs", "1",
        "--image-size", "48", "--batch-size", "32", "--set", "patience=0", "--set", "bootstrap=200",
        "--set", "figures=false"]
TINY = ["--backbone", "test_resnet", "--no-pretrained", "--image-size", "32", "--epochs", "1", "--finetune-epochs",
        "0", "--set", "bootstrap=50", "--set", "figures=false"]
FIGURES = ["--set", "figures=true"]


def run(*args):
    """`medcls ARGS...` in-process."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, *fragments, code=None):
    """One line `error: ...` naming the problem, no traceback, and a documented exit status:
    3 configuration, 4 data, 5 file system (medcls.errors)."""
    assert result.exit_code in ((code,) if code else (3, 4, 5)), (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


def save_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


def write_ct(path: Path, stored: np.ndarray, slope=1.0, intercept=-1024.0, window=(40.0, 400.0),
             photometric="MONOCHROME2", patient="PAT-123"):
    """A CT DICOM file of `stored` values with the given rescale and (multi-valued) window."""
    from pydicom.uid import CTImageStorage

    from medcls.data.synthetic import new_dicom

    ds = new_dicom(CTImageStorage)
    ds.PatientID, ds.Modality = patient, "CT"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = [window[0], 500.0], [window[1], 1500.0]  # multi-valued, as in the wild
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


class Tiny(torch.nn.Module):
    """A two-layer model with the Classifier's block interface, for the fitting loop's tests."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.backbone(x)))

    def blocks(self):
        return [self.backbone]

    def set_trainable(self, top_blocks):
        self.requires_grad_(True)


def plain_sgd(**changes) -> dict:
    """fit()'s optimisation settings for plain SGD without schedule, EMA or decay, with changes."""
    return {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0, "schedule": "none", "patience": 0,
            "ema": 0.0, "lr_decay": 1.0, "warmup_epochs": 0, **changes}


def phantoms(n=120, size=48):
    cases = synthetic_cases(n, size)
    images = np.stack([(c.array[0] * 255).round().astype(np.uint8) for c in cases])
    return images, np.array([c.label for c in cases]), np.array([c.patient_id for c in cases])


SMALL = dict(backbone="test_efficientnet", pretrained=False, image_size=48, epochs=6, finetune_epochs=0, lr=3e-3,
             batch_size=16, bootstrap=100, figures=False)
