"""Volume reading against the raw library calls and MONAI's generic LoadImage, and cached epochs
against the first: realistic CT-sized volumes written here as .nii.gz, .nii and DICOM series.

    .venv/bin/python benchmarks/volume_reading.py [--volumes 6] [--shape 160,256,256] [--rounds 3]
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def raw_nifti(path):
    import nibabel as nib

    return np.array(nib.load(str(path)).dataobj)  # in memory (an uncompressed file is otherwise a memmap)


def raw_dicom_series(folder):
    import pydicom

    slices = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    slices.sort(key=lambda s: float(s.ImagePositionPatient[2]))
    return np.stack([s.pixel_array for s in slices])


def monai_load(path):
    from monai.transforms import LoadImage

    return LoadImage(image_only=True)(str(path))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--volumes", type=int, default=6)
    parser.add_argument("--shape", default="160,256,256")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))

    from medcls.data.cases import Case, ReaderTable
    from medcls.data.decoding import decode_all
    from medcls.data.synthetic import write_dicom_series, write_nifti
    from medcls.data.volumes import VolumeGrid, read_dicom_series, read_nifti_volume
    from medcls.plugins.manager import get_plugin_manager
    from medcls.plugins.registry import Registries

    rng = np.random.default_rng(0)
    results = {"settings": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = {"nii.gz": [], "nii": [], "dicom": []}
        for i in range(args.volumes):
            voxels = (rng.normal(40, 300, shape)).astype(np.int16)  # CT-like HU noise: compresses as real CT does
            for kind in ("nii.gz", "nii"):
                write_nifti(voxels, (1.25, 0.7, 0.7), tmp / f"v{i}.{kind}")
                files[kind].append(tmp / f"v{i}.{kind}")
            write_dicom_series(voxels, (1.25, 0.7, 0.7), tmp / f"s{i}", modality="CT")
            files["dicom"].append(tmp / f"s{i}")
        pairs = {"nii.gz": (raw_nifti, read_nifti_volume), "nii": (raw_nifti, read_nifti_volume),
                 "dicom": (raw_dicom_series, read_dicom_series)}
        for kind, (raw, ours) in pairs.items():
            ratios, monai_ratios, raw_s = [], [], []
            for path in files[kind]:
                for _ in range(args.rounds):  # interleaved, per file
                    r = timed(lambda: raw(path))
                    # the reader call as the pipeline makes it: voxels in RAS order, a view where the
                    # reorientation is a flip or transpose (to_grid then copies only the region it needs)
                    o = timed(lambda: ours(path))
                    m = timed(lambda: monai_load(path)) if kind != "dicom" else float("nan")
                    ratios.append(o / r)
                    monai_ratios.append(m / r)
                    raw_s.append(r)
            results[kind] = {"raw_seconds": statistics.median(raw_s), "medcls_vs_raw": statistics.median(ratios),
                             "monai_loadimage_vs_raw": statistics.median(monai_ratios)}
        registries = Registries(get_plugin_manager())
        readers = ReaderTable(registries["readers"], {}, dims=3)
        cases = [Case(key=str(p), label="a", path=p) for p in files["nii.gz"]]
        grid = VolumeGrid((64, 128, 128), spacing=(2.0, 1.4, 1.4))
        first = [timed(lambda: decode_all(cases, readers, grid, threads=2)) for _ in range(args.rounds)]
        cache = decode_all(cases, readers, grid, threads=2)
        rows = np.arange(len(cases))
        cached = [timed(lambda: [cache.batch(rows[i:i + 2]) for i in range(0, len(rows), 2)]) for _ in range(args.rounds)]
        results["epochs"] = {"first_seconds": statistics.median(first), "cached_seconds": statistics.median(cached),
                             "cached_vs_first_speedup": statistics.median(first) / statistics.median(cached)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
