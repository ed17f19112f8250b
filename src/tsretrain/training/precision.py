"""The arithmetic of a network on the CPU: bfloat16 autocast where the CPU computes bfloat16 natively.

nnU-Net autocasts to float16 on CUDA and never on a CPU (its comment: "slow as heck" there, true of CPUs that
emulate bfloat16). A CPU with AVX512-BF16 or AMX runs the demo network's training step 1.5-1.7 times faster under
bfloat16 autocast (docs/benchmarks.md, ``bench/demo.py``). The network's forward runs under autocast and its outputs
come back as float32, so the loss, the backward's accumulation, the optimiser and nnU-Net's sliding-window
averaging stay in float32 (autocast wraps only the forward, as torch recommends); the checkpoint is unchanged.

The choice is the process's ``TSRETRAIN_CPU_PRECISION`` (``auto``, ``bf16`` or ``fp32``), set from a stage's
``--precision`` by :func:`tsretrain.training.nnunet_env.torch_device`, read by the trainers and the predictor.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal, get_args

from tsretrain.errors import UserError

Precision = Literal["auto", "bf16", "fp32"]
"""A CPU network's arithmetic: ``auto`` (bfloat16 autocast where the CPU computes bfloat16 natively, else float32),
``bf16`` or ``fp32``; on CUDA nnU-Net's own float16 autocast applies whatever is chosen."""

PRECISION_VARIABLE = "TSRETRAIN_CPU_PRECISION"


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where autocast pays."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def cpu_autocast() -> bool:
    """Whether a CPU network runs its forward under bfloat16 autocast in this process."""
    setting = os.environ.get(PRECISION_VARIABLE, "auto")
    if setting not in get_args(Precision):
        raise UserError(f"{PRECISION_VARIABLE}={setting!r}", f"use one of {', '.join(get_args(Precision))}")
    return setting == "bf16" or (setting == "auto" and native_bf16())


def describe() -> str:
    """The CPU arithmetic chosen, for a log line."""
    return "bfloat16 autocast" if cpu_autocast() else "float32"


def autocast_forward(network: Any) -> None:
    """Make ``network`` (on the CPU) run its forward under bfloat16 autocast, its outputs (a tensor or nnU-Net's
    deep-supervision list) returned as float32; its parameters and state dict stay as they are. Applying it twice
    changes nothing."""
    import torch

    forward: Callable[..., Any] = network.forward
    if getattr(forward, "bf16_autocast", False):
        return

    def as_float(output: Any) -> Any:
        if isinstance(output, list | tuple):
            return type(output)(as_float(item) for item in output)
        return output.float() if isinstance(output, torch.Tensor) else output

    def autocast(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = forward(*args, **kwargs)
        return as_float(output)

    autocast.bf16_autocast = True  # type: ignore[attr-defined]
    network.forward = autocast


def apply(network: Any, device: Any) -> None:
    """Autocast ``network``'s forward when it runs on the CPU and this process chose bfloat16."""
    if device.type == "cpu" and cpu_autocast():
        autocast_forward(network)
