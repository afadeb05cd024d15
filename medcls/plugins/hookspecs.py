"""The hooks a medcls plugin can implement: this module is the plugin author's manual.

Every hook is a *registration* hook with one argument, ``register``, a callback::

    register(name, obj, *, description="", **metadata)

Call it once per thing you provide. Names are global per kind: if two plugins register the same
backbone (or policy, metric, ...) name, medcls refuses to start and names both plugins, because
in a clinical tool ``auroc`` must mean exactly one function.

A minimal plugin module::

    import medcls

    @medcls.hookimpl
    def medcls_register_metrics(register):
        register("youden_index", youden, description="Sensitivity + specificity - 1",
                 needs_threshold=True)

and in its ``pyproject.toml``::

    [project.entry-points.medcls]
    my_plugin = "my_plugin"

The metadata keys each kind accepts, and their types, are fixed (``medcls.plugins.registry.METADATA``,
shown by ``medcls list KIND -v``): a misspelled key (``higher_is_beter=False``) disables the plugin
with one line naming the plugin and the valid keys, as does a hook that raises.

Pluggy's trap: a hookimpl argument with a default value is never passed. Write
``def medcls_register_metrics(register):``, never ``register=None``.
Heavy imports (torch, timm, MONAI) belong inside the hook body or inside ``obj``, not at the top
of the plugin module, so that ``medcls --help`` and ``medcls plugins`` stay fast.
"""

import pluggy

hookspec = pluggy.HookspecMarker("medcls")
# What plugins decorate their hooks with; `medcls.hookimpl` is the same object.
hookimpl = pluggy.HookimplMarker("medcls")


@hookspec
def medcls_register_backbones(register):
    """Register image backbones: feature extractors that medcls puts a new head on.

    ``register(name, create, description="...")`` where ``create(in_chans: int)`` returns a
    ``torch.nn.Module`` that

    - maps a float32 batch ``(B, in_chans, H, W)`` (values already normalised) to features
      ``(B, F)``; a volume backbone, registered with ``spatial_dims=3``, maps
      ``(B, in_chans, D, H, W)`` and sets ``spatial_dims = 3`` on the module too;
    - has an ``int`` attribute ``num_features`` equal to ``F``;
    - optionally carries its normalisation for ``[0, 1]`` images: timm's ``pretrained_cfg``
      (``mean``/``std``), or ``mean`` and ``std`` tuples per input channel (default ImageNet's).

    Its blocks (parameter groups from input to output; fine-tuning unfreezes the last ones) come
    from the registration metadata ``blocks=fn(module) -> list[nn.Module]``, a function of the
    module so that a copy of a model (``copy.deepcopy``, an EMA model) groups its own
    parameters; a ``medcls_blocks()`` method on your own module class also works. Without either,
    medcls uses the module's top-level children in order. Never attach attributes or closures to
    someone else's module (a timm or MONAI network): register ``blocks=`` instead.

    ``create`` may accept keyword arguments: the config key ``backbone_args`` (CLI
    ``--backbone-arg drop_path_rate=0.1``) is passed to it, and recorded in model.json so the run
    loads with the same model. A plugin that serves a family of names it cannot list (timm's
    pretrained tags, ``hf-hub:`` ids) registers one entry with ``resolves=fn(name) -> bool`` and
    ``create(name, in_chans, **backbone_args)``, and optionally ``pretrained_names=fn(pattern)``
    for ``medcls list backbones --pretrained``.

    Register ``pretrained=False`` when no pretrained weights exist (then ``pretrained`` defaults
    to off for it and asking for it is an error unless a weights file is given). Register
    ``loads_weights=True`` when ``create(in_chans, weights=W)`` loads pretrained weights itself
    (``W`` a state dict or a local ``.safetensors`` path; timm's backbones pass them to
    ``timm.create_model(pretrained_cfg_overlay=...)``); otherwise medcls copies the state dict in.

    Register ``sized=True`` when ``create(in_chans, input_shape=(D, H, W) or (H, W), ...)`` fits
    its stem to the grid it will read (a MONAI ResNet at 28^3 needs a small, unstrided stem); the
    shape is recorded in model.json and given again when the run is loaded.

    Before training, medcls runs the backbone on a batch of two images of the training size: a
    wrong output shape, non-finite features or an input size it cannot take stop the run with one
    line naming the backbone and its plugin.

    Example::

        register("tiny_cnn", lambda in_chans: TinyCNN(in_chans),
                 description="A 3-layer CNN for tests")
    """


