"""
The one generation engine: batched KV-cache decoding for RL rollouts, benchmark evaluation and interactive sampling.

    from sample import generate
    outs = generate(model, tokenizer, ["2 + 3 =", "Question: ..."], n=4, temperature=1.0, top_p=0.95, seed=0)
    outs[i * 4 + j]            # sample j of prompt i: .tokens, .text, .logprobs, .finish_reason

    python sample.py --ckpt=out/midtrain --prompt="Question:" --num_samples=1 --temperature=0.8

How a call runs (top to bottom below):
  1. prompts are encoded (str -> ids with BOS; id lists are taken verbatim) and checked,
  2. a paged KV cache (kvcache.py) is sized: a pool of fixed-size blocks, each sequence holding a block table,
  3. the Engine loops until every sample is done: admit waiting prompts while batch slots and blocks are free
     (prefill a prompt once; its n samples share its full blocks and copy the last partial one), give each running
     row a slot for its next token (preempting the newest sequence when the pool is empty: it is re-prefilled
     later), run one decode step for all rows, draw each row's next token at its own step, and free the blocks of
     rows that hit EOS / a stop string / max_new_tokens so waiting sequences take their place at once,
  4. completions are returned in the caller's order: index i * n + j is sample j of prompt i.

Randomness: every sample (prompt i, sample j) has its own seed, hashed from (seed, i, j), and its draw at step t
depends only on that seed and t. So a sample does not depend on batch_size, on which other rows share its batch, or
on preemption. Two samplers implement this, both exact draws from the same distribution:
  - torch (CPU, and whenever top-k / top-p is on): uniforms from a CPU torch.Generator seeded with the sample's
    seed, then inverse-CDF sampling (exactly a multinomial draw);
  - the Triton kernel octo_kernels.sample_logits (the decode kernel path, model.use_decode_kernels: CUDA, or
    NANOOCTO_KERNELS=triton; plain temperature sampling or greedy): Gumbel-max in one pass over the vocab, Philox
    noise keyed by (the sample's seed + t * STEP_KEY) mod 2**63 (rows of one call are at different steps, and
    the kernel's counter offset is one per call).
The two map the same seed to different tokens, so a seeded run is reproducible on the same path (and device), not
across paths. Log-probs are the same quantity on both: log softmax(logits / temperature) of the chosen token.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

import model as model_lib
from configurator import UserError, UserFileError, run_cli
from decode_step import DecodeStep, bucket
from kvcache import PagedKVCache, blocks_for_budget, cdiv
from lm_head import autocast_dtype
from engine import Engine, Seq

STEP_KEY = 0x9E3779B97F4A7C15  # odd: step t moves a row's kernel-sampler key by t * this (mod 2**63)
MASK63 = 2**63 - 1
GROW_FROM = 64  # blocks a default (growing) pool starts with
last_stats: dict = {}  # the last generate call's engine counters (prefills, preemptions, pool / peak blocks)

# -----------------------------------------------------------------------------------------------------------------
# the result


@dataclass
class Completion:
    prompt_index: int
    prompt_tokens: list[int]  # the prompt as fed to the model (BOS included for str prompts)
    tokens: list[int]  # generated ids, the EOS / the tokens that spell the stop string included
    text: str  # decoded generated text, cut before the first stop string, EOS not shown
    logprobs: torch.Tensor  # float32 [len(tokens)], each token's log-prob before top-k/top-p truncation
    finish_reason: str  # "eos" | "stop" | "length"


# -----------------------------------------------------------------------------------------------------------------
# picking the next token from logits


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """probs [B, K] (non-negative, need not sum to 1), u [B] uniform in [0, 1) -> index [B]: a categorical draw.
    The first index whose cumulative mass exceeds u * total; zero-probability entries are never picked."""
    cdf = probs.cumsum(-1, dtype=torch.float64)  # fp64: a 128k-long running sum keeps its last digits
    x = (u.to(torch.float64) * cdf[:, -1])[:, None]
    idx = torch.searchsorted(cdf, x, right=True)[:, 0]
    # rounding can put x at the very top of the cdf: fall back to the last entry that has mass
    last = (probs > 0).cumsum(-1).argmax(-1)  # argmax returns the first index of the final count
    return torch.minimum(idx, last)


def sample_logits(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0,
                  u: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B, V] fp32 -> (tokens [B] long, logprobs [B] fp32).

    temperature 0: argmax, logprob under softmax(logits). Otherwise a draw (uniforms u [B]) from
    softmax(logits / temperature) truncated to the top_k tokens (0 = all), then, renormalised, to the smallest set
    of most likely tokens whose mass reaches top_p (at least one token); the logprob returned is always the one
    under the untruncated softmax(logits / temperature), which is what RL's importance ratios need."""
    if temperature == 0:
        logp = F.log_softmax(logits, dim=-1)
        tokens = logits.argmax(-1)
        return tokens, logp.gather(-1, tokens[:, None])[:, 0]
    logp = F.log_softmax(logits / temperature, dim=-1)
    V = logp.shape[-1]
    if (0 < top_k < V) or top_p < 1.0:
        if 0 < top_k < V:
            vals, order = logp.topk(top_k, dim=-1)  # [B, k], sorted descending
        else:
            vals, order = logp.sort(dim=-1, descending=True)  # [B, V]
        probs = vals.exp()
        probs = probs / probs.sum(-1, keepdim=True)  # top-p measures mass within the top-k survivors
        if top_p < 1.0:
            before = probs.cumsum(-1) - probs  # mass of the more likely tokens: the first is always kept
            probs = probs.masked_fill(before >= top_p, 0.0)
        tokens = order.gather(-1, inverse_cdf(probs, u)[:, None])[:, 0]
    else:
        tokens = inverse_cdf(logp.exp(), u)
    return tokens, logp.gather(-1, tokens[:, None])[:, 0]


