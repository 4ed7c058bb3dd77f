"""
Which implementation runs a kernel call: Triton or the plain-torch reference.

    impl argument ("torch" | "triton")  >  env NANOOCTO_KERNELS ("torch" | "triton" | "auto")  >  auto
    auto = Triton iff the tensor is on a CUDA device and triton imports; torch otherwise.

Forcing Triton on CPU tensors works only under the Triton interpreter (TRITON_INTERPRET=1 set before this package
is imported, as tests/conftest.py does): that is how the tests run every kernel on a CPU-only machine.
"""
from __future__ import annotations

import os

import torch

try:  # triton is a runtime dependency, but the torch references must keep working without it
    import triton
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
except ImportError:  # pragma: no cover - exercised only on installs without triton
    triton, tl, InterpretedFunction = None, None, None

HAVE_TRITON = triton is not None
ENV_VAR = "NANOOCTO_KERNELS"
CHOICES = ("auto", "torch", "triton")


def jit(fn):
    """triton.jit when triton is installed; otherwise the function is kept as plain (never called) Python.
    Kernel modules use `from __future__ import annotations`, so their `tl.constexpr` annotations stay strings and
    defining a kernel does not touch triton at all."""
    return triton.jit(fn) if HAVE_TRITON else fn


def _probe() -> None:  # decorated only to ask triton which kind of kernel object it makes
    pass


def _probe_interpreter() -> bool:
    return HAVE_TRITON and isinstance(jit(_probe), InterpretedFunction)


# Triton decides at decoration time whether a kernel is compiled or interpreted, so this is fixed at import.
INTERPRET = _probe_interpreter()


def resolve_impl(impl: str | None, device: torch.device) -> str:
    """'torch' or 'triton' for a call whose tensors live on `device`; raises a clear error for impossible choices."""
    raw = impl if impl is not None else os.environ.get(ENV_VAR, "auto")
    choice = str(raw).strip().lower() or "auto"
    where = "impl argument" if impl is not None else f"env {ENV_VAR}"
    if choice not in CHOICES:
        raise ValueError(f"{where} must be one of {CHOICES}, got {raw!r}")
    if choice == "auto":
        return "triton" if (device.type == "cuda" and HAVE_TRITON) else "torch"
    if choice == "triton":
        if not HAVE_TRITON:
            raise RuntimeError(f"{where} asks for triton, but triton is not installed")
        if device.type != "cuda" and not INTERPRET:
            raise RuntimeError(f"{where} asks for triton on {device.type} tensors: that needs a CUDA device, or "
                               "TRITON_INTERPRET=1 set before `octo_kernels` is imported (the Triton interpreter)")
    return choice


# The interpreter casts fp32 -> bf16 by truncation (a GPU rounds to nearest even), so interpreted kernels round
# explicitly in `cast_rne`; compiled kernels skip that code (the branch is decided at compile time).
FIX_BF16_ROUNDING = tl.constexpr(INTERPRET) if HAVE_TRITON else INTERPRET


@jit
def cast_rne(x, dtype: tl.constexpr):
    """fp32 tensor -> dtype, rounding to nearest even on the interpreter too (bit trick: add 0x7FFF plus the
    lowest kept bit, drop the low 16 bits; the result is exact in bf16, so the truncating cast keeps it)."""
    if FIX_BF16_ROUNDING:
        if dtype == tl.bfloat16:
            bits = x.to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


_SM_COUNT: dict[int, int] = {}


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (132 on an H100 SXM); cached, queried once per device."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SM_COUNT[idx]
