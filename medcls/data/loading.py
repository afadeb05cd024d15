"""From `--data SOURCE` to labelled cases: pick the layout, load, attach patient ids, check classes."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np

from medcls.data.cases import Case, DataOptions, ReaderTable
from medcls.errors import ConfigError, DataError, PluginError

logger = logging.getLogger("medcls")


def detect_format(source: str, datasets) -> str:
    for entry in datasets:
        detect = entry.metadata.get("detect")
        if detect is not None and detect(source):
            return entry.name
    if not Path(source).exists():
        raise DataError(f"data path '{source}' does not exist: give a folder, a CSV manifest, an .npz or 'synthetic'")
    raise DataError(
        f"no dataset format recognises '{source}': give a folder, a .csv manifest or an .npz, "
        "or name the format with --format (see `medcls list datasets`)"
    )


def spatial_dims(config, registries) -> int:
    """2 for image backbones, 3 for volume backbones (registered with spatial_dims=3) and for 2D
    backbones reading volumes slice by slice (2.5D, `slices`) or through ACS convolutions (`acs`)."""
    return 3 if config.slices or config.acs else int(registries["backbones"].get(config.backbone).metadata.get("spatial_dims", 2))


AUTO_SMALLEST, AUTO_LARGEST = 64, 224  # image_size='auto', pixels
AUTO_GRID_SMALLEST, AUTO_GRID_LARGEST = 16, 64  # volume_size='auto', voxels per axis


def auto_image_size(cases: list[Case], sample: int = 256) -> int:
    """`image_size='auto'`: the source images' median shorter side, never upsampled beyond the
    least a pretrained CNN needs (64 px: 2 x 2 features after its 32x downsampling) and never above
    224 px, rounded to a multiple of 16. The default: on RetinaMNIST (28 px) the current recipe
    tested at 0.767 at 64 px in about 105 s and 0.768 at 224 px in 663-773 s (means of two seeds,
    each run inside the others' intervals), and 224 px ran past the set's 10-minute budget
    (examples/README.md)."""
    sides = [side for case in sampled(cases, sample) if (side := source_side(case))]
    if not sides:
        return AUTO_LARGEST
    side = float(np.median(sides))
    return int(min(AUTO_LARGEST, max(AUTO_SMALLEST, int(side / 16 + 0.5) * 16)))


def sampled(cases: list[Case], count: int) -> list[Case]:
    """At most `count` cases spread evenly over the list: enough headers to take a median from."""
    return cases[:: max(1, len(cases) // count)][:count]


def sizes_from_sources(config, registries):
    """`image_size` and `volume_size` 'auto' turned into numbers from the source images' own sizes
    (array shapes and file headers), before any image is decoded. Only the size the backbone
    reads is looked up; the other keeps its old default without reading anything."""
    volumes = spatial_dims(config, registries) == 3
    if volumes and config.image_size == "auto":  # volumes are brought to the grid
        config = dataclasses.replace(config, image_size=AUTO_LARGEST)
    if config.volume_size == "auto" and (not volumes or config.volume_spacing is not None):
        config = dataclasses.replace(config, volume_size=str(AUTO_GRID_LARGEST))  # no grid, or one cut at a spacing
    if "auto" not in (config.image_size, config.volume_size):
        return config
    cases, _, _ = load_cases(dataclasses.replace(  # sizes need no patient ids from every DICOM header
        config, image_size=AUTO_LARGEST if config.image_size == "auto" else config.image_size,
        volume_size=str(AUTO_GRID_LARGEST) if config.volume_size == "auto" else config.volume_size,
        patient_from_dicom=False), registries)
    if config.image_size == "auto":
        config = dataclasses.replace(config, image_size=auto_image_size(cases))
        logger.info(f"image_size auto: {config.image_size} px from the source images")
    else:
        size = auto_volume_size(cases, reads_in_2d=bool(config.slices or config.acs))
        config = dataclasses.replace(config, volume_size=size)
        logger.info(f"volume_size auto: {size} voxels (z,y,x) from the source volumes")
    return config


def source_side(case: Case) -> int | None:
    """The shorter side of a case's image from its array or its file header (no pixels decoded)."""
    if case.array is not None:
        shape = np.shape(getattr(case.array, "voxels", case.array))
        return int(min(shape[-2:])) if len(shape) >= 2 else None
    try:
        from PIL import Image

        with Image.open(case.path) as image:
            return int(min(image.size))
    except Exception:  # not a PIL format: a DICOM header says it
        pass
    try:
        import pydicom

        header = pydicom.dcmread(case.path, stop_before_pixels=True)
        return int(min(header.Rows, header.Columns))
    except Exception:  # unreadable here: decoding reports it
        return None


def auto_volume_size(cases: list[Case], *, reads_in_2d: bool, sample: int = 256) -> str:
    """`volume_size='auto'`: per axis the source volumes' median voxel count, never upsampled
    (a grid larger than the source adds voxels, not information: VesselMNIST3D's 28^3 volumes at
    64^3 train 12x the voxels) and never above 64, rounded to a multiple of 4 and at least 16. A 2D
    backbone reading volumes (2.5D, ACS) keeps 64 x 64 in-plane, the least its ImageNet features
    need (at 28 x 28 they are 99.7 % zero after its 32x downsampling). Returns 'z,y,x', or '64'
    when no source grid can be read from the arrays or file headers."""
    grids = [grid for case in sampled(cases, sample) if (grid := source_grid(case)) is not None]
    if not grids:
        return str(AUTO_GRID_LARGEST)
    sides = [int(min(AUTO_GRID_LARGEST, max(AUTO_GRID_SMALLEST, int(side / 4 + 0.5) * 4)))
             for side in np.median(np.asarray(grids, float), axis=0)]
    if reads_in_2d:
        sides[1:] = [AUTO_GRID_LARGEST, AUTO_GRID_LARGEST]
    return str(sides[0]) if len(set(sides)) == 1 else ",".join(map(str, sides))


def source_grid(case: Case) -> tuple[int, int, int] | None:
    """A volume's voxels (z, y, x) as medcls orients it (RAS), from its array or its file's header
    (no voxels read); a DICOM series as its slice count x Rows x Columns."""
    voxels = getattr(case.array, "voxels", None)
    if voxels is not None:
        shape = np.shape(voxels)
        return tuple(int(n) for n in shape[-3:]) if len(shape) >= 3 else None
    if case.path is None:
        return None
    try:
        if case.path.is_dir():
            import pydicom

            files = [f for f in case.path.iterdir() if f.is_file()]
            header = pydicom.dcmread(files[0], stop_before_pixels=True)
            return len(files), int(header.Rows), int(header.Columns)
        import nibabel as nib

        image = nib.load(str(case.path))
        ras = [0, 0, 0]
        for axis, (target, _) in enumerate(nib.orientations.io_orientation(image.affine)):
            ras[int(target)] = int(image.shape[axis])
        return ras[2], ras[1], ras[0]
    except Exception:  # unreadable here: decoding reports it
        return None


def backbone_interpolation(backbone: str) -> str:
    """How images are resized for `backbone`: the interpolation its pretrained weights were trained
    with (timm's `pretrained_cfg`, e.g. bicubic for EfficientNet and ResNet), else bilinear."""
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(backbone) if timm.is_model(backbone) else None
    except Exception:  # not a timm name (a plugin's, hf-hub:): bilinear
        cfg = None
    return cfg.interpolation if cfg is not None and cfg.interpolation in ("bilinear", "bicubic") else "bilinear"


def training_grid(config, registries):
    """What every case is brought to: `image_size` pixels square, or a volume grid."""
    if spatial_dims(config, registries) == 2:
        return config.image_size
    from medcls.data.volumes import make_grid

    return make_grid(config.volume_size, config.volume_spacing, config.window)


def data_options(config, readers=None) -> DataOptions:
    """How a layout reads `config.data`: the run configuration's data keys."""
    return DataOptions(
        path_column=config.path_column, label_column=config.label_column,
        label_columns=tuple(n.strip() for n in (config.label_columns or "").split(",") if n.strip()),
        multi_label=config.multi_label,
        patient_column=config.patient_column, split_column=config.split_column,
        image_root=config.image_root, patient_from_dicom=config.patient_from_dicom, readers=readers,
    )


def load_cases(config, registries) -> tuple[list[Case], str, ReaderTable]:
    """The cases of `config.data` with their layout's name, and the reader table used for files."""
    dims = spatial_dims(config, registries)
    if config.crop_foreground and dims == 3:
        raise ConfigError(f"crop_foreground cuts 2D images; backbone '{config.backbone}' reads volumes, which "
                          "volume_spacing crops: drop crop_foreground")
    # The size is a decoding hint (a JPEG decoded at a fraction of its size); unresolved 'auto'
    # hints the largest size the rule can choose.
    size = AUTO_LARGEST if config.image_size == "auto" else config.image_size
    readers = ReaderTable(registries["readers"], {"window": config.window, "size": size,
                                                  "interpolation": backbone_interpolation(config.backbone),
                                                  "crop_foreground": config.crop_foreground}, dims=dims)
    source = str(config.data)
    name = detect_format(source, registries["datasets"]) if config.format == "auto" else config.format
    options = data_options(config, readers)
    entry = registries["datasets"].get(name)
    cases = entry.obj(source, options)
    check_layout_output(cases, entry)
    if not cases:
        raise DataError(f"data source '{source}' holds no images")
    if config.patient_pattern is not None:
        patients_from_paths(cases, config.patient_pattern, source)
    if config.patient_from_dicom:
        for case in cases:
            if case.path is not None and case.path.exists():
                case.patient_id = readers.patient_id(case.path) or case.patient_id
        if all(case.patient_id is None for case in cases):
            raise DataError(f"data source '{source}': no file has a DICOM PatientID; drop --patient-from-dicom")
    return cases, name, readers


def patients_from_paths(cases: list[Case], pattern: str, source: str) -> None:
    """Each case's patient id from its path (relative to the data's folder, '/'-separated): the
    pattern's first group, else its whole match. A file the pattern does not match is an error:
    a guess would let two views of one patient land on both sides of the split."""
    found = re.compile(pattern)
    root = Path(source) if Path(source).is_dir() else Path(source).parent
    if not any(case.path is not None for case in cases):
        raise ConfigError(f"patient_pattern reads patient ids from file paths; data '{source}' has no files (arrays): "
                          "give patients with the data (a patient column, or patients= for arrays)")
    for case in cases:
        if case.path is None:
            continue
        try:
            shown = case.path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:  # a manifest path outside the data's folder: the path as written
            shown = case.path.as_posix()
        match = found.search(shown)
        if match is None:
            raise DataError(f"file '{shown}' does not match patient_pattern {pattern!r}: fix the pattern (it is "
                            "searched in the path relative to the data) so that every image names its patient")
        case.patient_id = match.group(1) if found.groups else match.group(0)


def check_layout_output(cases, entry) -> None:
    """A layout's side of the contract (a list of Case, each with a key and a label), checked as a
    reader's output is: a breach is the plugin's bug, one line naming it, never an AttributeError later."""
    problem = None
    if not isinstance(cases, (list, tuple)):
        problem = f"a {type(cases).__name__}, not a list of medcls.data.cases.Case"
    else:
        wrong = next((i for i, c in enumerate(cases) if not isinstance(c, Case)), None)
        if wrong is not None:
            problem = f"item {wrong} a {type(cases[wrong]).__name__}, not a medcls.data.cases.Case"
        else:
            bad = next((i for i, c in enumerate(cases) if not isinstance(c.key, str) or not c.key
                        or (c.label is None and c.findings is None)), None)
            if bad is not None:
                problem = f"case {bad} without a key or a label ({cases[bad].key!r}, {cases[bad].label!r})"
    if problem:
        raise PluginError(f"layout {entry.name!r} of plugin {entry.plugin!r} breaks the layout contract: it returned "
                          f"{problem} (see medcls.plugins.hookspecs.medcls_register_datasets)")


# Class names that mean "the finding is absent": the other class of a binary task is the positive one.
NEGATIVE_NAMES = {"normal", "no", "negative", "neg", "benign", "healthy", "control", "controls", "absent", "false",
                  "0", "none", "no finding", "nofinding", "clear", "without"}


def means_negative(name: str) -> bool:
    text = " ".join(name.strip().lower().replace("_", " ").replace("-", " ").split())
    return text in NEGATIVE_NAMES or text.startswith(("no ", "non ", "not ", "without "))


def sort_key(name: str):
    """Integer labels in numeric order (2 before 10), then the rest alphabetically."""
    stripped = name.strip()
    return (0, int(stripped), "") if stripped.lstrip("-").isdigit() else (1, 0, name)


def class_names(cases: list[Case], positive_class: str | None, source: str,
                flag: str = "--set positive_class=") -> list[str]:
    """The class names; for binary tasks the positive class is index 1. The positive class is never
    a guess: `positive_class` names it, or one of the two names means negative (normal, no,
    negative, benign, healthy, control, absent, false, 0, "no tumour", ...) and the other is
    positive; otherwise training stops and asks for `positive_class`."""
    names = sorted({case.label for case in cases}, key=sort_key)
    if len(names) < 2:
        raise DataError(
            f"data source '{source}' has only one class ({names[0]!r}): a classifier needs at least two"
        )
    if positive_class is not None:
        if positive_class not in names:
            raise DataError(f"positive_class {positive_class!r} is not a class of '{source}' ({', '.join(names)})")
        if len(names) != 2:
            raise DataError("positive_class applies to binary tasks only")
        return [n for n in names if n != positive_class] + [positive_class]
    if len(names) != 2:
        return names
    negative = [n for n in names if means_negative(n)]
    if len(negative) != 1:
        raise DataError(
            f"data source '{source}' has classes {names[0]!r} and {names[1]!r} and "
            f"{'both names say' if negative else 'neither name says'} which one is negative (normal, no, negative, benign, "
            f"healthy, control, absent, 0, ...): name the positive class, e.g. {flag}{names[1]}")
    return negative + [n for n in names if n != negative[0]]
