"""
The one generation engine: batched KV-cache decoding for RL rollouts, benchmark evaluation and interactive sampling.

    from sample import generate
    outs = generate(model, tokenizer, ["2 + 3 =", "Question: ..."], n=4, temperature=1.0, top_p=0.95, seed=0)
    outs[i * 4 + j]            # sample j of prompt i: .tokens, .text, .logprobs, .finish_reason

    python sample.py --ckpt=out/midtrain --prompt="Question:" --num_samples=1 --temperature=0.8

How a call runs (top to bottom below):
  1. prompts are encoded (str -> ids with BOS; id lists are taken verbatim) and checked,
  2. sorted by length (less padding) and packed into chunks of at most `batch_size` sequences,
  3. per chunk: `prefill` the unique prompts once (left-padded in one KV cache), copy each prompt's cache rows to
     its n samples with `cache.select`, then `decode_one_token` until every row has hit EOS / a stop string /
     max_new_tokens; finished rows are dropped from the batch (cache compaction) once a quarter of it is dead,
  4. completions are returned in the caller's order: index i * n + j is sample j of prompt i.

Randomness: every sample (prompt i, sample j) has its own seed, hashed from (seed, i, j), and its draw at step t
depends only on that seed and t. So a sample does not depend on batch_size, on which other rows share its batch, or
on compaction. Two samplers implement this, both exact draws from the same distribution:
  - torch (CPU, and whenever top-k / top-p is on): uniforms from a CPU torch.Generator seeded with the sample's
    seed, then inverse-CDF sampling (exactly a multinomial draw);
  - the Triton kernel kernels.sample_logits (the decode kernel path, model.use_decode_kernels: CUDA, or
    NANOOCTO_KERNELS=triton; plain temperature sampling or greedy): Gumbel-max in one pass over the vocab, Philox
    noise keyed by the sample's seed with the step t as counter.
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

import torch
import torch.nn.functional as F

import model as model_lib
from configurator import UserError, UserFileError, run_cli

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
# the two model calls: prompt prefill and one decode step (small, separate functions, each compilable)


def prefill(model, idx: torch.Tensor, cache: model_lib.KVCache, max_tokens: int = 2**14) -> torch.Tensor:
    """Run the left-padded prompts idx [B, P] into the cache; -> the last position's logits [B, V] fp32 (the
    model computes no other position's logits). Long prompts go through in pieces of at most max_tokens tokens
    (B x piece length), which bounds the activations ([B, T, ffn_dim] in the MLP, the [B, 1, T, slot+T] mask);
    the keys/values land in the same cache slots either way."""
    B, P = idx.shape
    step = max(1, max_tokens // B)
    for a in range(0, P, step):
        piece = idx[:, a:a + step]
        logits = model(piece, cache=cache, last_only=True)  # [B, 1, V]
        cache.advance(piece.shape[1])
    return logits[:, -1].float()


def decode_one_token(model, tokens: torch.Tensor, cache: model_lib.KVCache) -> torch.Tensor:
    """tokens [B] (the last sampled token of each row) -> next-token logits [B, V] fp32."""
    logits = model(tokens[:, None], cache=cache)  # [B, 1, V]
    cache.advance(1)
    return logits[:, -1].float()


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


def plan_chunks(lengths: list[int], n: int, batch_size: int | None) -> list[list[tuple[int, int, int]]]:
    """Pack (prompt i, first sample j0, sample count) units into chunks of <= batch_size rows, longest prompts
    first so each chunk pads little. A prompt's n samples stay in one unit (one prefill) unless n > batch_size,
    in which case they are split into pieces of batch_size, each prefilled."""
    cap = batch_size or len(lengths) * n
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties keep the caller's order
    units = [(i, j0, min(cap, n - j0)) for i in order for j0 in range(0, n, cap)]
    chunks, cur, rows = [], [], 0
    for u in units:
        if cur and rows + u[2] > cap:
            chunks.append(cur)
            cur, rows = [], 0
        cur.append(u)
        rows += u[2]
    chunks.append(cur)
    return chunks


# -----------------------------------------------------------------------------------------------------------------
# the decode loop for one chunk


def generate_chunk(model, tokenizer, prompts: list[list[int]], units: list[tuple[int, int, int]], *,
                   max_new_tokens: int, temperature: float, top_k: int, top_p: float, stop: tuple[str, ...],
                   seed: int, n: int, compact_at: float | None, on_token=None, on_finish=None) -> dict:
    """Generate for the rows of `units`; -> {(i, j): (tokens, logprobs [len] fp32 on CPU, finish_reason)}."""
    device = model.embed_tokens.weight.device
    M, stop_ids, V_tok = max_new_tokens, tokenizer.stop_ids, tokenizer.vocab_size
    lens = torch.tensor([len(prompts[i]) for i, _, _ in units])
    P = int(lens.max())
    idx = torch.zeros(len(units), P, dtype=torch.long)  # [U, P] left-padded; pad id 0 is never attended to
    for u, (i, _, _) in enumerate(units):
        idx[u, P - len(prompts[i]):] = torch.tensor(prompts[i])
    cache = model_lib.KVCache.for_model(model, len(units), P + M)
    cache.start = (P - lens).to(device)
    logits = prefill(model, idx.to(device), cache)  # [U, V]

    # n samples share the prefill: copy each prompt's cache row (and its last logits) to its rows
    counts = torch.tensor([c for _, _, c in units])
    rep = torch.repeat_interleave(torch.arange(len(units)), counts).to(device)  # [R]
    if len(rep) != len(units):
        cache.select(rep)
        logits = logits.index_select(0, rep)
    keys = [(i, j0 + k) for i, j0, c in units for k in range(c)]  # row r is sample keys[r] = (i, j)
    R = len(keys)
    kernel_sampler = use_kernel_sampler(device, temperature, top_k, top_p, logits.shape[-1])
    u_all = seeds = None
    if kernel_sampler:
        import kernels  # here only: CPU runs stay free of the triton import
    if temperature > 0 and kernel_sampler:  # per-row seeds [R]: the kernel keys its noise by (seed, step)
        seeds = torch.tensor([sample_seed(seed, i, j) for i, j in keys], dtype=torch.long, device=device)
    elif temperature > 0:
        u_all = row_uniforms(seed, keys, M).to(device)  # [R, M]
    lp_all = torch.zeros(R, M, device=device)  # [R, M] logprob of the token row r picked at step t
    out_tokens: list[list[int]] = [[] for _ in range(R)]
    reason: list[str | None] = [None] * R
    live = list(range(R))  # the rows in the batch, in cache-row order (finished ones linger until compaction)
    live_t = torch.arange(R, device=device)
    tail = stop_tail_len(stop)
    vocab_mask = None
    if logits.shape[-1] > V_tok:  # model rows past the tokenizer's ids (a padded embedding) are not tokens
        vocab_mask = torch.arange(logits.shape[-1], device=device) >= V_tok

    for t in range(M):
        if vocab_mask is not None:
            logits = logits.masked_fill(vocab_mask, float("-inf"))
        if kernel_sampler:  # offset t: all live rows are at step t, so a row's noise is keyed by (its seed, t) only
            tok, lp = kernels.sample_logits(logits, temperature, seeds[live_t] if seeds is not None else 0, t)
        else:
            u = u_all[live_t, t] if u_all is not None else None
            tok, lp = sample_logits(logits, temperature, top_k, top_p, u)
        lp_all[live_t, t] = lp
        # one host sync per step; NaN logits (an overflowing model) show up as id -1 instead of a silent token
        host = torch.where(torch.isnan(lp), -1, tok).tolist()
        n_dead = 0
        for r, x in zip(live, host):
            if reason[r] is not None:
                n_dead += 1
                continue
            if x < 0:
                raise RuntimeError(f"the model produced NaN logits at step {t} (prompt {keys[r][0]})")
            seq = out_tokens[r]
            seq.append(x)
            if on_token is not None:
                on_token(keys[r][0] * n + keys[r][1], x)
            if x in stop_ids:
                reason[r] = "eos"
            elif stop and find_stop(tokenizer.decode(seq[-tail:]), stop) >= 0:
                reason[r] = "stop"
            elif len(seq) == M:
                reason[r] = "length"
            if reason[r] is not None:
                n_dead += 1
                if on_finish is not None:
                    on_finish(len(seq))
        if n_dead == len(live):
            break
        if compact_at is not None and n_dead > 0 and n_dead >= compact_at * len(live):
            # drop finished rows so they stop costing compute (index_select copies the cache: done rarely)
            keep = [p for p, r in enumerate(live) if reason[r] is None]
            keep_t = torch.tensor(keep, device=device)
            cache.select(keep_t)
            tok = tok.index_select(0, keep_t)
            live = [live[p] for p in keep]
            live_t = live_t.index_select(0, keep_t)
        logits = decode_one_token(model, tok, cache)

    lp_all = lp_all.cpu()
    return {keys[r]: (out_tokens[r], lp_all[r, :len(out_tokens[r])], reason[r]) for r in range(R)}


# -----------------------------------------------------------------------------------------------------------------
# the entry point


def generate(model, tokenizer, prompts, *, n: int = 1, max_new_tokens: int = 256, temperature: float = 0.0,
             top_k: int = 0, top_p: float = 1.0, stop: Sequence[str] = (), seed: int | None = None,
             batch_size: int | None = None, progress: bool = False,
             on_token: Callable[[int, int], None] | None = None, compact_at: float | None = 0.25) -> list[Completion]:
    """Complete each prompt n times; -> list of Completion, index i * n + j = sample j of prompt i.

    prompts: str (encoded with BOS when the tokenizer has one) or token-id lists (taken verbatim).
    temperature 0 is greedy (top_k/top_p are then ignored). stop: strings that end a row (checked on the
    generated text only); the tokenizer's stop_ids end a row as "eos". seed None draws one from torch's global RNG.
    batch_size: sequences decoded together (default: all). on_token(index, token_id) is called for every generated
    token as it arrives (streaming). compact_at: drop finished rows from the batch once this fraction of it is
    finished (None: never; results are the same either way, it only saves compute)."""
    stop = check_args(model, tokenizer, n, max_new_tokens, temperature, top_k, top_p, stop, seed, batch_size)
    if compact_at is not None and not (isinstance(compact_at, (int, float)) and 0 <= compact_at <= 1):
        raise UserError(f"compact_at must be a fraction in [0, 1] or None (never compact), got {compact_at!r}")
    ids = encode_prompts(tokenizer, prompts, model.config.vocab_size)
    check_lengths(ids, max_new_tokens, model.config.max_seq_len)
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())  # follows torch.manual_seed, like torch.multinomial would
    results = {}
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
            for units in plan_chunks([len(p) for p in ids], n, batch_size):
                results.update(generate_chunk(
                    model, tokenizer, ids, units, max_new_tokens=max_new_tokens, temperature=float(temperature),
                    top_k=top_k, top_p=float(top_p), stop=stop, seed=seed, n=n, compact_at=compact_at,
                    on_token=on_token, on_finish=on_finish))
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
