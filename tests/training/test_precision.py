"""A CPU network's arithmetic: bfloat16 autocast around the forward alone where chosen (or native, for ``auto``),
float32 outputs, parameters and checkpoints unchanged; CUDA left to nnU-Net."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tsretrain.errors import UserError
from tsretrain.training import nnunet_env, precision


class TwoOutputs(nn.Module):
    """A convolution and a deep-supervision-like list of two outputs; records the dtype its convolution computed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 3, 3, padding=1)
        self.computed: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = self.conv(x)
        self.computed.append(y.dtype)
        return [y, y[:, :, ::2, ::2, ::2]]


@pytest.mark.parametrize(
    ("setting", "native", "autocast"),
    [("bf16", False, True), ("fp32", True, False), ("auto", True, True), ("auto", False, False)],
)
def test_the_choice_follows_the_setting_and_for_auto_the_cpu(
    monkeypatch: pytest.MonkeyPatch, setting: str, native: bool, autocast: bool
) -> None:
    monkeypatch.setenv(precision.PRECISION_VARIABLE, setting)
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    assert precision.cpu_autocast() is autocast
    assert precision.describe() == ("bfloat16 autocast" if autocast else "float32")


def test_an_unknown_setting_is_refused_with_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(precision.PRECISION_VARIABLE, "fp16")
    with pytest.raises(UserError) as refused:
        precision.cpu_autocast()
    assert "TSRETRAIN_CPU_PRECISION='fp16'" in refused.value.message and "auto, bf16, fp32" in refused.value.advice


def test_the_forward_computes_in_bfloat16_and_returns_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(precision.PRECISION_VARIABLE, "bf16")
    torch.manual_seed(0)
    network, reference = TwoOutputs(), TwoOutputs()
    reference.load_state_dict(network.state_dict())
    keys = list(network.state_dict())
    precision.apply(network, torch.device("cpu"))
    precision.apply(network, torch.device("cpu"))  # twice: still one autocast
    x = torch.randn(2, 1, 8, 8, 8)
    outputs = network(x)
    assert network.computed == [torch.bfloat16]
    assert [o.dtype for o in outputs] == [torch.float32, torch.float32] and isinstance(outputs, list)
    expected = reference(x)
    assert reference.computed == [torch.float32]
    for got, want in zip(outputs, expected, strict=True):  # bfloat16's 8 bits of mantissa: within a percent
        assert torch.allclose(got, want, rtol=0.02, atol=0.02 * float(want.abs().max()))
    sum(o.sum() for o in outputs).backward()  # the backward outside autocast reaches the float32 parameters
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in network.parameters())
    assert list(network.state_dict()) == keys
    assert all(value.dtype == torch.float32 for value in network.state_dict().values())


@pytest.mark.parametrize(("setting", "device"), [("fp32", "cpu"), ("bf16", "cuda")])
def test_float32_or_a_cuda_network_is_left_alone(monkeypatch: pytest.MonkeyPatch, setting: str, device: str) -> None:
    """fp32 on the CPU; on CUDA nnU-Net's own float16 autocast applies, whatever the CPU setting."""
    monkeypatch.setenv(precision.PRECISION_VARIABLE, setting)
    network = TwoOutputs()
    forward = network.forward
    precision.apply(network, torch.device(device))  # a device object: no GPU needed
    assert network.forward == forward
    network(torch.randn(1, 1, 4, 4, 4))
    assert network.computed == [torch.float32]


def test_the_device_choice_sets_the_processs_cpu_arithmetic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(precision.PRECISION_VARIABLE, "bf16")
    monkeypatch.setenv("nnUNet_compile", "true")
    threads = torch.get_num_threads()
    try:
        assert nnunet_env.torch_device("cpu", "fp32").type == "cpu"
        assert not precision.cpu_autocast()
    finally:
        torch.set_num_threads(threads)
