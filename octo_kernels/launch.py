"""
A kernel launch as data: which kernel, its grid, its arguments and its compile-time knobs. Every wrapper in octo_kernels/
builds its launches with a `plan_*` function and runs them with `run`; tests/test_gpu_compile.py hands the very same
Launch objects to `compile_launch`, which compiles them for a GPU that is not there (Triton's frontend + ptxas), so
what CI compiles is what a GPU would run.

Launch parameters that use shared memory (tile sizes, pipeline stages) depend on the target, so plans take the
target's compute capability `cc` (86 for sm_86) and its per-block shared-memory limit from `smem_limit(cc)`.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch

KIB = 1024
# Largest shared memory one block can opt into, per compute capability (CUDA programming guide, "Technical
# Specifications per Compute Capability"; the SM has 1 KiB more, which the driver reserves per block:
# 164 / 100 / 228 KiB per SM on sm_80 / sm_86-89 / sm_90).
SMEM_PER_BLOCK = {80: 163 * KIB, 86: 99 * KIB, 87: 163 * KIB, 89: 99 * KIB, 90: 227 * KIB}
SMEM_FALLBACK = 99 * KIB  # unknown (newer or consumer) parts: assume the smallest of the GPUs above


class Launch(NamedTuple):
    kernel: Any  # a triton JITFunction (or InterpretedFunction under TRITON_INTERPRET=1)
    grid: tuple
    args: tuple  # positional runtime arguments, tensors included
    kwargs: dict  # constexprs and launch options (num_warps, num_stages)


def smem_limit(cc: int | None) -> int:
    """Per-block shared memory (bytes) a kernel may use on compute capability cc; None = interpreter (no limit
    that matters, but plans pick the same parameters as the smallest GPU, so the interpreter runs a real config)."""
    if cc is None:
        return SMEM_FALLBACK
    return SMEM_PER_BLOCK.get(cc, SMEM_FALLBACK)


_CC: dict[int, int] = {}


def device_cc(device: torch.device) -> int | None:
    """Compute capability of a CUDA device as one int (sm_86 -> 86), queried once per device (every decode step of
    every layer asks); None for CPU tensors (the interpreter)."""
    if device.type != "cuda":
        return None
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _CC:
        major, minor = torch.cuda.get_device_capability(idx)
        _CC[idx] = 10 * major + minor
    return _CC[idx]


def run(launch: Launch) -> None:
    launch.kernel[launch.grid](*launch.args, **launch.kwargs)


def compile_launch(launch: Launch, cc: int, warp_size: int = 32):
    """Compile a planned launch for GPU target sm_<cc> without a GPU: the arguments are specialised exactly as the
    JIT launcher does (dtypes, 16-byte alignment, int width, ==1 constants), then triton.compile runs the frontend,
    the NVIDIA backend and ptxas. Returns the CompiledKernel (metadata.shared: shared memory bytes per block).
    Needs compiled (not interpreted) kernels: run it in a process without TRITON_INTERPRET=1."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    kernel = launch.kernel
    if not isinstance(kernel, JITFunction):
        raise RuntimeError(f"compile_launch: {getattr(kernel, '__name__', kernel)} is not a compiled-mode triton "
                           "kernel (TRITON_INTERPRET=1 was set when octo_kernels/ was imported)")
    target = GPUTarget("cuda", cc, warp_size)
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, launch.kwargs, bound, specialization, options)
    return triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=options.__dict__)
