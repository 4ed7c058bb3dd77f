"""
Decode attention (one new query token per row) over the KV cache, flash-decoding style, with GQA.

    q [B, H, D], k_cache/v_cache [B, Hkv, S, D], start [B] int64, end int  ->  out [B, H, D] in q.dtype
    out[b, h] = softmax(scale * q[b, h] . K[b, h // G, s] for s in start[b] .. end-1) @ V[b, h // G, s]

A row whose range is empty (start[b] >= end) gets zeros: there is nothing to attend to, and zeros (rather than
NaN) keep a dead row from poisoning anything that is later reduced over the batch.

Paged cache (kvcache.py): decode_attention_paged reads pools [num_blocks, Hkv, PAGE, D] through a block table
[B, W]: row b's key s lives in block table[b, s // PAGE] at offset s % PAGE, and row b attends to keys
0 .. lens[b]-1. Same kernel with PAGE = block size (the START pointer then carries lens); PAGE = 0 is the
contiguous cache, compiled without the table loads.

Design (memory-bound: every K/V byte is read exactly once):
  1. _partials_kernel, grid (B, Hkv, num_splits). Each row's own range [start[b], end) is cut into num_splits
     chunks (a multiple of BLOCK_N keys each, so only a chunk's last tile is partial; trailing chunks of short rows
     are empty). A program owns one kv head and ALL of its G query heads, so a K/V tile is loaded once and used by
     the G heads; it runs an online softmax over its chunk and writes fp32 (max, sum, acc) partials.
  2. _reduce_kernel, grid (B, H): rescales the partials to the common max and normalises. With num_splits == 1
     the first kernel writes the final output itself and the reduce launch is skipped.
Scores are kept in log2 units (q is pre-multiplied by scale * log2(e)) so the softmax uses exp2.

Why tl.dot with the G query heads padded to BLOCK_G >= 16 rows (masked) rather than a multiply-and-sum reduction:
the reduction needs a [G, BLOCK_N, D] register tile (64K fp32 for G=8, N=64, D=128: spills), while tl.dot streams
the K/V tile through shared memory into tensor cores. Padding wastes only FLOPs, and this kernel is bound by HBM
bandwidth, not FLOPs (G=8 of 16 rows busy is still far under the tensor-core roof). It also meets the GPU's
M/N/K >= 16 rule for every G (BLOCK_N, BLOCK_D >= 16 too).
Precision: tiles are loaded in the cache dtype and cast to fp32 at once (the interpreter's bf16 math is wrong,
and fp32 is what we want anyway). For bf16/fp16 caches the dots run as TF32: bf16 values are exact in TF32, so
q.k products are exact with fp32 accumulation, and the softmax weights P keep 10 mantissa bits (standard
FlashAttention rounds P to bf16's 7). fp32 caches use exact IEEE fp32 dots.
"""
from __future__ import annotations

import math

import torch

from octo_kernels.dispatch import cast_rne, cdiv, jit, next_pow2, num_sms, tl
from octo_kernels.launch import Launch, device_cc, run, smem_limit

LOG2E = 1.4426950408889634
MIN_KEYS_PER_SPLIT = 256  # below this a split's fixed cost (q load, partial write, reduce) outweighs its keys
MAX_SPLITS = 64


