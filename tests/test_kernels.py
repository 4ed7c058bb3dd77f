"""
octo_kernels/: every Triton kernel (run by the interpreter on CPU tensors, TRITON_INTERPRET=1 from conftest) against
its torch reference and against independent textbook formulas; plus the dispatch rules.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import octo_kernels
from octo_kernels.decode_attention import decode_attention_paged
from octo_kernels.rope import rope_cache_update_paged
from octo_kernels import dispatch
from octo_kernels.decode_attention import MAX_SPLITS, MIN_KEYS_PER_SPLIT, tile_config
from octo_kernels.launch import smem_limit
from octo_kernels.sampling import philox4x32

pytestmark = pytest.mark.skipif(not octo_kernels.HAVE_TRITON or not octo_kernels.INTERPRET,
                                reason="needs triton and TRITON_INTERPRET=1 (set by conftest) to run kernels on CPU")

DTYPES = [torch.float32, torch.bfloat16]


def ulp(t: torch.Tensor) -> torch.Tensor:
    """Size of one unit in the last place of each element of t (in t's dtype), as fp64."""
    mant = {torch.float32: 23, torch.bfloat16: 7, torch.float16: 10}[t.dtype]
    a = t.double().abs().clamp(min=torch.finfo(t.dtype).tiny)
    return torch.exp2(torch.floor(torch.log2(a)) - mant)


def assert_close(actual, expected, dtype, ulps=1, atol32=1e-5, rtol32=1e-5, min_exact=0.0):
    """fp32: tight rtol/atol. bf16: within `ulps` units in the last place of the expected value (rounded to
    bf16), which is what two correct fp32 computations rounded to bf16 can differ by; and at least `min_exact`
    of the elements bit-identical (for kernels doing the same fp32 ops as the reference, where only the
    summation order can move a value across a rounding boundary)."""
    assert actual.dtype == dtype and actual.shape == expected.shape
    if dtype == torch.float32:
        torch.testing.assert_close(actual, expected.float(), atol=atol32, rtol=rtol32)
        return
    exp_low = expected.to(dtype)
    err = (actual.double() - exp_low.double()).abs()
    bound = ulps * ulp(exp_low) + 1e-6  # the tiny floor: values that round to 0
    worst = (err - bound).max().item()
    assert worst <= 0, f"bf16 mismatch beyond {ulps} ulp: max err {err.max().item():.3g}"
    exact = (actual == exp_low).double().mean().item()
    assert exact >= min_exact, f"only {exact:.1%} of bf16 values bit-identical, want >= {min_exact:.0%}"


def randn(*shape, dtype=torch.float32, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype)


# -----------------------------------------------------------------------------------------------------------------
# rms_norm


def hf_rms_norm(x, weight, eps):
    """transformers' LlamaRMSNorm with our weight (the parity target)."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    norm = LlamaRMSNorm(x.shape[-1], eps=eps).to(weight.dtype)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", [64, 128, 100])
@pytest.mark.parametrize("lead", [(7,), (2, 3)])
def test_rms_norm_matches_reference_and_hf(dtype, D, lead):
    x = randn(*lead, D, dtype=dtype, scale=3.0, seed=D)
    w = randn(D, dtype=dtype, seed=1) + 1.0
    eps = 1e-5
    ref = octo_kernels.rms_norm(x, w, eps, impl="torch")
    out = octo_kernels.rms_norm(x, w, eps, impl="triton")
    assert_close(out, ref, dtype, min_exact=0.99)  # same rounding points as HF, not just close
    # the reference is HF's LlamaRMSNorm exactly (same ops, same rounding points)
    assert torch.equal(ref, hf_rms_norm(x, w, eps))
    # and the textbook formula in fp64 (one extra bf16 rounding inside HF's order -> 2 ulp)
    x64 = x.double()
    exact = w.double() * x64 / torch.sqrt(x64.pow(2).mean(-1, keepdim=True) + eps)
    assert_close(out, exact, dtype, ulps=2, atol32=1e-5, rtol32=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", [64, 33])
def test_rms_norm_residual(dtype, D):
    x = randn(2, 5, D, dtype=dtype, seed=3)
    r = randn(2, 5, D, dtype=dtype, scale=4.0, seed=4)
    w = randn(D, dtype=dtype, seed=5)
    y_ref, h_ref = octo_kernels.rms_norm(x, w, 1e-6, residual=r, impl="torch")
    y, h = octo_kernels.rms_norm(x, w, 1e-6, residual=r, impl="triton")
    expected_h = (x.float() + r.float()).to(dtype)  # added in fp32, stored in x.dtype
    assert torch.equal(h, expected_h) and torch.equal(h_ref, expected_h)
    assert_close(y, y_ref, dtype, min_exact=0.99)
    # fused = unfused: norm of the (rounded) sum
    assert torch.equal(y_ref, octo_kernels.rms_norm(expected_h, w, 1e-6, impl="torch"))


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_rms_norm_residual_keeps_an_fp32_stream(impl):
    """fp32 weights under bf16 autocast: a block's output is bf16, the residual stream it is added to is fp32. The
    sum stays fp32 (training's x + delta), and so does the normed output the next (autocast) matmul rounds."""
    x = randn(2, 3, 64, seed=8).to(torch.bfloat16)  # the block's output
    r = randn(2, 3, 64, scale=40.0, seed=9)  # the stream: large next to x, where bf16 rounding would eat x
    w = randn(64, seed=10) + 1.0
    y, h = octo_kernels.rms_norm(x, w, 1e-6, residual=r, impl=impl)
    assert h.dtype == torch.float32 and y.dtype == torch.float32
    assert torch.equal(h, x.float() + r)
    h64 = h.double()
    exact = w.double() * h64 / torch.sqrt(h64.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(y.double(), exact, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("residual", [False, True])
def test_rms_norm_y_dtype_is_the_cast_after(impl, residual):
    """y_dtype=bf16 over an fp32 stream (the decode path under autocast) gives what casting the fp32 y gives, bit
    for bit, and leaves the stream h in fp32."""
    x = randn(3, 64, seed=11)
    r = randn(3, 64, scale=8.0, seed=12) if residual else None
    w = randn(64, seed=13) + 1.0
    want = octo_kernels.rms_norm(x, w, 1e-5, residual=r, impl="torch")
    got = octo_kernels.rms_norm(x, w, 1e-5, residual=r, impl=impl, y_dtype=torch.bfloat16)
    if residual:
        assert got[1].dtype == torch.float32 and torch.equal(got[1], want[1])
        want, got = want[0], got[0]
    assert got.dtype == torch.bfloat16 and torch.equal(got, want.to(torch.bfloat16))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("F", [64, 100])
def test_silu_mul_matches_torch_swiglu(dtype, F):
    """The fused SwiGLU gate equals torch's F.silu(gate) * up on the same [..., 2F] input, rounding included."""
    gu = randn(2, 3, 2 * F, dtype=dtype, scale=3.0, seed=F)
    gate, up = gu[..., :F], gu[..., F:]
    ref = torch.nn.functional.silu(gate) * up
    out = octo_kernels.silu_mul(gu, impl="triton")
    assert out.dtype == dtype and out.shape == (2, 3, F)
    assert_close(out, ref, dtype, min_exact=0.99)
    assert torch.equal(octo_kernels.silu_mul(gu, impl="torch"), ref)
    with pytest.raises(ValueError, match="2F"):
        octo_kernels.silu_mul(gu[..., :-1])


def test_rms_norm_non_contiguous_rows():
    base = randn(4, 2, 64, seed=6)
    x = base.transpose(0, 1)  # [2, 4, 64], rows not in memory order
    w = randn(64, seed=7)
    torch.testing.assert_close(octo_kernels.rms_norm(x, w, 1e-5, impl="triton"),
                               octo_kernels.rms_norm(x.contiguous(), w, 1e-5, impl="torch"), atol=1e-5, rtol=1e-5)


def test_rms_norm_rejects_bad_input():
    x = randn(2, 64)
    with pytest.raises(ValueError, match="weight shape"):
        octo_kernels.rms_norm(x, torch.ones(32), 1e-5, impl="triton")
    with pytest.raises(ValueError, match="residual shape"):
        octo_kernels.rms_norm(x, torch.ones(64), 1e-5, residual=randn(3, 64), impl="triton")


# -----------------------------------------------------------------------------------------------------------------
# rope + cache write


def textbook_rope(x, cos_half, sin_half):
    """x [B, T, H, D]: x * cos + rotate_half(x) * sin, with rotate_half(x) = cat(-x2, x1) and the D/2 angles
    repeated for both halves (HF Llama's convention), in fp64."""
    x = x.double()
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    cos = torch.cat([cos_half, cos_half], dim=-1).double()[:, :, None, :]
    sin = torch.cat([sin_half, sin_half], dim=-1).double()[:, :, None, :]
    return x * cos + rot * sin


def rope_angles(B, T, D, seed=0, theta=10000.0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randint(0, 500, (B, T), generator=g).float()
    inv_freq = 1.0 / theta ** (torch.arange(0, D, 2).float() / D)
    ang = pos[..., None] * inv_freq  # [B, T, D/2]
    return ang.cos(), ang.sin()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("H,Hkv", [(4, 4), (8, 2), (8, 1)])
@pytest.mark.parametrize("B,T,slot", [(2, 1, 5), (1, 7, 0), (2, 7, 9)])
def test_rope_cache_update(dtype, D, H, Hkv, B, T, slot):
    S = 16
    q = randn(B, T, H, D, dtype=dtype, seed=1)
    k = randn(B, T, Hkv, D, dtype=dtype, seed=2)
    v = randn(B, T, Hkv, D, dtype=dtype, seed=3)
    cos, sin = rope_angles(B, T, D, seed=4)
    sentinel = 7.0
    caches = {}
    for impl in ("torch", "triton"):
        kc = torch.full((B, Hkv, S, D), sentinel, dtype=dtype)
        vc = torch.full((B, Hkv, S, D), sentinel, dtype=dtype)
        q_rot = octo_kernels.rope_cache_update(q, k, v, cos, sin, kc, vc, slot, impl=impl)
        caches[impl] = (q_rot, kc, vc)
    q_rot, kc, vc = caches["triton"]
    # triton == torch reference: identical fp32 math, so equal up to the final rounding
    for a, b in zip(caches["triton"], caches["torch"]):
        assert_close(a, b, dtype, min_exact=0.99)
    # against the textbook rotate_half formula
    assert_close(q_rot, textbook_rope(q, cos, sin), dtype)
    assert_close(kc[:, :, slot:slot + T], textbook_rope(k, cos, sin).transpose(1, 2), dtype)
    assert torch.equal(vc[:, :, slot:slot + T], v.transpose(1, 2))  # v is copied raw
    # nothing outside the written slots changed
    outside = torch.ones(S, dtype=torch.bool)
    outside[slot:slot + T] = False
    assert (kc[:, :, outside] == sentinel).all() and (vc[:, :, outside] == sentinel).all()


def test_rope_broadcast_cos_sin_and_strided_q():
    B, T, H, Hkv, D = 2, 3, 4, 2, 64
    qkv = randn(B, T, H + 2 * Hkv, D, seed=8)  # one fused projection, split into strided views
    q, k, v = qkv[:, :, :H], qkv[:, :, H:H + Hkv], qkv[:, :, H + Hkv:]
    cos, sin = rope_angles(1, T, D, seed=9)  # [1, T, D/2]: same positions for every row
    outs = []
    for impl, cs in (("triton", (cos, sin)), ("triton", (cos[0], sin[0])), ("torch", (cos, sin))):
        kc, vc = torch.zeros(B, Hkv, 8, D), torch.zeros(B, Hkv, 8, D)
        outs.append((octo_kernels.rope_cache_update(q, k, v, *cs, kc, vc, 2, impl=impl), kc, vc))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(outs[0][0], textbook_rope(q, cos.expand(B, T, D // 2), sin.expand(B, T, D // 2))
                               .float(), atol=1e-5, rtol=1e-5)


def test_rope_rejects_bad_input():
    q, k = randn(1, 2, 4, 64), randn(1, 2, 2, 64)
    cos, sin = rope_angles(1, 2, 64)
    kc = torch.zeros(1, 2, 4, 64)
    with pytest.raises(ValueError, match="slot"):
        octo_kernels.rope_cache_update(q, k, k, cos, sin, kc, kc.clone(), 3, impl="triton")  # 3 + 2 > 4 slots
    with pytest.raises(ValueError, match="broadcast"):
        octo_kernels.rope_cache_update(q, k, k, cos[..., :16], sin[..., :16], kc, kc.clone(), 0, impl="triton")
    with pytest.raises(ValueError, match="k_cache"):
        octo_kernels.rope_cache_update(q, k, k, cos, sin, torch.zeros(1, 4, 4, 64), torch.zeros(1, 4, 4, 64), 0)


# -----------------------------------------------------------------------------------------------------------------
# decode attention


def naive_attention(q, k_cache, v_cache, start, end, scale):
    """Per row and head, fp64, a plain softmax over slots start[b] .. end-1; empty rows -> zeros."""
    B, H, D = q.shape
    G = H // k_cache.shape[1]
    out = torch.zeros(B, H, D, dtype=torch.float64)
    for b in range(B):
        lo = max(int(start[b]), 0)
        if lo >= end:
            continue
        for h in range(H):
            keys = k_cache[b, h // G, lo:end].double()  # [L, D]
            vals = v_cache[b, h // G, lo:end].double()
            w = torch.softmax(keys @ q[b, h].double() * scale, dim=0)
            out[b, h] = w @ vals
    return out


ATTN_CASES = [
    # B, H, Hkv, D, S, end, starts, num_splits
    (2, 4, 4, 64, 48, 33, [0, 5], 1),  # MHA (G=1), odd length
    (2, 8, 2, 64, 48, 33, [3, 30], 3),  # G=4, ragged, several splits
    (2, 8, 1, 128, 64, 64, [0, 17], 2),  # G=8 (MQA), D=128, full cache
    (1, 4, 1, 128, 16, 1, [0], 1),  # a single key
    (2, 8, 2, 64, 64, 64, [0, 61], 5),  # row 1 has 3 keys: most of its splits are empty
    (2, 4, 2, 64, 64, 7, [0, 2], 4),  # short rows, more splits than tiles
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,H,Hkv,D,S,end,starts,num_splits", ATTN_CASES)
def test_decode_attention(dtype, B, H, Hkv, D, S, end, starts, num_splits):
    q = randn(B, H, D, dtype=dtype, seed=1)
    kc = randn(B, Hkv, S, D, dtype=dtype, scale=2.0, seed=2)  # scale 2: peaky softmax, exercises the max logic
    vc = randn(B, Hkv, S, D, dtype=dtype, seed=3)
    start = torch.tensor(starts, dtype=torch.int64)
    scale = 1.0 / math.sqrt(D)
    exact = naive_attention(q, kc, vc, start, end, scale)
    out = octo_kernels.decode_attention(q, kc, vc, start, end, impl="triton", num_splits=num_splits)
    # 16-key tiles: with S <= 64 the default 64-key tiles would leave every split but the first empty
    small_tiles = octo_kernels.decode_attention_triton(q, kc, vc, start, end, num_splits=num_splits, block_n=16)
    ref = octo_kernels.decode_attention(q, kc, vc, start, end, impl="torch")
    assert_close(out, exact, dtype)
    assert_close(small_tiles, exact, dtype)
    assert_close(ref, exact, dtype)


def test_decode_attention_split_count_does_not_change_result():
    B, H, Hkv, D, S = 2, 8, 2, 64, 64
    q, kc, vc = randn(B, H, D, seed=4), randn(B, Hkv, S, D, seed=5), randn(B, Hkv, S, D, seed=6)
    start = torch.tensor([1, 9])
    outs = [octo_kernels.decode_attention_triton(q, kc, vc, start, 57, num_splits=n, block_n=16) for n in (1, 2, 3, 7)]
    outs.append(octo_kernels.decode_attention(q, kc, vc, start, 57, impl="triton"))  # CPU default: heuristic
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(outs[0].double(), naive_attention(q, kc, vc, start, 57, D ** -0.5),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_splits", [1, 3])
def test_decode_attention_empty_rows_are_zero(num_splits):
    B, H, Hkv, D, S = 3, 4, 2, 64, 16
    q, kc, vc = randn(B, H, D, seed=7), randn(B, Hkv, S, D, seed=8), randn(B, Hkv, S, D, seed=9)
    start = torch.tensor([10, 4, 12])  # row 0: start == end (empty); row 2: start > end (empty)
    for impl in ("triton", "torch"):
        if impl == "triton":
            out = octo_kernels.decode_attention_triton(q, kc, vc, start, 10, num_splits=num_splits, block_n=16)
        else:
            out = octo_kernels.decode_attention(q, kc, vc, start, 10, impl="torch")
        assert torch.isfinite(out).all()
        assert (out[0] == 0).all() and (out[2] == 0).all()
        torch.testing.assert_close(out[1].double(), naive_attention(q, kc, vc, start, 10, D ** -0.5)[1],
                                   atol=1e-5, rtol=1e-5)
    out = octo_kernels.decode_attention(q, kc, vc, start, 0, impl="triton")  # end = 0: nothing anywhere
    assert (out == 0).all()


def test_decode_attention_custom_scale_and_masked_slots_ignored():
    B, H, Hkv, D, S = 1, 4, 2, 64, 32
    q, kc, vc = randn(B, H, D, seed=10), randn(B, Hkv, S, D, seed=11), randn(B, Hkv, S, D, seed=12)
    start = torch.tensor([6])
    base = octo_kernels.decode_attention_triton(q, kc, vc, start, 20, scale=0.3, num_splits=2, block_n=16)
    torch.testing.assert_close(base.double(), naive_attention(q, kc, vc, start, 20, 0.3), atol=1e-5, rtol=1e-5)
    kc2, vc2 = kc.clone(), vc.clone()  # garbage outside [start, end) must not matter
    kc2[:, :, :6], kc2[:, :, 20:] = 1e4, -1e4
    vc2[:, :, :6], vc2[:, :, 20:] = float("nan"), float("nan")
    assert torch.equal(octo_kernels.decode_attention_triton(q, kc2, vc2, start, 20, scale=0.3, num_splits=2, block_n=16),
                       base)


def test_choose_num_splits():
    sms = 132  # H100 SXM
    # one row, 8 kv heads, a long context: split until ~2 waves of programs, capped
    n = octo_kernels.choose_num_splits(1, 8, 131072, sms)
    assert 1 < n <= MAX_SPLITS and 8 * n >= sms and n & (n - 1) == 0  # a power of two (few compiled variants)
    # a full batch already fills the GPU: no split
    assert octo_kernels.choose_num_splits(64, 8, 4096, sms) == 1
    # short contexts are not split below MIN_KEYS_PER_SPLIT keys per split
    assert octo_kernels.choose_num_splits(1, 8, 3 * MIN_KEYS_PER_SPLIT + 5, sms) == 2  # 3 fit; rounded down to 2
    assert octo_kernels.choose_num_splits(1, 8, 10, sms) == 1
    # more SMs or longer contexts never mean fewer splits
    seq = [octo_kernels.choose_num_splits(2, 8, L, sms) for L in (256, 1024, 4096, 16384, 65536)]
    assert seq == sorted(seq)


def test_decode_attention_tiles_fit_each_target():
    """(BLOCK_N, num_stages) by the target's shared memory (tests/test_gpu_compile.py checks the compiled sizes): an
    fp32 cache at head_dim 128 keeps 64-key tiles where 163 / 227 KiB allow, 32-key ones on sm_86 / sm_89's 99 KiB;
    a bf16 cache fits 64 everywhere; a head too wide for any tile is a clear error."""
    for cc, want in ((80, 64), (86, 32), (89, 32), (90, 64), (None, 32)):  # None: the interpreter, as the smallest
        assert tile_config(128, 16, 4, True, smem_limit(cc)) == (want, 3)
        assert tile_config(128, 16, 2, False, smem_limit(cc)) == (64, 3)
    assert tile_config(64, 16, 4, True, smem_limit(86), block_n=16) == (16, 3)  # an explicit block_n is kept
    with pytest.raises(ValueError, match="shared memory"):
        tile_config(4096, 16, 4, True, smem_limit(86))


def test_decode_attention_rejects_bad_input():
    q, kc = randn(1, 6, 64), randn(1, 4, 8, 64)
    with pytest.raises(ValueError, match="multiple"):
        octo_kernels.decode_attention(q, kc, kc, torch.zeros(1, dtype=torch.long), 4, impl="triton")
    q = randn(1, 8, 64)
    with pytest.raises(ValueError, match="end"):
        octo_kernels.decode_attention(q, kc, kc, torch.zeros(1, dtype=torch.long), 9, impl="triton")
    with pytest.raises(ValueError, match="int64"):
        octo_kernels.decode_attention(q, kc, kc, torch.zeros(1, dtype=torch.int32), 4, impl="triton")


def scattered_pool(dtype, B=3, Hkv=2, D=64, page=16, lens=(37, 5, 64)):
    """Contiguous per-row caches [B, Hkv, S, D] and the same keys in a paged pool, blocks in a scrambled order."""
    S = max(lens)
    W = -(-S // page)
    kc, vc = randn(B, Hkv, S, D, dtype=dtype, seed=1), randn(B, Hkv, S, D, dtype=dtype, seed=2)
    # 2 blocks no row uses: garbage the kernel must not read
    order = torch.randperm(B * W + 2, generator=torch.Generator().manual_seed(0))
    table = order[:B * W].view(B, W)
    NB = B * W + 2
    kp, vp = randn(NB, Hkv, page, D, dtype=dtype, seed=3), randn(NB, Hkv, page, D, dtype=dtype, seed=4)
    for b in range(B):
        for w in range(W):
            kp[table[b, w]] = kc[b, :, w * page:(w + 1) * page]
            vp[table[b, w]] = vc[b, :, w * page:(w + 1) * page]
    return kc, vc, kp, vp, table, torch.tensor(lens)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_splits", [1, 3])
def test_decode_attention_paged_matches_contiguous(dtype, num_splits):
    """Reading K/V through the block table (page 16, 16-key tiles so a row spans several tiles and splits) gives
    the contiguous kernel's result row by row; the torch reference (gathers) too."""
    kc, vc, kp, vp, table, lens = scattered_pool(dtype)
    q = randn(3, 8, 64, dtype=dtype, seed=5)
    want = torch.cat([octo_kernels.decode_attention(q[b:b + 1], kc[b:b + 1], vc[b:b + 1], torch.zeros(1, dtype=torch.long),
                                               int(lens[b]), impl="torch") for b in range(3)])
    got = decode_attention_paged(q, kp, vp, table, lens, impl="triton", num_splits=num_splits, block_n=16)
    ref = decode_attention_paged(q, kp, vp, table, lens, impl="torch")
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert (got.float() - want.float()).abs().max().item() < tol
    assert (ref.float() - want.float()).abs().max().item() < tol
    zero = decode_attention_paged(q, kp, vp, table, torch.tensor([0, 5, 64]), impl="triton", block_n=16)
    assert zero[0].abs().max() == 0  # no keys: zeros


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_rope_cache_update_paged_writes_each_token_to_its_slot(impl):
    """Token (b, t) lands at flat slot slots[b, t] (block slot // page, offset slot % page), as the contiguous
    kernel writes it at (b, slot); nothing else in the pool changes."""
    B, T, H, Hkv, D, page = 2, 3, 4, 2, 64, 4
    q, k, v = randn(B, T, H, D, seed=1), randn(B, T, Hkv, D, seed=2), randn(B, T, Hkv, D, seed=3)
    cos, sin = randn(B, T, D // 2, seed=4), randn(B, T, D // 2, seed=5)
    kc, vc = torch.zeros(B, Hkv, 8, D), torch.zeros(B, Hkv, 8, D)
    q_want = octo_kernels.rope_cache_update(q, k, v, cos, sin, kc, vc, 2, impl="torch")
    slots = torch.tensor([[9, 10, 11], [0, 1, 22]])  # row 1 crosses into block 5
    kp, vp = torch.zeros(6, Hkv, page, D), torch.zeros(6, Hkv, page, D)
    q_rot = rope_cache_update_paged(q, k, v, cos, sin, kp, vp, slots, impl=impl)
    assert torch.allclose(q_rot, q_want, atol=1e-6)
    for b in range(B):
        for t in range(T):
            s = int(slots[b, t])
            assert torch.allclose(kp[s // page, :, s % page], kc[b, :, 2 + t], atol=1e-6)
            assert torch.allclose(vp[s // page, :, s % page], vc[b, :, 2 + t])
    assert kp.ne(0).any(-1).sum() == B * T * Hkv  # only those slots were written


# -----------------------------------------------------------------------------------------------------------------
# sampling


def test_philox_reference_known_answers():
    """Philox4x32-10 known-answer vectors from Random123 (kat_vectors), through our int64 torch version."""
    cases = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ]
    for ctr, key, want in cases:
        t = lambda x: torch.tensor([x], dtype=torch.int64)  # noqa: E731
        got = philox4x32(t(key[0]), t(key[1]), *(t(c) for c in ctr))
        assert tuple(int(w) for w in got) == want


def test_philox_reference_matches_triton_randint4x():
    import triton
    import triton.language as tl

    @triton.jit
    def words(OUT, seed, N: tl.constexpr):
        offs = tl.arange(0, N)
        r0, r1, r2, r3 = tl.randint4x(seed, offs)
        tl.store(OUT + offs * 4 + 0, r0.to(tl.int64) & 0xFFFFFFFF)
        tl.store(OUT + offs * 4 + 1, r1.to(tl.int64) & 0xFFFFFFFF)
        tl.store(OUT + offs * 4 + 2, r2.to(tl.int64) & 0xFFFFFFFF)
        tl.store(OUT + offs * 4 + 3, r3.to(tl.int64) & 0xFFFFFFFF)

    for seed in (0, 12345, 2**40 + 7):
        out = torch.zeros(64 * 4, dtype=torch.int64)
        words[(1,)](out, seed, N=64)
        key = torch.tensor([seed & 0xFFFFFFFF]), torch.tensor([seed >> 32])
        ctr = torch.arange(64)
        zero = torch.zeros_like(ctr)
        ref = torch.stack(philox4x32(*key, ctr, zero, zero, zero), dim=-1).reshape(-1)
        assert torch.equal(out, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("V", [1, 7, 1000])
def test_greedy_is_argmax_with_lowest_index_ties(dtype, V):
    logits = randn(2, V, dtype=dtype, scale=3.0, seed=V)
    if V > 1:
        top = logits.float().max().item() + 1.0
        logits[0, V // 2] = top  # a tie: the lower index must win
        logits[0, V - 1] = top
        logits[1, :] = 0.5  # all equal: index 0
    for impl in ("triton", "torch"):
        tokens, logprobs = octo_kernels.sample_logits(logits, 0.0, seed=1, offset=0, impl=impl)
        assert tokens.dtype == torch.int64 and logprobs.dtype == torch.float32
        assert tokens.tolist() == logits.float().argmax(-1).tolist()
        if V > 1:
            assert tokens.tolist() == [V // 2, 0]
        want = F.log_softmax(logits.double(), -1).gather(-1, tokens[:, None])[:, 0]
        torch.testing.assert_close(logprobs.double(), want, atol=1e-5, rtol=1e-5)


def test_greedy_ties_across_vocab_steps():
    """block_q=4: 16 columns per step, each of the 16 slots sees columns c, c+16, c+32, ...; ties inside a slot
    and across slots must both resolve to the lowest column."""
    logits = randn(2, 100, seed=2)
    logits[0, [21, 5, 37]] = 9.0  # 5, 21, 37 share slot 5
    logits[1, [70, 66, 98]] = 9.0  # three different slots
    for block_q in (4, 32):
        tok, lp = octo_kernels.sample_logits_triton(logits, 0.0, 0, 0, block_q=block_q)
        assert tok.tolist() == [5, 66]
        torch.testing.assert_close(lp, F.log_softmax(logits, -1)[[0, 1], [5, 66]], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("V,temperature", [(1000, 0.7), (33, 1.0), (5000, 1.3)])
def test_sampling_triton_equals_reference(dtype, V, temperature):
    logits = randn(2, V, dtype=dtype, scale=2.0, seed=V)
    for offset in (0, 3, 2**33 + 5):  # offsets past 32 bits use the high counter word
        tok, lp = octo_kernels.sample_logits(logits, temperature, seed=99, offset=offset, impl="triton")
        tok_ref, lp_ref = octo_kernels.sample_logits(logits, temperature, seed=99, offset=offset, impl="torch")
        assert torch.equal(tok, tok_ref)  # same Philox uniforms -> same draws
        if V == 1000:  # many vocab steps (128 columns each): the counters of later steps line up too
            assert torch.equal(octo_kernels.sample_logits_triton(logits, temperature, 99, offset, block_q=32)[0], tok)
        want = F.log_softmax(logits.double() / temperature, -1).gather(-1, tok[:, None])[:, 0]
        torch.testing.assert_close(lp.double(), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lp_ref.double(), want, atol=1e-5, rtol=1e-5)


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs.double() * counts.sum()
    return float(((counts.double() - expected) ** 2 / expected).sum())


# 0.999999 quantile of chi-square with 5 degrees of freedom is ~35.9: with fixed seeds the test is deterministic,
# and a correct sampler lands far below; a biased one (e.g. sampling from softmax(logits), or u off by a column)
# lands far above at these sample sizes.
CHI2_BOUND = 36.0


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_sampling_frequencies_match_softmax(temperature):
    logits = torch.tensor([1.0, 0.2, -0.5, 2.0, 0.0, -3.0])  # V = 6 -> 5 degrees of freedom
    probs = torch.softmax(logits.double() / temperature, -1)
    # triton: rows of one call are independent draws (the row is part of the Philox counter). The interpreter
    # runs ~60 programs a second, so a few hundred draws; the reference below takes the big sample, and
    # test_sampling_triton_equals_reference ties the two together draw for draw.
    rows = 96
    tok, lp = octo_kernels.sample_logits(logits.expand(rows, -1), temperature, seed=7, offset=0, impl="triton")
    tok2, _ = octo_kernels.sample_logits(logits.expand(rows, -1), temperature, seed=7, offset=1, impl="triton")
    counts = torch.bincount(torch.cat([tok, tok2]), minlength=6)
    assert chi_square(counts, probs) < CHI2_BOUND
    torch.testing.assert_close(lp.double(), probs.log()[tok], atol=1e-5, rtol=1e-5)
    # the reference, with many more draws (it is cheap)
    tok_ref, _ = octo_kernels.sample_logits(logits.expand(40000, -1), temperature, seed=8, offset=0, impl="torch")
    assert chi_square(torch.bincount(tok_ref, minlength=6), probs) < CHI2_BOUND
    # a sampler at the wrong temperature would be caught at this sample size
    wrong = torch.softmax(logits.double() / (temperature * 1.5), -1)
    assert chi_square(torch.bincount(tok_ref, minlength=6), wrong) > 10 * CHI2_BOUND


def test_sampling_rng_keys():
    logits = torch.zeros(8, 50)  # uniform: the draw is the Gumbel argmax alone
    draw = lambda **kw: octo_kernels.sample_logits(logits, 1.0, impl="triton", **kw)[0]  # noqa: E731
    a = draw(seed=5, offset=0)
    assert torch.equal(a, draw(seed=5, offset=0))  # reproducible
    assert (a != draw(seed=5, offset=1)).sum() >= 4  # a new step gives new draws
    assert (a != draw(seed=6, offset=0)).sum() >= 4  # a new seed too
    assert len(set(a.tolist())) >= 4  # rows with the same logits draw independently
    # per-row seeds: a row's draw depends on its own seed only, not on its place in the batch
    seeds = torch.arange(100, 108)
    b = draw(seed=seeds, offset=3)
    perm = torch.tensor([3, 0, 7, 1, 6, 2, 5, 4])
    assert torch.equal(draw(seed=seeds[perm], offset=3), b[perm])
    assert torch.equal(octo_kernels.sample_logits(logits[:1], 1.0, seeds[2:3], 3, impl="triton")[0], b[2:3])
    assert torch.equal(octo_kernels.sample_logits(logits, 1.0, seeds, 3, impl="torch")[0], b)


def test_sampling_reference_chunks_rows(monkeypatch):
    import octo_kernels.sampling as sampling
    logits = randn(5, 40, seed=4)
    whole = octo_kernels.sample_logits(logits, 0.9, 3, 1, impl="torch")
    monkeypatch.setattr(sampling, "REF_CHUNK", 80)  # 2 rows per chunk
    chunked = octo_kernels.sample_logits(logits, 0.9, 3, 1, impl="torch")
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])
    empty = octo_kernels.sample_logits(logits[:0], 0.9, 3, 1, impl="torch")
    assert empty[0].shape == (0,) and empty[0].dtype == torch.int64


def test_sampling_never_picks_masked_tokens():
    logits = randn(2, 300, seed=3)
    logits[:, ::2] = float("-inf")  # e.g. a vocabulary mask
    for impl in ("triton", "torch"):
        for offset in range(3):
            tok, lp = octo_kernels.sample_logits(logits, 1.0, seed=0, offset=offset, impl=impl)
            assert (tok % 2 == 1).all() and torch.isfinite(lp).all()


def test_sampling_rejects_bad_input():
    logits = randn(2, 10)
    with pytest.raises(ValueError, match="temperature"):
        octo_kernels.sample_logits(logits, -1.0, 0, 0, impl="triton")
    with pytest.raises(ValueError, match="seed"):
        octo_kernels.sample_logits(logits, 1.0, -3, 0, impl="triton")
    with pytest.raises(ValueError, match="seed tensor"):
        octo_kernels.sample_logits(logits, 1.0, torch.zeros(3, dtype=torch.long), 0, impl="triton")
    with pytest.raises(ValueError, match="logits"):
        octo_kernels.sample_logits(logits[0], 1.0, 0, 0, impl="triton")


# -----------------------------------------------------------------------------------------------------------------
# dispatch


def test_resolve_impl_rules(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    assert octo_kernels.resolve_impl(None, cpu) == "torch"  # auto on CPU
    assert octo_kernels.resolve_impl(None, cuda) == "triton"  # auto on CUDA (triton imports)
    monkeypatch.setenv(dispatch.ENV_VAR, "torch")
    assert octo_kernels.resolve_impl(None, cuda) == "torch"
    assert octo_kernels.resolve_impl("triton", cpu) == "triton"  # the argument beats the env var
    monkeypatch.setenv(dispatch.ENV_VAR, "TRITON")
    assert octo_kernels.resolve_impl(None, cpu) == "triton"  # interpreter on
    monkeypatch.setenv(dispatch.ENV_VAR, "auto")
    assert octo_kernels.resolve_impl(None, cpu) == "torch"
    monkeypatch.setenv(dispatch.ENV_VAR, "cuda")
    with pytest.raises(ValueError, match=dispatch.ENV_VAR):
        octo_kernels.resolve_impl(None, cpu)
    with pytest.raises(ValueError, match="impl"):
        octo_kernels.resolve_impl("fast", cpu)
    monkeypatch.setattr(dispatch, "INTERPRET", False)  # a CPU tensor without the interpreter cannot run triton
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        octo_kernels.resolve_impl("triton", cpu)


def test_env_var_routes_calls(monkeypatch):
    calls = []

    def spy(name, fn):
        def wrapped(*a, **kw):
            calls.append(name)
            return fn(*a, **kw)
        monkeypatch.setattr(octo_kernels, name, wrapped)

    for name in ("rms_norm_torch", "rms_norm_triton", "sample_logits_torch", "sample_logits_triton"):
        spy(name, getattr(octo_kernels, name))
    x, w, logits = randn(2, 64), torch.ones(64), randn(2, 20)
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    octo_kernels.rms_norm(x, w, 1e-5)
    octo_kernels.sample_logits(logits, 1.0, 0, 0)
    assert calls == ["rms_norm_torch", "sample_logits_torch"]  # auto on CPU -> torch
    calls.clear()
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    octo_kernels.rms_norm(x, w, 1e-5)
    octo_kernels.sample_logits(logits, 1.0, 0, 0)
    octo_kernels.rms_norm(x, w, 1e-5, impl="torch")
    assert calls == ["rms_norm_triton", "sample_logits_triton", "rms_norm_torch"]


def test_model_decode_path_uses_kernels_and_matches_torch(monkeypatch):
    """The model's single-token cache step through the Triton kernels (interpreter) equals the plain torch path,
    with every norm (the residual adds fused in), the rotary + cache write and the attention in kernels; the
    prefill, a step with autograd on, and the default on CPU stay plain torch."""
    from model import KVCache, Llama, LlamaConfig

    calls = []
    for name in ("rms_norm_triton", "rope_cache_update_triton", "decode_attention_triton"):
        def spy(*a, _fn=getattr(octo_kernels, name), _name=name, **kw):
            calls.append((_name, a[3] is not None if _name == "rms_norm_triton" else None))
            return _fn(*a, **kw)
        monkeypatch.setattr(octo_kernels, name, spy)

    torch.manual_seed(0)
    cfg = LlamaConfig.from_preset("test")
    model = Llama(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # non-trivial norm gains, or a wrong weight would go unnoticed
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    prompts = torch.randint(0, 256, (2, 6))
    steps = torch.tensor([[[3], [5]], [[7], [11]]])  # two decode steps
    outs, caches = {}, {}
    for impl in ("torch", "triton"):
        monkeypatch.setenv("NANOOCTO_KERNELS", impl)
        cache = KVCache.for_model(model, 2, 16)
        cache.start[1] = 2  # a left-padded row
        with torch.no_grad():
            model(prompts, cache=cache)
            cache.advance(6)
            assert calls == []  # the prefill (T > 1) is plain torch
            outs[impl] = []
            for tok in steps:
                outs[impl].append(model(tok, cache=cache))
                cache.advance(1)
        caches[impl] = cache
        L = cfg.n_layers
        if impl == "triton":  # per step: 2 norms per block + the final one, all but the first fused with an add
            per_step = calls[:len(calls) // 2]
            norms = [fused for name, fused in per_step if name == "rms_norm_triton"]
            assert norms == [False] + [True] * (2 * L)
            assert [n for n, _ in per_step].count("rope_cache_update_triton") == L
            assert [n for n, _ in per_step].count("decode_attention_triton") == L
            assert len(calls) == 2 * len(per_step)
        else:
            assert calls == []
    for a, b in zip(outs["torch"], outs["triton"]):
        assert (a - b).abs().max().item() < 1e-4
    for ka, kb in zip(caches["torch"].k + caches["torch"].v, caches["triton"].k + caches["triton"].v):
        assert (ka - kb).abs().max().item() < 1e-5

    # with autograd on (training-time code), or on CPU by default, nothing goes through the kernels
    calls.clear()
    for env, grad in (("triton", True), ("auto", False)):
        monkeypatch.setenv("NANOOCTO_KERNELS", env)
        cache = KVCache.for_model(model, 2, 16)
        with torch.set_grad_enabled(grad):
            model(prompts[:, :1], cache=cache)
    assert calls == []