def sample_seed(seed: int, i: int, j: int) -> int:
    """The seed of sample j of prompt i: 63 bits (a non-negative int64, what manual_seed and the kernel take)."""
    h = hashlib.blake2b(f"{seed}/{i}/{j}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def row_uniforms(seed: int, keys: list[tuple[int, int]], steps: int) -> torch.Tensor:
    """[len(keys), steps] uniforms; row r comes from its own generator seeded by (seed, prompt i, sample j), so a
    sample's randomness does not depend on the batch it is decoded in."""
    out = torch.empty(len(keys), steps)
    g = torch.Generator()
    for r, (i, j) in enumerate(keys):
        g.manual_seed(sample_seed(seed, i, j))
        out[r] = torch.rand(steps, generator=g)
    return out


def use_kernel_sampler(device, temperature: float, top_k: int, top_p: float, vocab: int) -> bool:
    """The Triton sampler serves greedy and plain temperature sampling on the decode kernel path; top-k / top-p
    need a sort or selection over the vocab, which stays in torch (sample_logits above)."""
    plain = temperature == 0 or ((top_k == 0 or top_k >= vocab) and top_p >= 1.0)
    return plain and model_lib.use_decode_kernels(device)


# -----------------------------------------------------------------------------------------------------------------
# stop strings


def find_stop(text: str, stop: Sequence[str]) -> int:
    """Index of the earliest stop string in text, or -1."""
    hits = [k for k in (text.find(s) for s in stop) if k >= 0]
    return min(hits) if hits else -1


def stop_tail_len(stop: Sequence[str]) -> int:
    """How many trailing tokens to decode to see a stop string that ends in the newest token: every token is at
    least one byte, so a stop string of b bytes spans at most b tokens."""
    return max((len(s.encode("utf-8")) for s in stop), default=0) + 1


# -----------------------------------------------------------------------------------------------------------------
# input checks and batching plan


def check_args(model, tokenizer, n, max_new_tokens, temperature, top_k, top_p, stop, seed, batch_size):
    def is_int(x):
        return isinstance(x, int) and not isinstance(x, bool)

    if not is_int(n) or n < 1:
        raise UserError(f"n (samples per prompt) must be an int >= 1, got {n!r}")
    if not is_int(max_new_tokens) or max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if not isinstance(temperature, (int, float)) or not temperature >= 0 or temperature == float("inf"):
        raise UserError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if not is_int(top_k) or top_k < 0:
        raise UserError(f"top_k must be an int >= 0 (0 = no top-k), got {top_k!r}")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise UserError(f"top_p must be in (0, 1] (1 = no nucleus truncation), got {top_p!r}")
    if seed is not None and not is_int(seed):
        raise UserError(f"seed must be an int or None, got {seed!r}")
    if batch_size is not None and (not is_int(batch_size) or batch_size < 1):
        raise UserError(f"batch_size must be an int >= 1 or None (all at once), got {batch_size!r}")
    if isinstance(stop, str):
        stop = (stop,)  # one stop string given bare
    stop = tuple(stop)
    bad = [s for s in stop if not isinstance(s, str) or not s]
    if bad:
        raise UserError(f"stop must be a sequence of non-empty strings, got {bad[0]!r} in it")
    if model.config.vocab_size < tokenizer.vocab_size:
        raise UserError(f"the model's vocab_size {model.config.vocab_size} is smaller than the tokenizer's "
                        f"{tokenizer.vocab_size}: this tokenizer does not belong to this model")
    return stop


def encode_prompts(tokenizer, prompts, vocab_size: int) -> list[list[int]]:
    """str prompts are encoded with BOS (Llama base models were trained with <|begin_of_text|> first) when the
    tokenizer has one; token-id lists are taken verbatim (the caller decides about BOS)."""
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of str or of token-id lists, got {type(prompts).__name__}")
    if not prompts:
        raise UserError("prompts is empty: nothing to generate from")
    bos = tokenizer.bos_id is not None
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            ids = tokenizer.encode(p, bos=bos)
        elif isinstance(p, torch.Tensor) and p.dim() == 1:
            ids = p.tolist()
        elif isinstance(p, Sequence) and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
            ids = list(p)
        else:
            raise TypeError(f"prompt {i} must be a str or a list of int token ids, got {type(p).__name__}")
        if not ids:
            raise UserError(f"prompt {i} is empty (no tokens): give at least one token (a str prompt gets BOS "
                            "only when the tokenizer has one)")
        bad = [t for t in ids if not 0 <= t < vocab_size]
        if bad:
            raise UserError(f"prompt {i} has token id {bad[0]} outside the model's vocabulary [0, {vocab_size})")
        out.append(ids)
    return out


def check_lengths(ids: list[list[int]], max_new_tokens: int, max_seq_len: int):
    lens = [len(p) for p in ids]
    longest = max(range(len(lens)), key=lens.__getitem__)
    if lens[longest] >= max_seq_len:
        raise UserError(f"prompt {longest} has {lens[longest]} tokens, which leaves no room in the model's context "
                        f"of {max_seq_len} tokens")
    if lens[longest] + max_new_tokens > max_seq_len:
        raise UserError(f"the longest prompt ({longest}: {lens[longest]} tokens) + max_new_tokens "
                        f"({max_new_tokens}) = {lens[longest] + max_new_tokens} exceeds the model's context of "
                        f"{max_seq_len} tokens: lower max_new_tokens to <= {max_seq_len - lens[longest]} or shorten "
                        "the prompt")


# -----------------------------------------------------------------------------------------------------------------
# the decode loop


def pool_blocks(model, rows: int, longest: int, block_size: int, kv_budget, kv_blocks) -> tuple[int, int]:
    """(blocks allocated up front, most blocks the pool may grow to). kv_blocks, or kv_budget's (GB, or a fraction
    of free GPU memory), allocated at once; else a pool that starts small and doubles as sequences need blocks, up
    to every row in flight at full length (no preemption, at most a contiguous cache's memory; a pool at the
    doubling's peak holds < 2x the blocks in use, plus the old copy while it grows)."""
    per_seq = cdiv(longest, block_size)
    if kv_blocks is None and kv_budget is None:
        return min(rows * per_seq, max(per_seq, GROW_FROM)), rows * per_seq
    blocks, knob = kv_blocks, f"kv_blocks={kv_blocks}"
    if kv_blocks is None:
        p = model.embed_tokens.weight
        blocks, knob = (blocks_for_budget(model.config, kv_budget, block_size, autocast_dtype(p), p.device),
                        f"kv_budget={kv_budget}")
    if blocks < per_seq:
        raise UserError(f"{knob} holds {blocks} KV blocks of {block_size} tokens, but one sequence (longest prompt "
                        f"+ max_new_tokens = {longest} tokens) needs {per_seq}: raise it or lower max_new_tokens")
    blocks = min(blocks, rows * per_seq)  # more than every row at full length is never used
    return blocks, blocks


def row_states(temperature: float, kernel_sampler: bool, seeds: np.ndarray | None, u_all: torch.Tensor | None):
    """-> state(rid [k], t [k]) -> the sampler's state of rows rid = i * n + j at their own steps t = len(out),
    numpy [k]: the kernel sampler's key (the sample's seed with the step folded in, mod 2**63: the kernel's counter
    offset is shared by the batch; int64) or the torch sampler's uniform (fp32); None when greedy. Vectorized: the
    static step asks it for every slot each step."""
    if temperature == 0:
        return None
    if kernel_sampler:
        step_key, mask = np.uint64(STEP_KEY), np.uint64(MASK63)
        return lambda rid, t: ((seeds[rid] + t.astype(np.uint64) * step_key) & mask).view(np.int64)  # wraps mod 2**64
    u = u_all.numpy()
    return lambda rid, t: u[rid, t]


def make_sampler(temperature: float, top_k: int, top_p: float, kernel_sampler: bool):
    """(logits [B, V] fp32, per-row state [B] on the device or None) -> (tokens [B], log-probs [B]): no host
    sync, so the static decode step (decode_step.py) draws inside its graph."""
    if kernel_sampler:
        import octo_kernels  # here only: CPU runs stay free of the triton import
        return lambda logits, state: octo_kernels.sample_logits(logits, temperature,
                                                                 0 if state is None else state, 0)
    return lambda logits, state: sample_logits(logits, temperature, top_k, top_p, state)


def static_engine(model, blocks: int, block_size: int, rows: int, width: int, graphs: bool):
    """(cache, step) for a static-step call of `rows` rows of up to `width` blocks over a pool of `blocks` blocks
    (+ the step's scratch block): the model's kept ones when they fit, else new ones, kept for the next call (the
    KV pool's addresses and the step's captured graphs stay valid across calls: RL samples every step, eval every
    few). release_engine(model) frees them."""
    dtype, dev = autocast_dtype(model.embed_tokens.weight), model.embed_tokens.weight.device
    kept = model.__dict__.get("_decode_engine")
    if kept is not None:
        cache, step = kept
        if (cache.block_size, cache.k[0].dtype, cache.device) == (block_size, dtype, dev) and \
                step.rows >= bucket(rows) and step.width >= width:
            cache.reset(blocks + 1)
            assert cache.pool.allocate() == DecodeStep.SCRATCH
            return cache, step
        rows, width = max(rows, step.rows), max(width, step.width)  # grow, so the calls in turn settle on one
        del model.__dict__["_decode_engine"], kept, cache, step  # the old pool goes before the new one is made
    cache = PagedKVCache.for_model(model, blocks + 1, block_size)
    assert cache.pool.allocate() == DecodeStep.SCRATCH  # a fresh pool hands out id 0 first
    step = DecodeStep(model, cache, rows, width, graphs)
    model.__dict__["_decode_engine"] = (cache, step)
    return cache, step


def release_engine(model) -> None:
    """Free the KV pool and CUDA graphs generate keeps on the model between calls (static step only)."""
    model.__dict__.pop("_decode_engine", None)


def next_tokens(eng, fresh: list, rows: list[Seq], sampler, state_fn, vocab_mask) -> tuple[list, list]:
    """The next token and log-prob of the fresh rows (from their prefill logits) then of the decoding rows (one
    decode step: the static one when the engine has it, which draws inside), on the host: [len(fresh) +
    len(rows)] each. A NaN log-prob (an overflowing model) comes back as token id -1."""
    seqs = [s for s, _ in fresh]
    parts = [torch.stack([lg for _, lg in fresh])] if fresh else []
    if rows and eng.step is None:
        parts.append(eng.decode(rows))
        seqs += rows
    toks, lps = [], []
    if parts:
        logits = torch.cat(parts)  # [len(seqs), V]
        if vocab_mask is not None:
            logits = logits.masked_fill(vocab_mask, float("-inf"))
        state = None
        if state_fn is not None:
            state = torch.from_numpy(state_fn(np.array([s.i * eng.n + s.j for s in seqs]),
                                              np.array([len(s.out) for s in seqs]))).to(logits.device)
        tok, lp = sampler(logits, state)
        host = torch.stack([tok.double(), lp.double()]).cpu().numpy()  # [2, len(seqs)]: one sync
        toks.append(host[0])
        lps.append(host[1])
    if rows and eng.step is not None:
        tok, lp = eng.decode_static(rows, state_fn)
        toks.append(tok)
        lps.append(lp)
    tok, lp = np.concatenate(toks), np.concatenate(lps)
    return np.where(np.isnan(lp), -1, tok).astype(np.int64).tolist(), lp.tolist()


def run_engine(model, tokenizer, prompts: list[list[int]], *, n: int, max_new_tokens: int, temperature: float,
               top_k: int, top_p: float, stop: tuple[str, ...], seed: int, batch_size: int | None, kv_budget,
               kv_blocks: int | None, block_size: int, static_step: bool, cuda_graphs: bool, on_token=None,
               on_finish=None) -> tuple[dict, Engine]:
    """Generate every (prompt i, sample j); -> ({(i, j): (tokens, logprobs [len] fp32, finish_reason)}, engine)."""
    device = model.embed_tokens.weight.device
    M, V_tok = max_new_tokens, tokenizer.vocab_size
    R = len(prompts) * n
    cap = min(batch_size or R, R)
    longest = max(len(p) for p in prompts) + M
    blocks, max_blocks = pool_blocks(model, cap, longest, block_size, kv_budget, kv_blocks)
    kernel_sampler = use_kernel_sampler(device, temperature, top_k, top_p, model.config.vocab_size)
    seeds = u_all = None
    if temperature > 0 and kernel_sampler:
        seeds = np.array([sample_seed(seed, i, j) for i in range(len(prompts)) for j in range(n)], dtype=np.uint64)
    elif temperature > 0:
        u_all = row_uniforms(seed, [(i, j) for i in range(len(prompts)) for j in range(n)], M)  # [R, M]
    vocab_mask = None
    if model.config.vocab_size > V_tok:  # model rows past the tokenizer's ids (a padded embedding) are not tokens
        vocab_mask = torch.arange(model.config.vocab_size, device=device) >= V_tok
    sampler = make_sampler(temperature, top_k, top_p, kernel_sampler)
    state_fn = row_states(temperature, kernel_sampler, seeds, u_all)
    step = None
    if static_step:
        cache, step = static_engine(model, blocks, block_size, cap, cdiv(longest, block_size), cuda_graphs)
        per_row = None if temperature == 0 else torch.long if kernel_sampler else torch.float32
        step.begin(sampler, (temperature, top_k, top_p, kernel_sampler, V_tok), per_row, vocab_mask, cuda_graphs)
    else:
        cache = PagedKVCache.for_model(model, blocks, block_size)
    eng = Engine(model, cache, prompts, n, cap, max_blocks + static_step, step)
    done = Finisher(tokenizer, stop, M, n, on_token, on_finish)
    while eng.waiting or eng.running:
        fresh = eng.admit()
        new = {id(s) for s, _ in fresh}
        rows = eng.reserve_decode([s for s in eng.running if id(s) not in new])
        fresh = [(s, lg) for s, lg in fresh if s.live]  # reserve_decode may preempt fresh ones
        if not fresh and not rows:
            continue
        tok, lp = next_tokens(eng, fresh, rows, sampler, state_fn, vocab_mask)  # the step's one host sync
        for (s, _), x, p in zip(fresh, tok, lp):
            if not done(eng, s, x, p) and step is not None:
                eng.join_step(s)
        for s, x, p in zip(rows, tok[len(fresh):], lp[len(fresh):]):
            done(eng, s, x, p)
    return done.results, eng


class Finisher:
    """Takes each row's new token: appends it, streams it, and ends the row on EOS, a stop string or the length
    cap (its blocks and slot freed at once, its result kept). A stop string can only complete in a token whose
    text holds its last character (or a piece of a character cut between tokens, which decodes alone as U+FFFD):
    only after such a token is the row's tail decoded and searched (per token id, decided once a call)."""

    def __init__(self, tokenizer, stop: tuple[str, ...], M: int, n: int, on_token, on_finish):
        self.tokenizer, self.stop, self.M, self.n = tokenizer, stop, M, n
        self.stop_ids, self.tail = tokenizer.stop_ids, stop_tail_len(stop)
        self.on_token, self.on_finish = on_token, on_finish
        self.results: dict = {}
        self.last_chars = {s[-1] for s in stop} | {"\ufffd"}
        self.may_end: dict[int, bool] = {}  # token id -> its text holds one of last_chars

    def may_stop(self, x: int) -> bool:
        hit = self.may_end.get(x)
        if hit is None:
            text = self.tokenizer.decode([x])
            hit = self.may_end[x] = any(c in text for c in self.last_chars)
        return hit

    def __call__(self, eng: Engine, s: Seq, x: int, p: float) -> bool:
        """-> whether row s ended with token x (log-prob p)."""
        if x < 0:
            raise RuntimeError(f"the model produced NaN logits at step {len(s.out)} (prompt {s.i})")
        s.out.append(x)
        s.lp.append(p)
        if self.on_token is not None:
            self.on_token(s.i * self.n + s.j, x)
        if x in self.stop_ids:
            s.reason = "eos"
        elif self.stop and self.may_stop(x) and \
                find_stop(self.tokenizer.decode(s.out[-self.tail:]), self.stop) >= 0:
            s.reason = "stop"
        elif len(s.out) == self.M:
            s.reason = "length"
        else:
            return False
        eng.finish(s)
        self.results[(s.i, s.j)] = (s.out, torch.tensor(s.lp, dtype=torch.float32), s.reason)
        if self.on_finish is not None:
            self.on_finish(len(s.out))
        return True


# -----------------------------------------------------------------------------------------------------------------
# the entry point


def generate(model, tokenizer, prompts, *, n: int = 1, max_new_tokens: int = 256, temperature: float = 0.0,
             top_k: int = 0, top_p: float = 1.0, stop: Sequence[str] = (), seed: int | None = None,
             batch_size: int | None = None, progress: bool = False,
             on_token: Callable[[int, int], None] | None = None, kv_budget: float | None = None,
             kv_blocks: int | None = None, block_size: int = 16, static_step: bool | None = None,
             cuda_graphs: bool = True) -> list[Completion]:
    """Complete each prompt n times; -> list of Completion, index i * n + j = sample j of prompt i.

    prompts: str (encoded with BOS when the tokenizer has one) or token-id lists (taken verbatim).
    temperature 0 is greedy (top_k/top_p are then ignored). stop: strings that end a row (checked on the
    generated text only); the tokenizer's stop_ids end a row as "eos". seed None draws one from torch's global RNG.
    batch_size: sequences decoded together (default: all); a finished row's slot goes to a waiting sequence at once.
    on_token(index, token_id) is called for every generated token as it arrives (streaming).
    kv_budget: the KV pool's size, GB (> 1) or a fraction (<= 1) of free GPU memory, allocated at once; None = a
    pool that doubles as needed up to batch_size rows at full length. A smaller pool preempts the newest sequence
    when it runs out (recomputed later: the same tokens, more compute). kv_blocks: the pool's size in blocks instead
    (wins over kv_budget). block_size: tokens per KV block. static_step: decode through decode_step.DecodeStep
    (rows in fixed slots of preallocated buffers, no host sync inside); None = on the decode kernel path (CUDA), off
    on CPU, where the plain torch path is faster. The static step and its KV pool stay on the model for the next
    call (release_engine(model) frees them). cuda_graphs: capture that step as a CUDA graph per bucket and replay it
    (CUDA only; False = eager).
    last_stats (module global) has the run's counters."""
    stop = check_args(model, tokenizer, n, max_new_tokens, temperature, top_k, top_p, stop, seed, batch_size)
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
        raise UserError(f"block_size must be an int >= 1 (tokens per KV block), got {block_size!r}")
    if kv_budget is not None and (not isinstance(kv_budget, (int, float)) or not kv_budget > 0):
        raise UserError(f"kv_budget must be > 0 (GB, or a fraction <= 1 of free GPU memory) or None, got {kv_budget!r}")
    if kv_blocks is not None and (not isinstance(kv_blocks, int) or isinstance(kv_blocks, bool) or kv_blocks < 1):
        raise UserError(f"kv_blocks must be an int >= 1 (KV pool size in blocks) or None, got {kv_blocks!r}")
    for name, v, none_ok in (("static_step", static_step, True), ("cuda_graphs", cuda_graphs, False)):
        if not (isinstance(v, bool) or (none_ok and v is None)):
            raise UserError(f"{name} must be True or False{' or None (auto)' if none_ok else ''}, got {v!r}")
    if static_step is None:
        static_step = model_lib.use_decode_kernels(model.embed_tokens.weight.device)
    ids = encode_prompts(tokenizer, prompts, model.config.vocab_size)
    check_lengths(ids, max_new_tokens, model.config.max_seq_len)
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())  # follows torch.manual_seed, like torch.multinomial would
    was_training = model.training
    model.eval()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ids) * n, unit="seq", desc="generate", dynamic_ncols=True)
    t0, n_tok = time.time(), [0]

    def on_finish(length):
        n_tok[0] += length
        if bar is not None:
            bar.update(1)
            bar.set_postfix(tok_s=f"{n_tok[0] / max(time.time() - t0, 1e-9):.0f}", refresh=False)

    try:
        with torch.inference_mode():
            results, eng = run_engine(
                model, tokenizer, ids, n=n, max_new_tokens=max_new_tokens, temperature=float(temperature),
                top_k=top_k, top_p=float(top_p), stop=stop, seed=seed, batch_size=batch_size, kv_budget=kv_budget,
                kv_blocks=kv_blocks, block_size=block_size, static_step=static_step, cuda_graphs=cuda_graphs,
                on_token=on_token, on_finish=on_finish)
        k0 = eng.cache.k[0]
        last_stats.clear()
        last_stats.update(prefills=eng.prefills, prefill_forwards=eng.prefill_forwards, preemptions=eng.preemptions,
                          pool_blocks=eng.pool.num_blocks, peak_blocks=eng.pool.peak_used, static_step=static_step,
                          block_bytes=2 * len(eng.cache.k) * k0[0].numel() * k0.element_size())
    except BaseException:
        release_engine(model)  # a call that failed part-way (NaN logits, an interrupt) leaves no kept state behind
        raise
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()

    completions = []
    for i in range(len(ids)):
        for j in range(n):
            tokens, lp, why = results[(i, j)]
            shown = tokens[:-1] if why == "eos" else tokens
            text = tokenizer.decode(shown)
            cut = find_stop(text, stop)
            # clone outside inference mode: a normal tensor that RL code may use next to autograd tensors
            completions.append(Completion(i, ids[i], tokens, text[:cut] if cut >= 0 else text, lp.clone(), why))
    return completions