def choose_num_splits(batch: int, n_kv_heads: int, max_keys: int, sm_count: int, block_n: int = 64) -> int:
    """How many chunks to cut each row's keys into. The (B, Hkv) grid alone leaves most SMs idle when
    B * Hkv is small (B=1, Hkv=8 uses 8 of an H100's 132 SMs), so add splits until there are about two waves of
    programs, but keep each split at least MIN_KEYS_PER_SPLIT keys (and a whole BLOCK_N tile) long. Rounded down
    to a power of two: NUM_SPLITS is a compile-time constant, so this bounds the compiled variants to 7."""
    programs = max(1, batch * n_kv_heads)
    for_occupancy = cdiv(2 * sm_count, programs)
    for_length = max(1, max_keys // max(MIN_KEYS_PER_SPLIT, block_n))
    n = max(1, min(for_occupancy, for_length, MAX_SPLITS))
    return 1 << (n.bit_length() - 1)


def decode_attention_torch(q, k_cache, v_cache, start, end, scale=None):
    """Plain-torch reference; same contract as decode_attention."""
    B, H, D = q.shape
    Hkv = k_cache.shape[1]
    G = H // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    k = k_cache[:, :, :end].float()  # [B, Hkv, end, D]
    v = v_cache[:, :, :end].float()
    qg = q.float().view(B, Hkv, G, D)  # query head h = kv head h // G, member h % G
    scores = torch.einsum("bkgd,bksd->bkgs", qg, k) * scale  # [B, Hkv, G, end]
    valid = torch.arange(end, device=q.device)[None, :] >= start[:, None]  # [B, end]
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    p = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # an all-masked (empty) row softmaxes to NaN -> zeros
    out = torch.einsum("bkgs,bksd->bkgd", p, v)
    return out.reshape(B, H, D).to(q.dtype)


@jit
def _partials_kernel(Q, K, V, START, TABLE, M_OUT, L_OUT, ACC_OUT, OUT, end, qk_scale,
                     sq_b, sq_h, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, so_b, so_h, st_b,
                     G: tl.constexpr, D: tl.constexpr, NUM_SPLITS: tl.constexpr, BLOCK_G: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, PAGE: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    kvh = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2)
    if PAGE > 0:  # paged: keys 0 .. lens[b]-1, lens passed as START
        row_start = 0
        row_end = tl.load(START + b).to(tl.int32)
    else:
        row_start = tl.maximum(tl.load(START + b).to(tl.int32), 0)  # a negative start means "from slot 0"
        row_end = end
    n = tl.maximum(row_end - row_start, 0)
    chunk = tl.cdiv(tl.cdiv(n, NUM_SPLITS), BLOCK_N) * BLOCK_N  # whole tiles per split
    lo = row_start + split * chunk
    hi = tl.minimum(lo + chunk, row_end)

    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    gmask = g < G
    dmask = d < D
    heads = kvh * G + g  # query heads served by this kv head
    q = tl.load(Q + b * sq_b + heads[:, None] * sq_h + d[None, :], mask=gmask[:, None] & dmask[None, :], other=0.0)
    q = q.to(tl.float32) * qk_scale  # [BLOCK_G, BLOCK_D], log2 units
    if PAGE > 0:  # the block (dim 0 of the pools) comes from the table, per key
        k_base = K + kvh * sk_h
        v_base = V + kvh * sv_h
    else:
        k_base = K + b * sk_b + kvh * sk_h
        v_base = V + b * sv_b + kvh * sv_h

    m = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    n_off = tl.arange(0, BLOCK_N)
    for s0 in range(lo, hi, BLOCK_N):  # zero trips for an empty split: partials stay (-inf, 0, 0)
        s = s0 + n_off
        smask = s < hi
        kv_mask = smask[:, None] & dmask[None, :]
        if PAGE > 0:
            blk = tl.load(TABLE + b * st_b + s // PAGE, mask=smask, other=0).to(tl.int64)  # [BLOCK_N]
            k_off = blk * sk_b + (s % PAGE).to(tl.int64) * sk_s
            v_off = blk * sv_b + (s % PAGE).to(tl.int64) * sv_s
        else:
            k_off = s.to(tl.int64) * sk_s
            v_off = s.to(tl.int64) * sv_s
        k = tl.load(k_base + k_off[:, None] + d[None, :], mask=kv_mask, other=0.0)
        qk = tl.dot(q, tl.trans(k.to(tl.float32)), input_precision=PRECISION)  # [BLOCK_G, BLOCK_N]
        qk = tl.where(smask[None, :], qk, float("-inf"))
        m_new = tl.maximum(m, tl.max(qk, axis=1))  # finite: every tile has >= 1 valid key
        alpha = tl.exp2(m - m_new)  # 0 on the first tile (m = -inf)
        p = tl.exp2(qk - m_new[:, None])
        l = l * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + v_off[:, None] + d[None, :], mask=kv_mask, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision=PRECISION)
        m = m_new

    out_mask = gmask[:, None] & dmask[None, :]
    if NUM_SPLITS == 1:  # the only split: normalise here and skip the reduce launch
        denom = tl.where(l > 0, l, 1.0)  # l == 0 only for an empty row, whose acc is 0 -> zeros
        out = acc / denom[:, None]
        dst = OUT + b * so_b + heads[:, None] * so_h + d[None, :]
        tl.store(dst, cast_rne(out, OUT.dtype.element_ty), mask=out_mask)
    else:
        # partials are [B, H, NUM_SPLITS] (+ [D] for acc), contiguous
        p_idx = (b * (tl.num_programs(1) * G) + heads) * NUM_SPLITS + split
        tl.store(M_OUT + p_idx, m, mask=gmask)
        tl.store(L_OUT + p_idx, l, mask=gmask)
        tl.store(ACC_OUT + p_idx[:, None] * D + d[None, :], acc, mask=out_mask)


@jit
def _reduce_kernel(M_IN, L_IN, ACC_IN, OUT, so_b, so_h,
                   D: tl.constexpr, NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    base = (b * tl.num_programs(1) + h) * NUM_SPLITS
    sp = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    smask = sp < NUM_SPLITS
    dmask = d < D
    m = tl.load(M_IN + base + sp, mask=smask, other=float("-inf"))
    l = tl.load(L_IN + base + sp, mask=smask, other=0.0)
    acc = tl.load(ACC_IN + (base + sp)[:, None] * D + d[None, :], mask=smask[:, None] & dmask[None, :], other=0.0)
    m_all = tl.max(m, axis=0)
    m_all = tl.where(m_all == float("-inf"), 0.0, m_all)  # empty row: avoid -inf - -inf = NaN
    w = tl.exp2(m - m_all)  # empty splits (m = -inf) weigh 0
    total = tl.sum(w * l, axis=0)
    out = tl.sum(w[:, None] * acc, axis=0) / tl.where(total > 0, total, 1.0)  # empty row -> zeros
    tl.store(OUT + b * so_b + h * so_h + d, cast_rne(out, OUT.dtype.element_ty), mask=dmask)


def _check(q, k_cache, v_cache, start, end, num_splits):
    if q.dim() != 3 or k_cache.dim() != 4:
        raise ValueError(f"decode_attention: q must be [B, H, D] and k_cache [B, Hkv, S, D], got "
                         f"{tuple(q.shape)}, {tuple(k_cache.shape)}")
    B, H, D = q.shape
    Bk, Hkv, S, Dk = k_cache.shape
    if Bk != B or Dk != D:
        raise ValueError(f"decode_attention: k_cache {tuple(k_cache.shape)} does not match q {tuple(q.shape)}")
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"decode_attention: v_cache {tuple(v_cache.shape)} != k_cache {tuple(k_cache.shape)}")
    if Hkv == 0 or H % Hkv:
        raise ValueError(f"decode_attention: {H} query heads is not a multiple of {Hkv} kv heads")
    if start.shape != (B,) or start.dtype != torch.int64:
        raise ValueError(f"decode_attention: start must be int64 [B={B}], got {start.dtype} {tuple(start.shape)}")
    if not isinstance(end, int) or not 0 <= end <= S:
        raise ValueError(f"decode_attention: end must be an int in [0, S={S}], got {end!r}")
    devs = {t.device for t in (q, k_cache, v_cache, start)}
    if len(devs) != 1:
        raise ValueError(f"decode_attention: all tensors must be on one device, got {sorted(map(str, devs))}")
    if num_splits is not None and (not isinstance(num_splits, int) or num_splits < 1):
        raise ValueError(f"decode_attention: num_splits must be a positive int, got {num_splits!r}")


# (BLOCK_N, num_stages) in order of preference: 64-key tiles with 2 tiles of K and V in flight; smaller tiles
# before fewer stages, because the loads of a memory-bound loop must stay pipelined
TILE_CHOICES = ((64, 3), (32, 3), (16, 3), (16, 2))


def smem_estimate(block_n: int, num_stages: int, D: int, block_g: int, cache_bytes: int, fp32_dot: bool) -> int:
    """Shared memory (bytes) of _partials_kernel as Triton lays it out (fitted to its compiled metadata, checked
    against it by tests/test_gpu_compile.py): num_stages - 1 buffered [BLOCK_N, D] K and V tiles in the cache
    dtype, an fp32 copy of a tile when an ieee dot takes a 16-bit cache, and the [BLOCK_G, D] q and
    [BLOCK_G, BLOCK_N] p dot operands in fp32; plus 1 KiB for reduction scratch."""
    tiles = (num_stages - 1) * 2 * block_n * D * cache_bytes
    convert = block_n * D * 4 if fp32_dot and cache_bytes < 4 else 0
    return tiles + convert + block_g * D * 4 + block_g * block_n * 4 + 1024


def tile_config(D: int, block_g: int, cache_bytes: int, fp32_dot: bool, limit: int, block_n: int | None = None):
    """(BLOCK_N, num_stages): the first of TILE_CHOICES (or the given block_n, with the most stages) whose shared
    memory fits `limit` bytes. An fp32 cache at D=128 needs ~140 KiB with 64-key tiles and 3 stages: fine on
    sm_80 / sm_90, over the 99 KiB of sm_86 / sm_89, which get 32-key tiles."""
    choices = TILE_CHOICES if block_n is None else ((block_n, 3), (block_n, 2))
    for bn, stages in choices:
        if smem_estimate(bn, stages, D, block_g, cache_bytes, fp32_dot) <= limit:
            return bn, stages
    raise ValueError(f"decode_attention: head_dim {D} needs more shared memory than the target's {limit} bytes "
                     "even with 16-key tiles; use a bf16 KV cache")


def plan_decode_attention(q, k_cache, v_cache, start, end, scale=None, num_splits=None, block_n=None, cc=None,
                          sm_count=1, block_table=None):
    """out [B, H, D] (allocated like q), fp32 partials when split, and the launches that fill out (the partials
    kernel, then the reduce kernel when num_splits > 1; none for an empty batch). cc: the target's compute
    capability (None: the interpreter); sm_count feeds the split heuristic. block_table [B, W]: the caches are
    paged pools, start holds each row's key count and end bounds them (W * block size)."""
    B, H, D = q.shape
    Hkv = k_cache.shape[1]
    G = H // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    q = q if q.stride(-1) == 1 else q.contiguous()
    k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (k_cache, v_cache))
    start = start.contiguous()
    out = torch.empty(B, H, D, dtype=q.dtype, device=q.device)
    if B * H == 0:
        return out, []
    if block_n is not None and (block_n < 16 or block_n & (block_n - 1)):
        raise ValueError(f"decode_attention: block_n must be a power of two >= 16 (tl.dot), got {block_n}")
    BLOCK_G = max(16, next_pow2(G))
    BLOCK_D = max(16, next_pow2(D))
    exact = torch.float32 in (q.dtype, k.dtype, v.dtype)
    precision = "ieee" if exact else "tf32"
    BLOCK_N, num_stages = tile_config(BLOCK_D, BLOCK_G, k.element_size(), exact, smem_limit(cc), block_n)
    if num_splits is None:
        # end bounds every row's length without a device sync (start's values stay on the device)
        num_splits = choose_num_splits(B, Hkv, end, sm_count, BLOCK_N)
    if num_splits > 1:
        m = torch.empty(B, H, num_splits, dtype=torch.float32, device=q.device)
        l = torch.empty_like(m)
        acc = torch.empty(B, H, num_splits, D, dtype=torch.float32, device=q.device)
    else:  # unused by the kernel (it writes out directly), but it needs pointers
        m = l = acc = out
    extra = {"num_stages": num_stages} if cc is not None else {}  # the interpreter has no pipeline
    launches = [Launch(_partials_kernel, (B, Hkv, num_splits),
                       (q, k, v, start, start if block_table is None else block_table, m, l, acc, out, end,
                        scale * LOG2E, q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
                        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1),
                        0 if block_table is None else block_table.stride(0)),
                       dict(G=G, D=D, NUM_SPLITS=num_splits, BLOCK_G=BLOCK_G, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D,
                            PRECISION=precision, PAGE=0 if block_table is None else k.shape[2], num_warps=4,
                            **extra))]
    if num_splits > 1:
        launches.append(Launch(_reduce_kernel, (B, H), (m, l, acc, out, out.stride(0), out.stride(1)),
                               dict(D=D, NUM_SPLITS=num_splits, BLOCK_S=next_pow2(num_splits), BLOCK_D=BLOCK_D,
                                    num_warps=4)))
    return out, launches