@hookspec
def medcls_register_weight_sources(register):
    """Register sources of pretrained weights for backbones.

    ``register(name, source, description="...", offline=True, available=None)`` where
    ``source(backbone: str)`` returns

    - ``None`` when this source does not serve that backbone;
    - a ``dict[str, torch.Tensor]`` state dict whose keys are the backbone module's keys (as
      created by its ``create(3)``; classifier keys are dropped), for 3-channel input: the first
      convolution is adapted to the requested number of channels (by timm for timm backbones);
    - or the path (``str``/``Path``) of a local weights file holding such a state dict
      (``.safetensors``; a hub download may also be timm's ``pytorch_model.bin``, read by timm
      with ``weights_only=True``). Every tensor of the backbone must come from the weights, else
      the run stops: weights never load partially into a silently random backbone;
    - or raises ``medcls.WeightsUnavailableError`` with the reason when it serves the backbone
      but cannot reach the weights (offline, missing file).

    Sources registered with ``offline=True`` are tried before network ones. ``available``, a
    callable returning the backbone names this source can serve now without a network (installed
    packages, files in a cache), lets medcls name the backbones that work on this machine when the
    asked-for one has no weights. Never unpickle untrusted files: use safetensors, or
    ``torch.load(..., weights_only=True)``.

    Example::

        register("my_weights", lambda name: load_file(PATH) if name == "my_net" else None,
                 description="my_net trained on 10k chest X-rays")
    """


@hookspec
def medcls_register_policies(register):
    """Register augmentation policies.

    ``register(name, create, description="...", params={...})`` where ``params`` maps each
    parameter name to its default value and ``create(**params)`` returns a callable that takes
    a ``torch.Tensor`` image ``(C, H, W)`` (or ``(C, D, H, W)``), float32 in ``[0, 1]``, and
    returns an augmented tensor of the same shape and dtype, still in ``[0, 1]`` (checked on the
    first training images before training starts). It is applied to training images only. Returned objects with a ``set_random_state(seed=...)`` method (every MONAI
    randomizable transform has one) are seeded by medcls. An object that also has
    ``batch(images)`` for ``(B, C, ...)`` tensors is applied to whole batches on the training
    device (GPU when present); otherwise medcls applies it per image in a loader worker.

    A policy that may mirror images left-right says so with ``flips_lr=fn(params) -> bool``: data
    marked ``laterality_sensitive`` (chest X-ray) refuses it unless ``allow_lr_flip`` is set.
    Without it, a parameter named ``lr_flip`` above 0 is taken as the sign.

    Example::

        register("flip_only", lambda prob=0.5: monai.transforms.RandFlip(prob, spatial_axis=1),
                 description="Left-right flip", params={"prob": 0.5},
                 flips_lr=lambda params: params["prob"] > 0)
    """


@hookspec
def medcls_register_metrics(register):
    """Register evaluation metrics.

    ``register(name, fn, description="...", needs_threshold=bool, higher_is_better=True)``
    where ``fn(y_true, probs, y_pred)`` returns a float:

    - ``y_true``: ``int64`` array ``(N,)`` of class indices;
    - ``probs``: ``float64`` array ``(N, K)`` of class probabilities (rows sum to 1);
    - ``y_pred``: ``int64`` array ``(N,)`` of decisions at the operating point (for binary
      tasks, ``probs[:, 1] >= threshold``).

    ``needs_threshold=True`` says the metric uses ``y_pred``; threshold-free metrics (ROC AUC)
    use only ``probs``. Optional metadata: ``vectorised=fn(stats)`` computes the metric for a block
    of bootstrap resamples at once from a ``medcls.stats.bootstrap.WeightedBinary`` (else
    intervals come from one call per resample, capped at 1,000), and ``multiclass="macro"`` or
    ``"sum"`` says how its one-vs-rest binary values combine for more than two classes; a metric
    that is no such combination gives ``vectorised_multiclass=fn(stats)`` instead, computed from a
    ``medcls.stats.bootstrap.WeightedMulticlass`` (its ``table``: (b, K, K) weighted counts, true
    class x decision). The positive class of a binary task is index 1. A metric that is
    undefined for the input (one class only) returns ``float('nan')``.

    Multi-label tasks (several findings per case) call ``fn`` once per finding, as a binary task
    on the cases where that finding is known, and report it per finding and as the macro mean
    over findings; ``per_label=False`` says the metric has no per-finding meaning and leaves it
    out of multi-label runs.

    Example::

        register("accuracy", lambda y, p, yhat: float((y == yhat).mean()),
                 description="Fraction of correct decisions", needs_threshold=True)
    """


@hookspec
def medcls_register_readers(register):
    """Register image file readers.

    ``register(name, read, description="...", extensions=(".png",), sniff=None,
    patient_id=None, settings=(), dims=2, folders=None, greyscale=None, version="")`` where

    - ``read(path: pathlib.Path, **settings)`` returns a ``float32`` ``numpy`` array ``(C, H, W)`` with
      values in ``[0, 1]`` (C = 1 for greyscale, 3 for colour; checked on every file, a breach
      stops the run naming the reader and its plugin) and raises ``medcls.DataError`` with a
      one-line message for unreadable files (those are skipped and listed);
    - ``extensions`` are lower-case file name endings this reader handles;
    - ``sniff(head: bytes)`` optionally recognises files by their first 256 bytes (DICOM files
      often have no extension);
    - ``settings`` names the run settings the reader accepts as keyword arguments (the DICOM
      reader takes ``window``: ``'lung'``, ``'40,400'``, ...; ``size``, the training resolution,
      lets a reader decode a large file at reduced scale, never below twice ``size``); others
      are never passed;
    - ``dims=3`` marks a volume reader (used with 3D backbones): ``read`` returns a
      ``medcls.data.volumes.Volume`` (voxels ``(z, y, x)`` in RAS order, in the file's dtype or
      rescaled, spacing in mm, modality) instead of an image; ``folders(path)`` optionally claims
      folders, e.g. a DICOM series, and a manifest's ``series_uid`` column reaches readers that
      list it in ``settings``;
    - ``patient_id(path)`` optionally reads a patient identifier from the file's header. It is
      used only to group images in splits and is never printed or written in clear;
    - ``greyscale(path)`` optionally says from the header alone (no pixels decoded) that ``read``
      will return one channel: training then starts before such files are decoded. Return False
      when unsure; a file it calls greyscale that decodes in colour stops the run;
    - ``version`` optionally names the reader's own version. Decoded images are kept in a disk
      store keyed by the reader's identity: its name, plugin, distribution and version, this
      ``version`` and a hash of the source file that defines ``read``, so a changed reader is
      called again instead of its old pixels being served.

    Example::

        register("png", read_png, description="PNG via Pillow", extensions=(".png",))
    """