# -----------------------------------------------------------------------------------------------------------------
# command line: python sample.py --ckpt=out/midtrain --prompt="..." --num_samples=1 (streams the text)

ckpt = "out/midtrain"  # checkpoint folder, run folder (follows `latest`) or any HF Llama snapshot with a tokenizer
prompt = ""  # the prompt text ("" = just BOS); "FILE:path" reads it from a file
num_samples = 1  # 1 streams the text as it is generated
max_new_tokens = 200
temperature = 0.8  # 0 = greedy
top_k = 0  # 0 = off
top_p = 1.0  # 1 = off
seed = 1337
device = "auto"  # auto = cuda if available, else cpu
dtype = "auto"  # auto = bfloat16 on cuda, float32 on cpu
CLI_KNOBS = ("ckpt", "prompt", "num_samples", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "device",
             "dtype")


def stream_printer(tokenizer, stop_ids):
    """-> (on_token, flush): on_token prints one sequence's text as it grows; flush prints what is held back.
    The whole sequence is decoded each time so a multi-byte character split over tokens prints once complete (a
    trailing U+FFFD means: wait for more)."""
    seen: list[int] = []
    printed = [0]

    def write(final: bool):
        text = tokenizer.decode(seen)
        if final or not text.endswith("\ufffd"):
            sys.stdout.write(text[printed[0]:])
            sys.stdout.flush()
            printed[0] = len(text)

    def on_token(index: int, token: int):
        if token not in stop_ids:
            seen.append(token)
            write(final=False)

    return on_token, lambda: write(final=True)


