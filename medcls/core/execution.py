"""How a model runs fast on its device: memory format, mixed precision, CPU threads and allocator.

Defaults follow measurements (`medcls bench`, docs/benchmarks.md): channels_last for 2D
convolutions everywhere; bf16 autocast on CUDA GPUs that support it and on CPUs with native bf16
instructions, for 2D convolutional networks without depthwise convolutions (bf16 is not faster for those on
CPU, and 3D networks diverged under CPU bf16 autocast).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medcls.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str):
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but no CUDA GPU is available: use --device cpu or --device auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was asked for but Apple MPS is not available: use --device cpu or --device auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a device name: use auto, cpu, cuda, cuda:N or mps") from None


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


@dataclass(frozen=True)
class Execution:
    """Where and how the model runs; every forward pass of training and scoring goes through it."""

    device: torch.device
    dtype: torch.dtype | None = None  # autocast dtype; None runs in fp32
    channels_last: bool = False

    def autocast(self):
        """The forward pass's context: autocast to the run's dtype, or exact fp32 (see `exact`)."""
        if self.dtype is None:
            return self.exact()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def exact(self):
        """fp32 means fp32 on a GPU too: cuDNN runs fp32 convolutions in TF32 (a 10-bit mantissa) on
        Ampere and later unless told not to, which moved probabilities by 4e-4 against the CPU and the
        exported ONNX model on an H200. Training wraps its backward pass in this as well."""
        if self.dtype is not None or self.device.type != "cuda":
            return contextlib.nullcontext()
        return without_tf32()

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """A batch on the device, in the model's memory format."""
        images = images.to(self.device, non_blocking=True)
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def grad_scaler(self):
        """fp16 needs loss scaling; bf16 and fp32 do not."""
        return torch.amp.GradScaler("cuda") if self.dtype == torch.float16 and self.device.type == "cuda" else None

    def describe(self) -> str:
        precision = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[self.dtype]
        return f"{self.device}, {precision}, {'channels_last' if self.channels_last else 'contiguous'}"


@contextlib.contextmanager
def without_tf32():
    """TF32 off for cuDNN convolutions and cuBLAS matrix products, restored on leaving."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def has_depthwise_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d | nn.Conv3d) and m.groups > 1 and m.groups == m.in_channels
               for m in model.modules())


def has_2d_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def choose_execution(device: torch.device, model: nn.Module, precision: str = "auto",
                     channels_last: bool | None = None) -> Execution:
    """The execution settings for `model` on `device`; `precision` auto picks what measured faster."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if channels_last is None:
        # Inputs must be 4D: volumes, also those a 2D backbone reads slice by slice, stay contiguous.
        takes_images = getattr(getattr(model, "backbone", model), "spatial_dims", 2) == 2
        channels_last = device.type in ("cuda", "cpu") and takes_images and has_2d_convolutions(model)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if precision == "auto":
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif (device.type == "cpu" and cpu_has_bf16() and has_2d_convolutions(model)
              and not has_depthwise_convolutions(model)):
            # Measured for 2D CNNs only; a 3D DenseNet diverged to NaN under CPU bf16 autocast.
            dtype = torch.bfloat16
    if dtype == torch.float16 and device.type == "cpu":
        raise ConfigError("precision 'fp16' is for CUDA GPUs; on CPU use bf16 or fp32")
    return Execution(device, dtype, channels_last)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


_TUNED = False


def tune_process(loader_workers: int, processes_per_machine: int = 1) -> None:
    """Once per process: intra-op threads = this process's share of the cores, less its loader
    workers (oversubscription makes threads spin), and glibc keeps freed activation memory instead of unmapping it after every
    step (page faults showed up as a third of CPU time in system mode)."""
    global _TUNED
    if _TUNED:
        return
    _TUNED = True
    torch.set_num_threads(max(1, available_cores() // max(1, processes_per_machine) - loader_workers))
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:  # musl or another libc: leave the allocator alone
            return
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, (1 << 31) - 1)
