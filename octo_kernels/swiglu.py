"""
SwiGLU's gate: silu(gate) * up, from the fused gate/up projection's output in one pass.

    gu [..., 2F] (gate = gu[..., :F], up = gu[..., F:])  ->  silu(gate) * up  [..., F] in gu.dtype

Rounded as torch rounds F.silu(gate) * up in a low-precision dtype: silu in fp32, rounded to the dtype, then the
product in fp32, rounded again; so the kernel gives the plain-torch MLP's numbers in bf16 / fp16 as in fp32.

Kernel: grid (rows, column blocks of BLOCK_F); each program reads BLOCK_F gate and up values of its row and writes
BLOCK_F outputs: memory-bound, coalesced along F.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from octo_kernels.dispatch import cast_rne, cdiv, jit, next_pow2, tl
from octo_kernels.launch import Launch, device_cc, run

BLOCK_F_MAX = 1024


def silu_mul_torch(gu):
    """Plain-torch reference; same contract as silu_mul."""
    gate, up = gu.chunk(2, dim=-1)
    return F.silu(gate) * up


@jit
def _silu_mul_kernel(GU, OUT, F_DIM, stride_gu, stride_out, BLOCK_F: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    mask = cols < F_DIM
    g = tl.load(GU + row * stride_gu + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(GU + row * stride_gu + F_DIM + cols, mask=mask, other=0.0).to(tl.float32)
    s = cast_rne(g / (1.0 + tl.exp(-g)), OUT.dtype.element_ty).to(tl.float32)  # F.silu's rounding
    tl.store(OUT + row * stride_out + cols, cast_rne(s * u, OUT.dtype.element_ty), mask=mask)


def _check(gu):
    if gu.dim() < 1 or gu.shape[-1] == 0 or gu.shape[-1] % 2:
        raise ValueError(f"silu_mul: gu must be [..., 2F] with F >= 1, got shape {tuple(gu.shape)}")
    if not gu.is_floating_point():
        raise ValueError(f"silu_mul: gu must be floating point, got {gu.dtype}")


def plan_silu_mul(gu, cc=None):
    """out [..., F] (allocated like gu) and the Launch that fills it (None when empty). cc: unused (no shared
    memory), kept for the common plan signature."""
    F2 = gu.shape[-1]
    Fd = F2 // 2
    rows = gu.reshape(-1, F2)
    rows = rows if rows.stride(-1) == 1 else rows.contiguous()
    out = torch.empty(gu.shape[:-1] + (Fd,), dtype=gu.dtype, device=gu.device)
    out2 = out.view(-1, Fd)
    if rows.shape[0] == 0:
        return out, None
    BLOCK_F = min(BLOCK_F_MAX, next_pow2(Fd))
    return out, Launch(_silu_mul_kernel, (rows.shape[0], cdiv(Fd, BLOCK_F)),
                       (rows, out2, Fd, rows.stride(0), out2.stride(0)), dict(BLOCK_F=BLOCK_F, num_warps=4))


def silu_mul_triton(gu):
    out, launch = plan_silu_mul(gu, device_cc(gu.device))
    if launch is not None:
        run(launch)
    return out
