"""Execution defaults: memory format and precision per device and model, and bad settings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medcls.errors import ConfigError
from medcls.core.execution import Execution, choose_execution, has_depthwise_convolutions

CPU = torch.device("cpu")


def plain_cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def depthwise_cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 2))


def test_2d_convolutional_models_run_channels_last_on_cpu():
    execution = choose_execution(CPU, plain_cnn())
    assert execution.channels_last
    model = execution.prepare(plain_cnn())
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert execution.inputs(torch.rand(2, 3, 8, 8)).is_contiguous(memory_format=torch.channels_last)


def test_models_without_2d_convolutions_keep_their_layout():
    assert not choose_execution(CPU, nn.Linear(4, 2)).channels_last


def test_bf16_on_cpu_only_with_native_support_and_never_for_depthwise_models(monkeypatch):
    import medcls.core.execution as execution

    monkeypatch.setattr(execution, "cpu_has_bf16", lambda: True)
    assert choose_execution(CPU, plain_cnn()).dtype == torch.bfloat16
    assert has_depthwise_convolutions(depthwise_cnn())
    assert choose_execution(CPU, depthwise_cnn()).dtype is None
    volume_cnn = nn.Sequential(nn.Conv3d(1, 4, 3), nn.AdaptiveAvgPool3d(1), nn.Flatten())
    assert choose_execution(CPU, volume_cnn).dtype is None  # 3D networks diverged under CPU bf16
    monkeypatch.setattr(execution, "cpu_has_bf16", lambda: False)
    assert choose_execution(CPU, plain_cnn()).dtype is None


def test_fp32_is_honoured_and_fp16_on_cpu_is_refused():
    assert choose_execution(CPU, plain_cnn(), "fp32").dtype is None
    with pytest.raises(ConfigError, match="fp16.*CUDA"):
        choose_execution(CPU, plain_cnn(), "fp16")
    with pytest.raises(ConfigError, match="precision 'half'"):
        choose_execution(CPU, plain_cnn(), "half")


def test_fp32_on_a_gpu_turns_tf32_off_inside_the_pass_and_restores_it():
    """cuDNN runs fp32 convolutions in TF32 by default on Ampere and later: on an H200 that moved
    probabilities by 4e-4 against the CPU and the ONNX export (gpu_check, test_inference)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        exact = Execution(torch.device("cuda"), None)
        for context in (exact.autocast, exact.exact):
            with context():
                assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
            assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with Execution(torch.device("cuda"), torch.bfloat16).exact():  # autocast runs: TF32 is not the question
            assert torch.backends.cudnn.allow_tf32
        with Execution(torch.device("cpu"), None).autocast():
            assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_a_bf16_channels_last_step_trains_like_fp32():
    torch.manual_seed(0)
    x, y = torch.rand(8, 3, 12, 12), torch.tensor([0, 1] * 4)
    losses = {}
    for name, execution in {"fp32": Execution(CPU), "fast": Execution(CPU, torch.bfloat16, True)}.items():
        torch.manual_seed(0)
        model = execution.prepare(plain_cnn())
        with execution.autocast():
            losses[name] = nn.functional.cross_entropy(model(execution.inputs(x)).float(), y).item()
    assert losses["fast"] == pytest.approx(losses["fp32"], abs=2e-2)


def test_tune_process_leaves_a_core_per_loader_worker(monkeypatch):
    import medcls.core.execution as execution

    before = torch.get_num_threads()
    monkeypatch.setattr(execution, "_TUNED", False)
    monkeypatch.setattr(execution, "available_cores", lambda: 4)
    try:
        execution.tune_process(loader_workers=1)
        assert torch.get_num_threads() == 3
        execution.tune_process(loader_workers=3)  # once per process: later calls change nothing
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_a_diverging_loss_stops_training_with_the_fix():
    from medcls.config import make_config
    from medcls.core.engine import Stage, fit
    from medcls.errors import TrainingDiverged

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.head = nn.Identity(), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(x)

        def set_trainable(self, top_blocks):
            pass

    loader = [(torch.rand(4, 4), torch.tensor([0, 1, 0, 1]))]
    with pytest.raises(TrainingDiverged, match=r"loss is nan in epoch 1 \(scratch\); lower the learning rate"):
        fit(Model(), [Stage("scratch", 2, 1e-3, -1)], train_loader=loader, evaluate_val=lambda: (0.0, {}, 0.0),
            loss_fn=lambda logits, y: logits.sum() * float("nan"), execution=Execution(CPU),
            optimisation=make_config().section("optimisation"))