@hookspec
def medcls_register_datasets(register):
    """Register dataset layouts: ways of turning ``--data SOURCE`` into labelled cases.

    ``register(name, load, description="...", detect=None)`` where

    - ``detect(source: str)`` returns ``True`` when this layout recognises the source (used
      when the user gives no ``--format``);
    - ``load(source: str, options: medcls.data.cases.DataOptions)`` returns a list of
      ``medcls.data.cases.Case`` and raises ``medcls.DataError`` when the source is unusable.

    A ``Case`` is one labelled image:

    - ``key`` (required, unique): how messages and ``predictions.csv`` name it, usually the file
      path, or ``'SOURCE#split/index'`` for arrays;
    - ``label`` (required): the class name as text;
    - ``path`` *or* ``array``: a file (or DICOM series folder) that a reader decodes, or a
      float32 ``(C, H, W)`` array in ``[0, 1]`` (or a ``medcls.data.volumes.Volume``);
    - ``patient_id``: every image of a patient stays on one side of each split (without it,
      each image is its own patient, which a repeated patient makes optimistic);
    - ``split``: ``'train'``, ``'val'`` or ``'test'`` when the data set fixes its splits;
    - ``attributes``: other columns (site, sex, scanner): ``--by site`` reports subgroups from
      them, ``series_uid`` reaches readers that accept it, and ``tasks = "Age:regression"``
      trains an extra head on a column (multi-task);
    - ``findings`` (multi-label layouts): ``{finding: value}`` with 1.0 present, 0.0 absent,
      -1.0 uncertain and NaN blank, the same findings for every case; ``label`` is then a
      readable summary (``'Effusion|Mass'``). The run's ``uncertain`` and ``blank_findings``
      policies turn it into targets.

    ``DataOptions`` carries the user's settings a layout may honour: ``path_column``,
    ``label_column``, ``label_columns`` and ``multi_label`` (multi-label manifests),
    ``patient_column``, ``split_column``, ``image_root``, ``patient_from_dicom``, and ``readers`` (a ``ReaderTable``: ``readers.can_read(path)`` says
    whether any registered reader takes a file; use it to pick files from a folder).

    Example::

        register("folder", load_folder, description="One sub-folder per class",
                 detect=lambda source: Path(source).is_dir())
    """


@hookspec
def medcls_register_loggers(register):
    """Register experiment trackers that a run reports to (`--log NAME,...`, config `loggers`).

    ``register(name, create, description="...", extra="...")`` where ``create(out: Path)`` is
    called with the run folder when training starts and returns a tracker with

    - ``start(params: dict)``: the run's configuration, flattened to text, numbers and booleans;
    - ``epoch(step: int, values: dict[str, float])``: after each epoch, the training loss, the
      validation loss and figures, and the learning rate (``epoch_train_loss``,
      ``epoch_val_roc_auc``, ``epoch_lr``, ...);
    - ``finish(values: dict[str, float], artefacts: list[pathlib.Path])``: the final figures of
      every split (``test_roc_auc``, with ``test_roc_auc_low`` / ``_high`` for its interval) and
      the run's files (report, metrics, model card, figures); the tracker closes itself here.

    Optionally ``fail(status: str)`` ends the tracker's run when training fails (``"FAILED"``) or
    is interrupted (``"KILLED"``), and ``child(out: Path)`` returns a tracker for a nested run: cross-validation folds,
    ensemble members and an experiment's runs are logged under the run that holds them (MLflow's
    ``mlflow.parentRunId``); without it each is a run of its own.

    ``extra`` names the optional dependency group that provides the tracker's package, so a
    missing one is reported as ``pip install "medcls[EXTRA]"``; ``create`` raises
    ``medcls.ConfigError`` with that line. An optional ``check=`` callable (no arguments) is
    called before any data is read and raises ``medcls.ConfigError`` for what would fail later
    (the package missing, a store that cannot be opened). A tracker never changes what is trained.

    Example::

        register("print", lambda out: PrintTracker(out), description="prints each epoch")
    """
