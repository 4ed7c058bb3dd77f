"""
RMSNorm, optionally fused with the residual add that precedes it in every Llama block.

HF LlamaRMSNorm, exactly:  y = weight * (h_fp32 * rsqrt(mean(h_fp32^2) + eps)).to(input_dtype)
i.e. normalise in fp32, round to the input dtype, then scale (a bf16 x bf16 product is fp32-multiply-then-round,
which is what the kernel does). With a residual, h = x + residual is added in fp32 and rounded to the stream's dtype
first (HF's bf16 `residual + hidden_states`), and it is the rounded h that is normalised and returned.

Output dtype is x.dtype (HF would promote bf16 x with an fp32 weight to fp32; we keep the activation dtype). With a
residual, h and y are in the residual stream's dtype, promote_types(x, residual): under autocast over fp32 weights a
block's output is bf16 but the stream it is added to is fp32, as in training (rounding the stream to bf16 at every
add moved the sampler's log-probs 0.165 away from the trainer's; see DESIGN.md "GPU").

Kernel: one program per row; the whole row sits in registers (BLOCK_D = next pow2 of D, masked), so x (and the
residual) are read once and y (and h) written once: memory-bound, coalesced along D.
"""
from __future__ import annotations

import torch

from octo_kernels.dispatch import cast_rne, cdiv, jit, next_pow2, tl
from octo_kernels.launch import Launch, device_cc, run

MAX_BLOCK_D = 65536  # whole row in one program; Llama dims are <= 16384


def out_dtype(x, residual):
    """dtype of y (and h): x's, or the residual stream's promote_types(x, residual) when one is added."""
    return x.dtype if residual is None else torch.promote_types(x.dtype, residual.dtype)


def rms_norm_torch(x, weight, eps, residual=None, y_dtype=None):
    """Plain-torch reference; same contract as rms_norm."""
    h = x if residual is None else (x.float() + residual.float()).to(out_dtype(x, residual))
    h32 = h.float()
    normed = (h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + eps)).to(h.dtype)
    y = (weight.float() * normed.float()).to(y_dtype or h.dtype)
    return y if residual is None else (y, h)


@jit
def _rms_norm_kernel(X, R, W, Y, H, D, eps, stride_x, stride_r, stride_y, stride_h,
                     HAS_RESIDUAL: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # int64: rows * stride can pass 2^31 for long prefills
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0)
    h = x.to(tl.float32)
    if HAS_RESIDUAL:
        r = tl.load(R + row * stride_r + cols, mask=mask, other=0.0).to(tl.float32)
        h_low = cast_rne(h + r, H.dtype.element_ty)  # stored in the stream's dtype, and normalised as stored
        tl.store(H + row * stride_h + cols, h_low, mask=mask)
        h = h_low.to(tl.float32)
    var = tl.sum(h * h, axis=0) / D
    normed = cast_rne(h * tl.rsqrt(var + eps), H.dtype.element_ty).to(tl.float32)  # HF rounds before scaling
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + cols, cast_rne(w * normed, Y.dtype.element_ty), mask=mask)


def _check(x, weight, residual):
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"rms_norm: x must have a non-empty last dim, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"rms_norm: x must be floating point, got {x.dtype}")
    if weight.shape != (x.shape[-1],):
        raise ValueError(f"rms_norm: weight shape {tuple(weight.shape)} != ({x.shape[-1]},)")
    if weight.device != x.device:
        raise ValueError(f"rms_norm: weight on {weight.device}, x on {x.device}")
    if residual is not None:
        if residual.shape != x.shape:
            raise ValueError(f"rms_norm: residual shape {tuple(residual.shape)} != x shape {tuple(x.shape)}")
        if residual.device != x.device:
            raise ValueError(f"rms_norm: residual on {residual.device}, x on {x.device}")


def _as_rows(t, D):
    """[..., D] -> [N, D] with unit stride along D (a view when possible, else one copy)."""
    t2 = t.reshape(-1, D)
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def plan_rms_norm(x, weight, eps, residual=None, cc=None, y_dtype=None):
    """Outputs (y, h) allocated like x, and the Launch that fills them (None for an empty x). cc: the target's
    compute capability (unused: this kernel keeps no shared-memory tiles; kept for the common plan signature).
    y_dtype: y's dtype when not the stream's (the dtype of the matmul that reads y: one rounding, no cast after)."""
    D = x.shape[-1]
    if D > MAX_BLOCK_D:
        raise ValueError(f"rms_norm: triton kernel keeps a row in registers, D={D} > {MAX_BLOCK_D}")
    x2 = _as_rows(x, D)
    r2 = _as_rows(residual, D) if residual is not None else x2
    w = weight.contiguous()
    y = torch.empty(x.shape, dtype=y_dtype or out_dtype(x, residual), device=x.device)
    h = torch.empty(x.shape, dtype=out_dtype(x, residual), device=x.device) if residual is not None else y
    y2, h2 = y.view(-1, D), h.view(-1, D)
    if residual is None:
        h2 = x2  # not written: the kernel reads the dtype normalised values are rounded to from H (the stream's)
    N = x2.shape[0]
    if N == 0:
        return y, h, None
    BLOCK_D = next_pow2(D)
    # enough threads that each holds <= ~16 fp32 of the row (no spills), capped at 16 warps
    num_warps = min(16, max(1, next_pow2(cdiv(BLOCK_D, 512))))
    launch = Launch(_rms_norm_kernel, (N,),
                    (x2, r2, w, y2, h2, D, float(eps), x2.stride(0), r2.stride(0), y2.stride(0), h2.stride(0)),
                    dict(HAS_RESIDUAL=residual is not None, BLOCK_D=BLOCK_D, num_warps=num_warps))
    return y, h, launch


def rms_norm_triton(x, weight, eps, residual=None, y_dtype=None):
    y, h, launch = plan_rms_norm(x, weight, eps, residual, device_cc(x.device), y_dtype)
    if launch is not None:
        run(launch)
    return y if residual is None else (y, h)
