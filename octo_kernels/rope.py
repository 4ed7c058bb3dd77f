"""
Rotary embedding of q and k fused with the KV-cache write (HF Llama's rotate_half convention).

    out[..., i]       = x[..., i] * cos[i] - x[..., i + D/2] * sin[i]        i < D/2
    out[..., i + D/2] = x[..., i + D/2] * cos[i] + x[..., i] * sin[i]

cos/sin are [B, T, D/2] fp32 (model.py computes them), or anything that broadcasts to that. Math in fp32; q_rot is
rounded to q.dtype, rotated k and raw v are rounded to the cache dtype and written to cache slots slot .. slot+T.

Paged cache (kvcache.py): rope_cache_update_paged writes token (b, t) to flat slot slots[b, t] of block pools
[num_blocks, Hkv, block_size, D] (block slots // block_size, offset slots % block_size): the same kernel with
PAGE = block_size (PAGE = 0 is the contiguous cache above, compiled without the slot load).

Kernel: grid (B*T tokens, q-head blocks + kv-head blocks). A program loads its token's cos/sin once and either
rotates BLOCK_H query heads, or rotates BLOCK_H key heads and copies the matching value heads into the cache, so one
launch reads q, k, v once and writes q_rot and the cache once. Tiles are [BLOCK_H, D/2] halves: each head row is
D contiguous elements, loads are coalesced along D.
"""
from __future__ import annotations

import torch

from octo_kernels.dispatch import cast_rne, cdiv, jit, next_pow2, tl
from octo_kernels.launch import Launch, device_cc, run

TILE_ELEMS = 2048  # elements per [BLOCK_H, D] tile: 16 fp32 per thread at 4 warps


def _rotate(x, cos, sin):
    """x [B, T, H, D] -> same shape in fp32; cos/sin [B, T, D/2]."""
    x1, x2 = x.float().chunk(2, dim=-1)
    c, s = cos[:, :, None, :].float(), sin[:, :, None, :].float()  # broadcast over heads
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


