"""
Kernels for the decode hot path. Each has a plain-torch reference (`*_torch`, in its module) and a Triton kernel;
the functions below validate their inputs and dispatch (see octo_kernels/dispatch.py):

    impl="torch" | "triton" forces one; impl=None follows env NANOOCTO_KERNELS=triton|torch|auto (default auto:
    Triton iff the tensor is on CUDA and triton imports).

    rms_norm(x, weight, eps, residual=None, y_dtype=None)           -> y            | (y, x + residual)
    rope_cache_update(q, k, v, cos, sin, k_cache, v_cache, slot)    -> q_rot        (writes the cache in place)
    decode_attention(q, k_cache, v_cache, start, end, scale=None)   -> out [B, H, D]
    sample_logits(logits, temperature, seed, offset)                -> (tokens [B] int64, logprobs [B] fp32)
    silu_mul(gu)                                                    -> silu(gu[..., :F]) * gu[..., F:]

All math is fp32 (bf16/fp16 inputs are loaded and cast at once); outputs come back in the input dtype (a fused
norm's in the residual stream's). Each wrapper plans its launches as data (octo_kernels/launch.py), so the launch a GPU
would run can be compiled for sm_80/86/89/90 without one (tests/test_gpu_compile.py).
"""
from __future__ import annotations

import torch

from octo_kernels import decode_attention as _attn
from octo_kernels import rms_norm as _norm
from octo_kernels import rope as _rope
from octo_kernels import sampling as _sampling
from octo_kernels import swiglu as _swiglu
from octo_kernels.decode_attention import choose_num_splits, decode_attention_torch, decode_attention_triton
from octo_kernels.dispatch import ENV_VAR, HAVE_TRITON, INTERPRET, resolve_impl
from octo_kernels.rms_norm import rms_norm_torch, rms_norm_triton
from octo_kernels.rope import rope_cache_update_torch, rope_cache_update_triton
from octo_kernels.sampling import philox_uniforms, sample_logits_torch, sample_logits_triton
from octo_kernels.swiglu import silu_mul_torch, silu_mul_triton

__all__ = ["rms_norm", "rope_cache_update", "decode_attention", "sample_logits", "silu_mul", "resolve_impl",
           "choose_num_splits", "philox_uniforms", "ENV_VAR", "HAVE_TRITON", "INTERPRET"]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None,
             impl: str | None = None, y_dtype: torch.dtype | None = None):
    """x [..., D], weight [D]. Without residual: y = weight * (x * rsqrt(mean(x^2) + eps)) (HF LlamaRMSNorm:
    normalise in fp32, round to x.dtype, then scale), y in x.dtype. With residual: h = x + residual (fp32 add,
    rounded to promote_types(x, residual): an fp32 stream stays fp32 under bf16 autocast), returns (rms_norm(h), h)
    with y in h's dtype. y_dtype: y in that dtype instead (rounded once from fp32, as a cast after would round it:
    the decode path hands the bf16 matmul that follows a bf16 y, one launch fewer under autocast)."""
    _norm._check(x, weight, residual)
    if resolve_impl(impl, x.device) == "triton":
        return rms_norm_triton(x, weight, eps, residual, y_dtype)
    return rms_norm_torch(x, weight, eps, residual, y_dtype)


def rope_cache_update(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      k_cache: torch.Tensor, v_cache: torch.Tensor, slot: int, impl: str | None = None):
    """q [B, T, H, D], k/v [B, T, Hkv, D], cos/sin broadcastable to [B, T, D/2] (fp32, HF rotate_half pairing of
    dims i and i + D/2). Writes rotated k and raw v into k_cache/v_cache[:, :, slot:slot+T] ([B, Hkv, S, D]) and
    returns the rotated q [B, T, H, D] in q.dtype."""
    _rope._check(q, k, v, cos, sin, k_cache, v_cache, slot)
    if resolve_impl(impl, q.device) == "triton":
        return rope_cache_update_triton(q, k, v, cos, sin, k_cache, v_cache, slot)
    return rope_cache_update_torch(q, k, v, cos, sin, k_cache, v_cache, slot)


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, start: torch.Tensor, end: int,
                     scale: float | None = None, impl: str | None = None, num_splits: int | None = None):
    """One query token per row: q [B, H, D] attends (GQA: head h uses kv head h // (H / Hkv)) over cache slots
    start[b] .. end-1 of k_cache/v_cache [B, Hkv, S, D]; scale defaults to 1/sqrt(D). Returns [B, H, D] in
    q.dtype; a row with no keys (start[b] >= end) gets zeros. num_splits (triton only) overrides the
    flash-decoding split heuristic (choose_num_splits)."""
    _attn._check(q, k_cache, v_cache, start, end, num_splits)
    if resolve_impl(impl, q.device) == "triton":
        return decode_attention_triton(q, k_cache, v_cache, start, end, scale, num_splits)
    return decode_attention_torch(q, k_cache, v_cache, start, end, scale)


def sample_logits(logits: torch.Tensor, temperature: float, seed: int | torch.Tensor, offset: int,
                  impl: str | None = None):
    """logits [B, V] -> (tokens [B] int64, logprobs [B] fp32). temperature 0: argmax (ties -> lowest index),
    logprob under softmax(logits). temperature > 0: Gumbel-max draw from softmax(logits / temperature) with
    Philox noise keyed by (seed, offset, row, column) (a per-row seed tensor [B] drops the row from the key);
    logprob of the chosen token under softmax(logits / temperature). No top-k / top-p here (sample.py does
    those in torch). Both implementations draw the same uniforms."""
    _sampling._check(logits, temperature, seed, offset)
    if isinstance(seed, torch.Tensor) and seed.device != logits.device:
        raise ValueError(f"sample_logits: seed tensor on {seed.device}, logits on {logits.device}")
    if resolve_impl(impl, logits.device) == "triton":
        return sample_logits_triton(logits, temperature, seed, offset)
    return sample_logits_torch(logits, temperature, seed, offset)


def silu_mul(gu: torch.Tensor, impl: str | None = None):
    """gu [..., 2F] (a fused gate/up projection's output) -> silu(gate) * up [..., F] in gu.dtype, rounded as
    torch's F.silu(gate) * up."""
    _swiglu._check(gu)
    if resolve_impl(impl, gu.device) == "triton":
        return silu_mul_triton(gu)
    return silu_mul_torch(gu)
