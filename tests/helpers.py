"""Helpers the test modules share (no test module imports another)."""

import numpy as np

from medcls.data.synthetic import synthetic_cases


def phantoms(n=120, size=48):
    cases = synthetic_cases(n, size)
    images = np.stack([(c.array[0] * 255).round().astype(np.uint8) for c in cases])
    return images, np.array([c.label for c in cases]), np.array([c.patient_id for c in cases])


SMALL = dict(backbone="test_efficientnet", pretrained=False, image_size=48, epochs=6, finetune_epochs=0, lr=3e-3,
             batch_size=16, bootstrap=100)
