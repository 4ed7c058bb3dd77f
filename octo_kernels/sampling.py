"""
Next-token sampling from logits in one pass over the vocabulary: greedy, or Gumbel-max.

    logits [B, V] (fp32 or bf16), temperature >= 0, seed, offset  ->  tokens [B] int64, logprobs [B] fp32

temperature == 0: argmax (ties -> lowest index); logprob under softmax(logits).
temperature > 0: argmax(logits / t + Gumbel noise) is an exact draw from softmax(logits / t); logprob of the
chosen token under softmax(logits / t). One program per row streams the vocab once, keeping per-lane running
(max, sum of exp) for the log-sum-exp and a running (best score, its index, its logit / t) for the argmax; the
lanes are combined at the end.

Every row needs at least one finite logit (-inf entries are fine and never drawn; NaN logits are not checked).

Top-k / top-p are not done here: they need a sort or a selection over the vocab, which stays in torch
(sample.py applies them). This kernel is the fast path for plain temperature sampling and greedy decoding.

Noise: a counter-based RNG, Philox4x32-10 keyed by the seed, with counter (column // 4, row, offset low 32 bits,
offset high 32 bits); one Philox call yields the 4 words used by columns 4c .. 4c+3. `offset` is the caller's
step counter, so every (seed, offset, row, column) gets its own independent uniform, on any batch layout. With a
per-row seed tensor the row counter is 0: a row's draws then depend only on its own seed (a sample keeps its
randomness when other rows leave the batch). The uniforms are bit-identical to triton's tl.randint4x +
uint_to_uniform_float, and the torch reference reproduces them with integer ops, so both implementations make
the same draws (up to the last-ulp of log() when two candidates nearly tie).
"""
from __future__ import annotations

import math

import torch

from octo_kernels.dispatch import jit, next_pow2, tl
from octo_kernels.launch import Launch, device_cc, run

MASK32 = 0xFFFFFFFF
PHILOX_KEY_A, PHILOX_KEY_B = 0x9E3779B9, 0xBB67AE85
PHILOX_ROUND_A, PHILOX_ROUND_B = 0xD2511F53, 0xCD9E8D57
PHILOX_ROUNDS = 10
UNIFORM_SCALE = 4.6566127342e-10  # triton's: the largest s with (2^31 - 1) * s < 1 in fp32 -> u in [0, 1)
WORDS = 4  # Philox4x32 gives 4 words per counter
MAX_BLOCK_Q = 512  # [512, 4] = 2048 columns per step of the vocab loop
REF_CHUNK = 1 << 21  # torch reference: rows per chunk * V stays under this (Philox temporaries are int64)


# -----------------------------------------------------------------------------------------------------------------
# torch reference


def _mul32(const: int, x: torch.Tensor):
    """(hi, lo) 32-bit words of const * x for const, x in [0, 2^32), in int64 without overflow: const is split
    into 16-bit halves so every partial product stays below 2^48."""
    c_hi, c_lo = const >> 16, const & 0xFFFF
    p_lo, p_hi = x * c_lo, x * c_hi  # < 2^48 each; product = p_hi * 2^16 + p_lo
    t = p_lo + ((p_hi & 0xFFFF) << 16)  # < 2^49
    return (p_hi >> 16) + (t >> 32), t & MASK32


