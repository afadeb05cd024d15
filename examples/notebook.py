"""medcls from Python, as in a notebook: train on numpy arrays, read the figures, predict, reload.

    .venv/bin/python examples/notebook.py            # about 15 s on two CPU cores
    .venv/bin/python examples/notebook.py --out runs/notebook   # keep the run folder

The images are the built-in synthetic brain phantoms handed over as a plain uint8 array, the way a
researcher's own arrays (a MedMNIST file, slices exported from PACS) would be. CI runs this script.
"""

import argparse
import logging

import numpy as np

import medcls
from medcls.data.synthetic import synthetic_cases

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", help="keep the run in this folder (default: a temporary one)")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(message)s")  # medcls logs; it never prints

# 1. Arrays: (N, H, W) uint8 images, labels, and a patient id per image (two slices per patient).
cases = synthetic_cases(240, 64)
images = np.stack([(case.array[0] * 255).round().astype(np.uint8) for case in cases])
labels = np.array([case.label for case in cases])
patients = np.array([case.patient_id for case in cases])
print(f"images {images.shape} {images.dtype}, classes {sorted(set(labels.tolist()))}, {len(set(patients))} patients")

# 2. Train: every config key is a keyword, checked exactly as the CLI checks it.
run = medcls.train(images=images, labels=labels, patients=patients, backbone="test_efficientnet",
                   pretrained=False, image_size=64, epochs=8, finetune_epochs=0, lr=3e-3, batch_size=16,
                   bootstrap=500, out=args.out)
print(run)
print("test ROC AUC", run.metrics.test.roc_auc, "| sensitivity", run.metrics.test.sensitivity,
      "| specificity", run.metrics.test.specificity)
print(f"operating point {run.threshold:.3f} (chosen on validation), positive class {run.positive_class!r}")

# 3. Predict: calibrated probabilities (columns in run.classes order) and decisions.
probabilities = run.predict(images[:6])
print("probabilities of", run.positive_class, np.round(probabilities[:, 1], 3))
print("decisions", list(run.decide(images[:6])), "truth", labels[:6].tolist())

# 4. Reload the run folder: the same model gives the same probabilities.
again = medcls.load_run(run.path)
assert np.array_equal(again.predict(images[:6]), probabilities), "reloaded run predicts differently"
print(f"reloaded {again.path}: identical probabilities")
assert run.metrics.test.roc_auc.value >= 0.8, "training did not learn"