def decode_attention_triton(q, k_cache, v_cache, start, end, scale=None, num_splits=None, block_n=None,
                            block_table=None):
    """block_n overrides the key-tile size (tests use 16 so that short caches still span several splits).
    block_table: paged pools (see plan_decode_attention)."""
    cuda = q.device.type == "cuda"
    out, launches = plan_decode_attention(q, k_cache, v_cache, start, end, scale, num_splits, block_n,
                                          device_cc(q.device), num_sms(q.device) if cuda else 1, block_table)
    for launch in launches:  # interpreter: one split unless asked (sm_count 1)
        run(launch)
    return out


def decode_attention_paged_torch(q, k_pool, v_pool, block_table, lens, scale=None):
    """Plain-torch reference of decode_attention_paged: gather each row's blocks, then attend to keys < lens[b]."""
    B, W = block_table.shape
    NB, Hkv, PAGE, D = k_pool.shape
    k = k_pool[block_table].permute(0, 2, 1, 3, 4).reshape(B, Hkv, W * PAGE, D)  # [B, W, Hkv, PAGE, D] -> rows
    v = v_pool[block_table].permute(0, 2, 1, 3, 4).reshape(B, Hkv, W * PAGE, D)
    # keys lens[b] .. end-1 are another row's or nobody's: masked by shifting the window so it ends at lens[b]
    end = W * PAGE
    shift = end - lens  # [B]
    idx = (torch.arange(end, device=q.device)[None, :] - shift[:, None]) % end  # row b's keys end at slot end-1
    k = k.gather(2, idx[:, None, :, None].expand(B, Hkv, end, D))
    v = v.gather(2, idx[:, None, :, None].expand(B, Hkv, end, D))
    return decode_attention_torch(q, k, v, shift, end, scale)