def rope_cache_update_torch(q, k, v, cos, sin, k_cache, v_cache, slot):
    """Plain-torch reference; same contract as rope_cache_update (slot a tensor [B, T]: the paged one)."""
    B, T = q.shape[:2]
    cos, sin = _broadcast_cos_sin(cos, sin, B, T, q.shape[-1])
    if isinstance(slot, torch.Tensor):
        page, flat = k_cache.shape[2], slot.reshape(-1)  # [B*T]
        Hkv, D = k.shape[2:]
        k_cache[flat // page, :, flat % page] = _rotate(k, cos, sin).to(k_cache.dtype).reshape(B * T, Hkv, D)
        v_cache[flat // page, :, flat % page] = v.to(v_cache.dtype).reshape(B * T, Hkv, D)
        return _rotate(q, cos, sin).to(q.dtype)
    k_cache[:, :, slot:slot + T] = _rotate(k, cos, sin).to(k_cache.dtype).transpose(1, 2)  # [B, Hkv, T, D]
    v_cache[:, :, slot:slot + T] = v.to(v_cache.dtype).transpose(1, 2)
    return _rotate(q, cos, sin).to(q.dtype)


@jit
def _rope_cache_kernel(Q, K, V, COS, SIN, QO, KC, VC, SLOTS, T, H, HKV, slot,
                       sq_b, sq_t, sq_h, sk_b, sk_t, sk_h, sv_b, sv_t, sv_h,
                       sc_b, sc_t, ss_b, ss_t,
                       sqo_b, sqo_t, sqo_h, skc_b, skc_h, skc_s, svc_b, svc_h, svc_s,
                       HALF: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_H: tl.constexpr,
                       N_QBLOCKS: tl.constexpr, PAGE: tl.constexpr):
    tok = tl.program_id(0)
    blk = tl.program_id(1)
    b = (tok // T).to(tl.int64)
    t = (tok % T).to(tl.int64)
    d = tl.arange(0, BLOCK_HALF)
    dmask = d < HALF
    c = tl.load(COS + b * sc_b + t * sc_t + d, mask=dmask, other=0.0).to(tl.float32)[None, :]
    s = tl.load(SIN + b * ss_b + t * ss_t + d, mask=dmask, other=0.0).to(tl.float32)[None, :]
    hh = tl.arange(0, BLOCK_H)
    # Each arm below names its own pointers: q_rot and the cache may differ in dtype (bf16 q, fp32 cache), and a
    # variable assigned in both arms of a runtime `if` must have one type there (the compiler rejects it; the
    # interpreter never notices, it runs one arm).
    if blk < N_QBLOCKS:  # query heads
        h = blk * BLOCK_H + hh
        m = (h < H)[:, None] & dmask[None, :]
        q_src = Q + b * sq_b + t * sq_t + h[:, None] * sq_h + d[None, :]
        x1 = tl.load(q_src, mask=m, other=0.0).to(tl.float32)
        x2 = tl.load(q_src + HALF, mask=m, other=0.0).to(tl.float32)
        q_dst = QO + b * sqo_b + t * sqo_t + h[:, None] * sqo_h + d[None, :]
        tl.store(q_dst, cast_rne(x1 * c - x2 * s, QO.dtype.element_ty), mask=m)
        tl.store(q_dst + HALF, cast_rne(x2 * c + x1 * s, QO.dtype.element_ty), mask=m)
    else:  # key heads (rotated) and value heads (copied) into cache slot + t
        hk = (blk - N_QBLOCKS) * BLOCK_H + hh
        mk = (hk < HKV)[:, None] & dmask[None, :]
        k_src = K + b * sk_b + t * sk_t + hk[:, None] * sk_h + d[None, :]
        k1 = tl.load(k_src, mask=mk, other=0.0).to(tl.float32)
        k2 = tl.load(k_src + HALF, mask=mk, other=0.0).to(tl.float32)
        if PAGE > 0:  # paged: the token's flat slot picks (block, offset); blocks are the cache's dim 0
            flat = tl.load(SLOTS + tok).to(tl.int64)
            kc_row = KC + (flat // PAGE) * skc_b + (flat % PAGE) * skc_s
            vc_row = VC + (flat // PAGE) * svc_b + (flat % PAGE) * svc_s
        else:
            kc_row = KC + b * skc_b + (slot + t) * skc_s
            vc_row = VC + b * svc_b + (slot + t) * svc_s
        k_dst = kc_row + hk[:, None] * skc_h + d[None, :]
        tl.store(k_dst, cast_rne(k1 * c - k2 * s, KC.dtype.element_ty), mask=mk)
        tl.store(k_dst + HALF, cast_rne(k2 * c + k1 * s, KC.dtype.element_ty), mask=mk)
        v_src = V + b * sv_b + t * sv_t + hk[:, None] * sv_h + d[None, :]
        v_dst = vc_row + hk[:, None] * svc_h + d[None, :]
        v1 = tl.load(v_src, mask=mk, other=0.0).to(tl.float32)  # a plain copy; fp32 holds any bf16/fp16 exactly
        v2 = tl.load(v_src + HALF, mask=mk, other=0.0).to(tl.float32)
        tl.store(v_dst, cast_rne(v1, VC.dtype.element_ty), mask=mk)
        tl.store(v_dst + HALF, cast_rne(v2, VC.dtype.element_ty), mask=mk)


def _broadcast_cos_sin(cos, sin, B, T, D):
    """cos/sin broadcastable to [B, T, D/2] -> expanded views [B, T, D/2] (stride 0 on broadcast dims)."""
    want = (B, T, D // 2)
    out = []
    for name, t in (("cos", cos), ("sin", sin)):
        if t.dim() > 3 or t.shape[-1] != D // 2:
            raise ValueError(f"rope: {name} must broadcast to [B, T, D/2] = {list(want)}, got {tuple(t.shape)}")
        try:
            out.append(t.expand(want) if t.dim() == 3 else t.reshape((1,) * (3 - t.dim()) + tuple(t.shape))
                       .expand(want))
        except RuntimeError:
            raise ValueError(f"rope: {name} shape {tuple(t.shape)} does not broadcast to {list(want)}") from None
    return out


def _check(q, k, v, cos, sin, k_cache, v_cache, slot):
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"rope: q [B, T, H, D] and k [B, T, Hkv, D] must be 4-d, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}")
    B, T, H, D = q.shape
    if k.shape[:2] != (B, T) or k.shape[3] != D:
        raise ValueError(f"rope: k shape {tuple(k.shape)} does not match q {tuple(q.shape)} in B, T, D")
    if v.shape != k.shape:
        raise ValueError(f"rope: v shape {tuple(v.shape)} != k shape {tuple(k.shape)}")
    if D % 2:
        raise ValueError(f"rope: head dim must be even, got {D}")
    Hkv = k.shape[2]
    if k_cache.dim() != 4 or k_cache.shape[0] != B or k_cache.shape[1] != Hkv or k_cache.shape[3] != D:
        raise ValueError(f"rope: k_cache must be [B={B}, Hkv={Hkv}, S, D={D}], got {tuple(k_cache.shape)}")
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"rope: v_cache shape {tuple(v_cache.shape)} != k_cache {tuple(k_cache.shape)}")
    if not isinstance(slot, int) or slot < 0 or slot + T > k_cache.shape[2]:
        raise ValueError(f"rope: slot {slot!r} + T={T} must fit in the cache's {k_cache.shape[2]} slots")
    devs = {t.device for t in (q, k, v, cos, sin, k_cache, v_cache)}
    if len(devs) != 1:
        raise ValueError(f"rope: all tensors must be on one device, got {sorted(map(str, devs))}")


def plan_rope_cache_update(q, k, v, cos, sin, k_cache, v_cache, slot, cc=None):
    """q_rot (allocated like q) and the Launch that fills it and writes the cache (None when B * T == 0).
    slot: an int (contiguous cache [B, Hkv, S, D]) or int64 slots [B, T] (paged pools [NB, Hkv, PAGE, D]).
    cc: the target's compute capability (unused: no shared-memory tiles; kept for the common plan signature)."""
    B, T, H, D = q.shape
    Hkv = k.shape[2]
    cos, sin = _broadcast_cos_sin(cos, sin, B, T, D)
    # kernels index the last dim with unit stride; everything else goes through strides (no copies for views)
    q, k, v, cos, sin = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v, cos, sin))
    for name, c in (("k_cache", k_cache), ("v_cache", v_cache)):
        if c.stride(-1) != 1:
            raise ValueError(f"rope: {name} must have unit stride on D (it is written in place)")
    q_rot = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if B * T == 0:
        return q_rot, None
    BLOCK_HALF = next_pow2(D // 2)
    BLOCK_H = max(1, min(next_pow2(max(H, Hkv)), TILE_ELEMS // (2 * BLOCK_HALF)))
    n_q, n_kv = cdiv(H, BLOCK_H), cdiv(Hkv, BLOCK_H)
    paged = isinstance(slot, torch.Tensor)
    slots = slot.reshape(-1).contiguous() if paged else cos  # cos: a dummy pointer, never read when PAGE = 0
    args = (q, k, v, cos, sin, q_rot, k_cache, v_cache, slots, T, H, Hkv, 0 if paged else slot,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), cos.stride(0), cos.stride(1), sin.stride(0), sin.stride(1),
            q_rot.stride(0), q_rot.stride(1), q_rot.stride(2),
            k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            v_cache.stride(0), v_cache.stride(1), v_cache.stride(2))
    return q_rot, Launch(_rope_cache_kernel, (B * T, n_q + n_kv), args,
                         dict(HALF=D // 2, BLOCK_HALF=BLOCK_HALF, BLOCK_H=BLOCK_H, N_QBLOCKS=n_q,
                              PAGE=k_cache.shape[2] if paged else 0, num_warps=4))


def rope_cache_update_triton(q, k, v, cos, sin, k_cache, v_cache, slot):
    q_rot, launch = plan_rope_cache_update(q, k, v, cos, sin, k_cache, v_cache, slot, device_cc(q.device))
    if launch is not None:
        run(launch)
    return q_rot


def _check_paged(q, k, v, cos, sin, k_pool, v_pool, slots):
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape or k_pool.dim() != 4 or v_pool.shape != k_pool.shape:
        raise ValueError(f"rope (paged): q [B, T, H, D], k/v [B, T, Hkv, D], pools [NB, Hkv, PAGE, D] expected, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(k_pool.shape)}")
    B, T, _, D = q.shape
    if k_pool.shape[1] != k.shape[2] or k_pool.shape[3] != D or D % 2:
        raise ValueError(f"rope (paged): pool {tuple(k_pool.shape)} does not match k {tuple(k.shape)}")
    if slots.shape != (B, T) or slots.dtype != torch.int64:
        raise ValueError(f"rope (paged): slots must be int64 [B={B}, T={T}], got {slots.dtype} {tuple(slots.shape)}")
    devs = {t.device for t in (q, k, v, cos, sin, k_pool, v_pool, slots)}
    if len(devs) != 1:
        raise ValueError(f"rope (paged): all tensors must be on one device, got {sorted(map(str, devs))}")


def rope_cache_update_paged(q, k, v, cos, sin, k_pool, v_pool, slots, impl=None):
    """rope_cache_update for a paged cache: token (b, t)'s rotated k and raw v go to flat slot slots[b, t] of the
    pools [NB, Hkv, PAGE, D] (kvcache.PagedKVCache.slot_mapping); -> rotated q [B, T, H, D] in q.dtype."""
    from octo_kernels.dispatch import resolve_impl
    _check_paged(q, k, v, cos, sin, k_pool, v_pool, slots)
    if resolve_impl(impl, q.device) == "triton":
        return rope_cache_update_triton(q, k, v, cos, sin, k_pool, v_pool, slots)
    return rope_cache_update_torch(q, k, v, cos, sin, k_pool, v_pool, slots)
