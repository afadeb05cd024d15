"""The built-in synthetic tumour-detection set: MR-like 2D brain phantoms, with and without a lesion.

Deterministic (the same seed gives the same images), made on the fly, so every command and test
runs offline with no data. Each synthetic patient contributes two adjacent slices with the same
label, so patient-grouped splitting is exercised too.
"""

from __future__ import annotations

import numpy as np

from medcls.data.cases import Case, DataOptions

CLASSES = ("normal", "tumour")
SLICES_PER_PATIENT = 2


def smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal((size, size)), sigma=sigma, mode="wrap")
    return field / (field.std() + 1e-8)


def phantom(rng: np.random.Generator, size: int, lesion: bool, slice_shift: float) -> np.ndarray:
    """One axial slice: scalp, skull, brain with grey/white texture, ventricles, optional lesion."""
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    a, b = rng.uniform(0.68, 0.78), rng.uniform(0.80, 0.90)
    cx, cy = rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04)
    r = np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2)
    image = np.zeros((size, size))
    image[r < 1.08] = 0.35  # scalp
    image[r < 1.0] = 0.08  # skull: dark on T2-like MR
    brain = r < 0.93
    texture = smooth_noise(rng, size, sigma=size / 24)
    image[brain] = 0.55 + 0.06 * texture[brain]
    white = (r < 0.7) & (texture > -0.2)
    image[white] = 0.45 + 0.03 * texture[white]
    for side in (-1, 1):  # lateral ventricles, a little different on each slice
        vx, vy = cx + side * 0.12, cy - 0.05 + slice_shift
        ventricle = ((x - vx) / 0.07) ** 2 + ((y - vy) / (0.22 - abs(slice_shift))) ** 2 < 1
        image[ventricle] = 0.9  # CSF is bright on T2
    if lesion:
        angle, radius = rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.55)
        lx, ly = cx + radius * a * np.cos(angle), cy + radius * b * np.sin(angle)
        size_l = rng.uniform(0.09, 0.17)
        d = np.sqrt((x - lx) ** 2 + (y - ly) ** 2) / size_l + 0.25 * smooth_noise(rng, size, sigma=size / 32)
        image[(d < 1.6) & brain] += 0.12  # oedema halo
        image[(d < 1.0) & brain] = 0.78 + 0.05 * texture[(d < 1.0) & brain]  # enhancing tumour
    image += 0.03 * rng.standard_normal((size, size))  # thermal noise
    return np.clip(image, 0, 1).astype(np.float32)


def synthetic_cases(n_cases: int, size: int, seed: int = 0) -> list[Case]:
    """`n_cases` phantoms (rounded up to whole patients), half with a lesion, patient-tagged."""
    n_patients = max(2, -(-n_cases // SLICES_PER_PATIENT))
    cases = []
    for patient in range(n_patients):
        has_lesion = patient % 2 == 1
        for slice_index in range(SLICES_PER_PATIENT):
            # Same seed for both slices of a patient: same anatomy and lesion, shifted slightly.
            rng = np.random.default_rng([seed, patient])
            image = phantom(rng, size, has_lesion, slice_shift=0.02 * slice_index)
            cases.append(
                Case(
                    key=f"synthetic#patient{patient:04d}/slice{slice_index}",
                    label=CLASSES[has_lesion],
                    patient_id=f"synthetic-{patient:04d}",
                    array=image[None],
                )
            )
    return cases


def is_synthetic(source: str) -> bool:
    return source == "synthetic"


def load_synthetic(source: str, options: DataOptions) -> list[Case]:
    return synthetic_cases(options.synthetic_cases, options.synthetic_size)