def main(argv: list[str] | None = None) -> list[Completion]:
    from configurator import configure

    cfg = configure({k: globals()[k] for k in CLI_KNOBS}, argv)
    if not os.path.exists(cfg["ckpt"]):
        raise UserFileError(f"ckpt={cfg['ckpt']!r} not found: run `python midtrain.py` first (it writes "
                            "out/midtrain), or pass --ckpt=PATH")
    text = cfg["prompt"]
    if text.startswith("FILE:"):
        with open(text[len("FILE:"):], encoding="utf-8") as f:
            text = f.read()
    dev = cfg["device"] if cfg["device"] != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = {"auto": torch.bfloat16 if dev.startswith("cuda") else torch.float32, "bfloat16": torch.bfloat16,
              "float16": torch.float16, "float32": torch.float32}
    if cfg["dtype"] not in dtypes:
        raise UserError(f"dtype must be one of {sorted(dtypes)}, got {cfg['dtype']!r}")
    net, tok, _ = model_lib.load_checkpoint(cfg["ckpt"], dtype=dtypes[cfg["dtype"]], device=dev)
    stream = cfg["num_samples"] == 1  # one sample: print its text as it is generated
    on_token, flush = stream_printer(tok, tok.stop_ids) if stream else (None, None)
    t0 = time.time()
    if stream:
        sys.stdout.write(text)
    outs = generate(net, tok, [text], n=cfg["num_samples"], max_new_tokens=cfg["max_new_tokens"],
                    temperature=cfg["temperature"], top_k=cfg["top_k"], top_p=cfg["top_p"], seed=cfg["seed"],
                    on_token=on_token)
    dt = time.time() - t0
    for k, c in enumerate(outs):
        if stream:
            flush()
            print(flush=True)
        else:
            print(f"---------- sample {k} ----------\n{text}{c.text}", flush=True)
        print(f"[{c.finish_reason}, {len(c.tokens)} tokens]", file=sys.stderr)
    print(f"{sum(len(c.tokens) for c in outs) / dt:.1f} tokens/s", file=sys.stderr)
    return outs


if __name__ == "__main__":
    run_cli(main)
