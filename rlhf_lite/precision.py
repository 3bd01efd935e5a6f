"""Which float type forward passes compute in, per device, and the loss scaling it needs.

Weights, gradients and AdamW's moments always stay float32; autocast runs matrix products in
a 16-bit type (softmax, norms and losses stay float32). Two 16-bit types:

- bf16 has float32's exponent range, so gradients neither overflow nor underflow and no
  loss scaling is needed. GPUs compute it natively from compute capability 8.0 on (Ampere:
  A100, RTX 30xx; H100). An older GPU such as a T4 (7.5) still reports bf16 as supported
  (`torch.cuda.is_bf16_supported()`) but emulates it, slowly.
- fp16 is native on those older GPUs, but its range is small (max 65504, smallest normal
  6e-5): small gradients underflow to 0. `torch.amp.GradScaler` multiplies the loss by a large
  scale before backward and divides the gradients by it before clipping and the optimizer
  step; a step whose gradients overflowed to inf or NaN is skipped and the scale halved.

`autocast(precision, device)` (entered by `Preset.runtime()`) resolves "auto" (bf16 where
native, fp16 on other CUDA GPUs, fp32 on CPU and MPS, printed once), autocasts, and records
the choice, so that the trainers' `grad_scaler()` scales losses under fp16 only. A
disabled scaler calls `optimizer.step()` unchanged: fp32 and bf16 runs are bit-identical
to runs without one. The trainers step with `optimizer_step`, which also drops autocast's
cached 16-bit weights once the optimizer has changed the float32 ones.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NATIVE_BF16 = (8, 0)  # compute capability from which CUDA GPUs compute bf16 natively

_active = ("cpu", "fp32")  # (device type, precision) of the innermost `autocast`
_announced: set[str] = set()  # lines already printed by `resolve`


def resolve(precision: str, device: torch.device) -> str:
    """The precision to run in: `precision` itself, or for "auto" the best one `device`
    computes natively (printed once per process)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return _announce("fp32", f"precision: fp32 ({device.type})")
    capability = torch.cuda.get_device_capability(device)
    where = f"cuda, compute capability {capability[0]}.{capability[1]}"
    if tuple(capability) >= NATIVE_BF16:
        return _announce("bf16", f"precision: bf16 autocast ({where})")
    return _announce("fp16", f"precision: fp16 autocast, loss scaling ({where}: no native bf16)")


def _announce(precision: str, line: str) -> str:
    if line not in _announced:
        _announced.add(line)
        print(line)
    return precision


@contextmanager
def autocast(precision: str, device: torch.device):
    """`with autocast("auto", device) as chosen:` forward passes inside compute in `chosen`
    ("bf16", "fp16" or "fp32", see `resolve`), and `grad_scaler()` matches it."""
    global _active
    chosen = resolve(precision, device)
    outer = _active
    _active = (device.type, chosen)
    try:
        with (torch.autocast(device.type, dtype=DTYPES[chosen]) if chosen in DTYPES
              else nullcontext()):
            yield chosen
    finally:
        _active = outer


def grad_scaler() -> torch.amp.GradScaler:
    """A GradScaler for the current `autocast`: enabled under fp16 only (module doc)."""
    device_type, precision = _active
    return torch.amp.GradScaler(device_type, enabled=precision == "fp16")


def optimizer_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
    """`scaler.step(optimizer)` (skipped if fp16 gradients overflowed) and `scaler.update()`,
    then forget autocast's 16-bit copies of the weights, now stale.

    Autocast casts a float32 weight once and reuses the copy until the outermost autocast
    exits. `Preset.runtime()` spans a whole stage, so without this every later forward pass
    would multiply by the weights of the first one, however far the optimizer moved them.
    """
    scaler.step(optimizer)
    scaler.update()
    torch.clear_autocast_cache()