def _check_paged(q, k_pool, v_pool, block_table, lens):
    if q.dim() != 3 or k_pool.dim() != 4 or v_pool.shape != k_pool.shape:
        raise ValueError(f"decode_attention (paged): q [B, H, D] and pools [NB, Hkv, PAGE, D] expected, got "
                         f"{tuple(q.shape)}, {tuple(k_pool.shape)}, {tuple(v_pool.shape)}")
    B, H, D = q.shape
    if k_pool.shape[3] != D or H % k_pool.shape[1]:
        raise ValueError(f"decode_attention (paged): pools {tuple(k_pool.shape)} do not match q {tuple(q.shape)}")
    if block_table.dim() != 2 or block_table.shape[0] != B or block_table.dtype != torch.int64:
        raise ValueError(f"decode_attention (paged): block_table must be int64 [B={B}, W], got "
                         f"{block_table.dtype} {tuple(block_table.shape)}")
    if lens.shape != (B,) or lens.dtype != torch.int64:
        raise ValueError(f"decode_attention (paged): lens must be int64 [B={B}], got {lens.dtype} {tuple(lens.shape)}")
    devs = {t.device for t in (q, k_pool, v_pool, block_table, lens)}
    if len(devs) != 1:
        raise ValueError(f"decode_attention (paged): all tensors must be on one device, got {sorted(map(str, devs))}")


def decode_attention_paged(q, k_pool, v_pool, block_table, lens, scale=None, impl=None, num_splits=None,
                           block_n=None):
    """One query token per row over a paged cache: q [B, H, D] attends to row b's keys 0 .. lens[b]-1, key s in
    block block_table[b, s // PAGE] of the pools [NB, Hkv, PAGE, D] at offset s % PAGE. -> [B, H, D] in q.dtype
    (zeros for lens[b] == 0). Every lens[b] must be <= block_table.shape[1] * PAGE (not checked: no device sync)."""
    from octo_kernels.dispatch import resolve_impl
    _check_paged(q, k_pool, v_pool, block_table, lens)
    if resolve_impl(impl, q.device) != "triton":
        return decode_attention_paged_torch(q, k_pool, v_pool, block_table, lens, scale)
    end = block_table.shape[1] * k_pool.shape[2]  # bounds every row's length (for the split heuristic)
    return decode_attention_triton(q, k_pool, v_pool, lens.contiguous(), end, scale, num_splits, block_n,
                                   block_table.contiguous())