def philox4x32(key0, key1, c0, c1, c2, c3, rounds: int = PHILOX_ROUNDS):
    """Philox4x32 on int64 tensors holding uint32 values (broadcasting); returns the 4 output words.
    Same round structure and constants as triton.language.random.philox_impl."""
    k0, k1 = key0, key1
    for _ in range(rounds):
        hi_b, lo_b = _mul32(PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mul32(PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + PHILOX_KEY_A) & MASK32, (k1 + PHILOX_KEY_B) & MASK32
    return c0, c1, c2, c3


def _uint32_to_uniform(w: torch.Tensor) -> torch.Tensor:
    """triton's uint_to_uniform_float: reinterpret as int32, fold negatives with ~x, scale into [0, 1)."""
    x = torch.where(w >= 2**31, w - 2**32, w)
    x = torch.where(x < 0, -x - 1, x)  # ~x
    return x.to(torch.float32) * torch.tensor(UNIFORM_SCALE, dtype=torch.float32)


def philox_uniforms(seeds: torch.Tensor, offset: int, rows: torch.Tensor, V: int) -> torch.Tensor:
    """Uniforms [B, V] in [0, 1): seeds [B] int64 (the key), rows [B] int64 (the row counter)."""
    device = seeds.device
    n_ctr = -(-V // WORDS)
    ctr = torch.arange(n_ctr, dtype=torch.int64, device=device)[None, :]  # [1, n_ctr]
    key0, key1 = (seeds & MASK32)[:, None], ((seeds >> 32) & MASK32)[:, None]
    words = philox4x32(key0, key1, ctr, (rows & MASK32)[:, None],
                       torch.full_like(ctr, offset & MASK32), torch.full_like(ctr, (offset >> 32) & MASK32))
    w = torch.stack(torch.broadcast_tensors(*words), dim=-1).reshape(seeds.shape[0], n_ctr * WORDS)
    return _uint32_to_uniform(w[:, :V])  # column c uses word c % 4 of counter c // 4


def _seed_rows(seed, B, device):
    """(seeds [B] int64, row counters [B] int64) for an int seed or a per-row seed tensor."""
    if isinstance(seed, torch.Tensor):
        return seed.to(device=device, dtype=torch.int64), torch.zeros(B, dtype=torch.int64, device=device)
    return (torch.full((B,), seed, dtype=torch.int64, device=device),
            torch.arange(B, dtype=torch.int64, device=device))


def _gumbel_argmax(x, seeds, offset, rows):
    u = philox_uniforms(seeds, offset, rows, x.shape[1])
    return (x - torch.log(-torch.log(u))).argmax(-1)  # + Gumbel(0, 1) noise; u = 0 gives -inf (never chosen)


def sample_logits_torch(logits, temperature, seed, offset):
    """Plain-torch reference; same contract as sample_logits."""
    B, V = logits.shape
    x = logits.float() if temperature == 0 else logits.float() / temperature
    if temperature == 0:
        tokens = x.argmax(-1)  # first index among ties
    else:
        seeds, rows = _seed_rows(seed, B, logits.device)
        step = max(1, REF_CHUNK // V)  # bounded memory: ~10 int64 temporaries of [rows, V] live at once
        tokens = torch.cat([_gumbel_argmax(x[i:i + step], seeds[i:i + step], offset, rows[i:i + step])
                            for i in range(0, B, step)]) if B else x.new_zeros(0, dtype=torch.int64)
    logprobs = x.gather(-1, tokens[:, None])[:, 0] - torch.logsumexp(x, dim=-1)
    return tokens, logprobs


# -----------------------------------------------------------------------------------------------------------------
# triton


@jit
def _sample_kernel(LOGITS, SEEDS, TOK, LP, V, stride_row, temperature, seed, off_lo, off_hi,
                   GREEDY: tl.constexpr, PER_ROW_SEED: tl.constexpr, BLOCK_Q: tl.constexpr):
    row = tl.program_id(0)
    base = LOGITS + row.to(tl.int64) * stride_row
    lane = tl.arange(0, BLOCK_Q)
    word = tl.arange(0, 4)
    tile = lane[:, None] * 4 + word[None, :]  # [BLOCK_Q, 4]: column offsets within a step, contiguous
    if PER_ROW_SEED:
        key = tl.load(SEEDS + row)
        row_ctr = 0
    else:
        key = seed
        row_ctr = row

    # per-slot running state ([BLOCK_Q, 4] slots, each slot visits increasing columns)
    m = tl.full([BLOCK_Q, 4], float("-inf"), tl.float32)  # running max of x
    s = tl.zeros([BLOCK_Q, 4], tl.float32)  # running sum of exp(x - m)
    best_z = tl.full([BLOCK_Q, 4], float("-inf"), tl.float32)
    best_i = tile  # any column of the slot; replaced by the first finite score
    best_x = tl.full([BLOCK_Q, 4], float("-inf"), tl.float32)
    for v0 in range(0, V, BLOCK_Q * 4):
        cols = v0 + tile
        mask = cols < V
        x = tl.load(base + cols, mask=mask, other=float("-inf")).to(tl.float32)
        if not GREEDY:
            x = x / temperature
        m_new = tl.maximum(m, x)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # all -inf so far: avoid -inf - -inf = NaN
        s = s * tl.exp(m - m_safe) + tl.exp(x - m_safe)
        m = m_new
        if GREEDY:
            z = x
        else:
            ctr = v0 // 4 + lane  # Philox counter of columns 4c .. 4c+3
            zero = lane * 0
            r0, r1, r2, r3 = tl.philox(key, ctr, zero + row_ctr, zero + off_lo, zero + off_hi)
            r = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), [BLOCK_Q, 4])  # [:, j] = word j
            r = r.to(tl.int32, bitcast=True)
            u = tl.where(r < 0, ~r, r) * 4.6566127342e-10  # triton's uint_to_uniform_float
            z = tl.where(mask, x - tl.log(-tl.log(u)), float("-inf"))
        better = z > best_z  # strict: a slot keeps its earliest (lowest) column on ties
        best_z = tl.where(better, z, best_z)
        best_i = tl.where(better, cols, best_i)
        best_x = tl.where(better, x, best_x)

    m_all = tl.max(tl.max(m, axis=1), axis=0)
    m_all_safe = tl.where(m_all == float("-inf"), 0.0, m_all)
    total = tl.sum(tl.sum(s * tl.exp(m - m_all_safe), axis=1), axis=0)
    lse = m_all_safe + tl.log(total)
    z_max = tl.max(tl.max(best_z, axis=1), axis=0)
    tok = tl.min(tl.min(tl.where(best_z == z_max, best_i, V), axis=1), axis=0)  # ties -> lowest column
    x_tok = tl.max(tl.max(tl.where(best_i == tok, best_x, float("-inf")), axis=1), axis=0)
    tl.store(TOK + row, tok.to(tl.int64))
    tl.store(LP + row, x_tok - lse)


def plan_sample_logits(logits, temperature, seed, offset, block_q=None, cc=None):
    """(tokens [B] int64, logprobs [B] fp32) allocated on the logits' device, and the Launch that fills them
    (None for B == 0). cc: the target's compute capability (unused: no shared-memory tiles)."""
    B, V = logits.shape
    tokens = torch.empty(B, dtype=torch.int64, device=logits.device)
    logprobs = torch.empty(B, dtype=torch.float32, device=logits.device)
    if B == 0:
        return tokens, logprobs, None
    x = logits if logits.stride(-1) == 1 else logits.contiguous()
    per_row = isinstance(seed, torch.Tensor)
    seeds = seed.to(device=x.device, dtype=torch.int64).contiguous() if per_row else tokens  # tokens: a dummy ptr
    # counters are 32-bit words; pass them as the int32 with the same bits so triton types them i32
    lo, hi = offset & MASK32, (offset >> 32) & MASK32
    as_i32 = lambda w: w - 2**32 if w >= 2**31 else w  # noqa: E731
    BLOCK_Q = block_q or min(MAX_BLOCK_Q, next_pow2(-(-V // 4)))
    if BLOCK_Q & (BLOCK_Q - 1):
        raise ValueError(f"sample_logits: block_q must be a power of two, got {BLOCK_Q}")
    num_warps = 8 if BLOCK_Q >= 256 else 4
    launch = Launch(_sample_kernel, (B,),
                    (x, seeds, tokens, logprobs, V, x.stride(0), float(temperature or 1.0),
                     0 if per_row else int(seed), as_i32(lo), as_i32(hi)),
                    dict(GREEDY=temperature == 0, PER_ROW_SEED=per_row, BLOCK_Q=BLOCK_Q, num_warps=num_warps))
    return tokens, logprobs, launch


def sample_logits_triton(logits, temperature, seed, offset, block_q=None):
    """block_q overrides the lanes per vocab step (4 columns each); tests use tiny ones to get many steps."""
    tokens, logprobs, launch = plan_sample_logits(logits, temperature, seed, offset, block_q,
                                                  device_cc(logits.device))
    if launch is not None:
        run(launch)
    return tokens, logprobs


def _check(logits, temperature, seed, offset):
    if logits.dim() != 2 or logits.shape[1] == 0:
        raise ValueError(f"sample_logits: logits must be [B, V] with V >= 1, got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"sample_logits: logits must be floating point, got {logits.dtype}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature < 0:
        raise ValueError(f"sample_logits: temperature must be a finite float >= 0, got {temperature!r}")
    if isinstance(seed, torch.Tensor):
        if seed.shape != (logits.shape[0],) or seed.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"sample_logits: a seed tensor must be int [B={logits.shape[0]}], got "
                             f"{seed.dtype} {tuple(seed.shape)}")
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"sample_logits: seed must be an int in [0, 2^63) or an int [B] tensor, got {seed!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < 2**64:
        raise ValueError(f"sample_logits: offset must be an int in [0, 2^64), got {offset!r}")
