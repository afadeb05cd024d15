"""The built-in synthetic tumour-detection set: MR-like 2D brain phantoms, with and without a lesion.

Deterministic (the same seed gives the same images), made on the fly, so every command and test
runs offline with no data. Each synthetic patient contributes two adjacent slices with the same
label, so patient-grouped splitting is exercised too.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from medcls.data.cases import Case, DataOptions

CLASSES = ("normal", "tumour")
SLICES_PER_PATIENT = 2


def smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal((size, size)), sigma=sigma, mode="wrap")
    return field / (field.std() + 1e-8)


def phantom(rng: np.random.Generator, size: int, lesion: bool, slice_shift: float) -> np.ndarray:
    """One axial slice: scalp, skull, brain with grey/white texture, ventricles and small bright
    foci (vessels, choroid plexus) in every head; with `lesion`, a tumour of varying size and
    conspicuity inside an oedema halo that pushes the nearer ventricle aside (mass effect). A
    bright spot alone does not give the class away: size, shape, halo and mass effect do."""
    return phantom_and_lesion(rng, size, lesion, slice_shift)[0]


def phantom_and_lesion(rng: np.random.Generator, size: int, lesion: bool, slice_shift: float, *,
                       calcification: bool = False, midline_shift: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """`phantom` and the tumour core's pixel mask (None without a lesion): where an explanation
    should point (benchmarks/pointing_game.py). The multi-label set adds two findings independent
    of the lesion: `calcification`, a cluster of small dark (T2-hypointense) foci, and
    `midline_shift`, both ventricles displaced to one side."""
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
    lesion_at, core = None, None
    if lesion:
        angle, radius = rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.55)
        lesion_at = (cx + radius * a * np.cos(angle), cy + radius * b * np.sin(angle), rng.uniform(0.08, 0.17))
    shift = rng.choice((-1, 1)) * rng.uniform(0.16, 0.24) if midline_shift else 0.0
    for side in (-1, 1):  # lateral ventricles, a little different on each slice
        vx, vy = cx + side * 0.12 + shift, cy - 0.05 + slice_shift
        if lesion_at is not None and np.sign(lesion_at[0] - cx) == side:
            vx -= side * 0.5 * lesion_at[2]  # mass effect: the ventricle on the lesion's side is pushed across
        ventricle = ((x - vx) / 0.07) ** 2 + ((y - vy) / (0.22 - abs(slice_shift))) ** 2 < 1
        image[ventricle] = 0.9  # CSF is bright on T2
    for _ in range(rng.integers(1, 4)):  # small bright foci in every head: not lesions
        fx, fy = cx + rng.uniform(-0.5, 0.5) * a, cy + rng.uniform(-0.5, 0.5) * b
        image[(((x - fx) ** 2 + (y - fy) ** 2) < rng.uniform(0.015, 0.03) ** 2) & brain] = rng.uniform(0.7, 0.85)
    if lesion_at is not None:
        lx, ly, size_l = lesion_at
        d = np.sqrt((x - lx) ** 2 + (y - ly) ** 2) / size_l + 0.25 * smooth_noise(rng, size, sigma=size / 32)
        image[(d < 1.6) & brain] += rng.uniform(0.06, 0.12)  # oedema halo
        core = (d < 1.0) & brain
        image[core] = rng.uniform(0.68, 0.8) + 0.05 * texture[core]  # enhancing tumour, of varying conspicuity
    if calcification:
        angle, radius = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.6)
        gx, gy = cx + radius * a * np.cos(angle), cy + radius * b * np.sin(angle)
        for _ in range(rng.integers(3, 6)):
            fx, fy = gx + rng.uniform(-0.06, 0.06), gy + rng.uniform(-0.06, 0.06)
            image[(((x - fx) ** 2 + (y - fy) ** 2) < rng.uniform(0.02, 0.03) ** 2) & brain] = 0.15
    image += 0.03 * rng.standard_normal((size, size))  # thermal noise
    return np.clip(image, 0, 1).astype(np.float32), core


def lesion_mask(key: str, size: int, seed: int = 0) -> np.ndarray | None:
    """The tumour core of the synthetic case named `key` (synthetic#patientNNNN/sliceK)."""
    patient = int(key.split("patient")[1].split("/")[0])
    slice_index = int(key.rsplit("slice", 1)[1])
    rng = np.random.default_rng([seed, patient])
    return phantom_and_lesion(rng, size, patient % 2 == 1, slice_shift=0.02 * slice_index)[1]


def synthetic_cases(n_cases: int, size: int, seed: int = 0) -> list[Case]:
    """`n_cases` phantoms (rounded up to whole patients), half with a lesion, patient-tagged. The
    images are made once per process; each call gets its own copies."""
    return [dataclasses.replace(case, array=case.array.copy()) for case in made_cases(n_cases, size, seed)]


@functools.lru_cache(maxsize=8)
def made_cases(n_cases: int, size: int, seed: int) -> tuple[Case, ...]:
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
    return tuple(cases)


FINDINGS = {"lesion": 0.4, "calcification": 0.3, "midline_shift": 0.25}  # each finding's prevalence


def synthetic_multilabel_cases(n_cases: int, size: int, seed: int = 0) -> list[Case]:
    """`n_cases` phantoms (two slices per patient) with three independent findings, each present
    with its prevalence in FINDINGS: the built-in multi-label set (`--data synthetic-multilabel`)."""
    n_patients = max(2, -(-n_cases // SLICES_PER_PATIENT))
    cases = []
    for patient in range(n_patients):
        draws = np.random.default_rng([seed, patient, 7]).uniform(size=len(FINDINGS))
        present = {name: bool(u < p) for (name, p), u in zip(FINDINGS.items(), draws)}
        for slice_index in range(SLICES_PER_PATIENT):
            rng = np.random.default_rng([seed, patient, 11])
            image = phantom_and_lesion(rng, size, present["lesion"], 0.02 * slice_index,
                                       calcification=present["calcification"],
                                       midline_shift=present["midline_shift"])[0]
            found = {name: float(flag) for name, flag in present.items()}
            cases.append(Case(key=f"synthetic-multilabel#patient{patient:04d}/slice{slice_index}",
                              label="|".join(n for n, flag in present.items() if flag) or "none",
                              patient_id=f"synthetic-multilabel-{patient:04d}", array=image[None], findings=found))
    return cases


def is_synthetic_multilabel(source: str) -> bool:
    return source == "synthetic-multilabel"


def load_synthetic_multilabel(source: str, options: DataOptions) -> list[Case]:
    return synthetic_multilabel_cases(options.synthetic_cases, options.synthetic_size)


def is_synthetic(source: str) -> bool:
    return source == "synthetic"


def load_synthetic(source: str, options: DataOptions) -> list[Case]:
    return synthetic_cases(options.synthetic_cases, options.synthetic_size)


# --- 3D: whole synthetic head volumes, for 3D backbones, tests and the volume demo ---

SYNTHETIC_VOLUMES = 120  # volumes in the built-in 3D set
VOLUME_SPACING = (3.0, 2.0, 2.0)  # mm along (z, y, x): thicker slices than pixels, as in many MR series


def phantom_volume(rng: np.random.Generator, size: int, lesion: bool) -> np.ndarray:
    """A (size/2, size, size) head, z-y-x in RAS order: scalp, skull, brain, ventricles, optional
    lesion; intensities as int16 MR-like signal (0-1000)."""
    depth = max(8, size // 2)
    z, y, x = np.mgrid[-1:1:depth * 1j, -1:1:size * 1j, -1:1:size * 1j]
    a, b, c = rng.uniform(0.68, 0.78), rng.uniform(0.80, 0.90), rng.uniform(0.80, 0.92)
    r = np.sqrt((x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2)
    volume = np.zeros(z.shape)
    volume[r < 1.08] = 0.35
    volume[r < 1.0] = 0.08
    brain = r < 0.93
    volume[brain] = 0.55
    for side in (-1, 1):
        volume[((x - side * 0.12) / 0.07) ** 2 + ((y + 0.05) / 0.22) ** 2 + (z / 0.3) ** 2 < 1] = 0.9
    if lesion:
        centre = rng.uniform(-0.4, 0.4, 3) * np.array([a, b, c])
        radius = rng.uniform(0.12, 0.2)
        d = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + ((z - centre[2]) * 1.0) ** 2) / radius
        volume[(d < 1.6) & brain] += 0.12
        volume[(d < 1.0) & brain] = 0.8
    volume += 0.03 * rng.standard_normal(volume.shape)
    return (np.clip(volume, 0, 1) * 1000).astype(np.int16)


def synthetic_volume_cases(n_cases: int, size: int, seed: int = 0) -> list[Case]:
    """`n_cases` head volumes, half with a lesion, one per patient."""
    from medcls.data.volumes import Volume

    cases = []
    for patient in range(max(2, n_cases)):
        has_lesion = patient % 2 == 1
        voxels = phantom_volume(np.random.default_rng([seed, patient, 3]), size, has_lesion)
        cases.append(Case(key=f"synthetic3d#patient{patient:04d}", label=CLASSES[has_lesion],
                          patient_id=f"synthetic3d-{patient:04d}",
                          array=Volume(voxels, VOLUME_SPACING, modality="MR", source=f"synthetic3d#{patient}")))
    return cases


def is_synthetic_volumes(source: str) -> bool:
    return source == "synthetic3d"


def load_synthetic_volumes(source: str, options: DataOptions) -> list[Case]:
    return synthetic_volume_cases(SYNTHETIC_VOLUMES, max(16, options.synthetic_size // 3))


def write_synthetic_volumes(root, n_cases: int = 24, size: int = 32, fmt: str = "nifti", seed: int = 0):
    """Write the synthetic volumes as a folder per class: `.nii.gz` files, or DICOM series (one
    folder of shuffled, randomly named slice files per volume). Returns the root folder."""
    from pathlib import Path

    root = Path(root)
    for case in synthetic_volume_cases(n_cases, size, seed):
        name = case.key.split("#")[1]
        target = root / case.label / name
        if fmt == "nifti":
            write_nifti(case.array.voxels, case.array.spacing, target.with_suffix(".nii.gz"))
        elif fmt == "dicom":
            write_dicom_series(case.array.voxels, case.array.spacing, target, patient_id=case.patient_id,
                               seed=seed)
        else:
            raise ValueError(f"fmt must be 'nifti' or 'dicom', not {fmt!r}")
    return root


def write_nifti(voxels_zyx: np.ndarray, spacing_zyx, path) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([spacing_zyx[2], spacing_zyx[1], spacing_zyx[0], 1.0])  # RAS, x fastest
    nib.save(nib.Nifti1Image(np.ascontiguousarray(voxels_zyx.transpose(2, 1, 0)), affine), str(path))


def new_dicom(sop_class):
    """An empty DICOM Part 10 dataset of `sop_class` with its file meta (explicit VR little endian)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    return ds


def write_dicom_series(voxels_zyx: np.ndarray, spacing_zyx, folder, patient_id: str = "synthetic",
                       seed: int = 0, skip: tuple = (), modality: str = "MR", rescale=(1.0, 0.0)) -> None:
    """One axial DICOM file per z slice, in a shuffled order with random names (as archives hand
    them out). Patient LPS axes: columns run to the patient's left, rows to posterior."""
    from pydicom.uid import MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study = generate_uid(), generate_uid()
    order = np.random.default_rng(seed).permutation(voxels_zyx.shape[0])
    for k in order:
        if k in skip:
            continue
        ds = new_dicom(MRImageStorage)
        ds.SeriesInstanceUID, ds.StudyInstanceUID = series, study
        ds.PatientID, ds.Modality = patient_id, modality
        ds.InstanceNumber = int(k) + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, float(k) * spacing_zyx[0]]
        ds.PixelSpacing = [spacing_zyx[1], spacing_zyx[2]]
        ds.SliceThickness = spacing_zyx[0]
        # RAS (y, x) -> LPS rows (posterior), columns (left); stored = (value - intercept) / slope.
        pixels = np.round((voxels_zyx[k, ::-1, ::-1] - rescale[1]) / rescale[0])
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.PixelData = np.ascontiguousarray(pixels, dtype=np.int16).tobytes()
        ds.save_as(folder / f"{generate_uid()[-12:]}.dcm", enforce_file_format=True)
