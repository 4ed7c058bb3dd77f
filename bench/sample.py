"""
Generation speed: sample.generate vs Hugging Face transformers' `generate` on the same weights, same machine, same
run; and how close our decode step comes to the memory-bandwidth bound.

    python bench/sample.py [--preset micro] [--batch_sizes 1,16,64] [--prompt_len 32] [--new_tokens 64] [--threads 1]
    python bench/sample.py --rl [--prompts 64 --samples 8 --typical 32 --threads 1]   # the RL-shaped case
    python bench/sample.py --device=cuda --preset=llama3.2-1b [--rl]    # on a GPU, bf16: + GPU time and floor

The RL-shaped case (--rl): prompts x samples responses at temperature 1, lengths spread like real RL: the tiny
model's EOS probability is set to 1/typical for each of a response's first zone x typical tokens and to 0 after
(eos_schedule, applied to the logits identically on both sides: our model's forward, transformers' logits
processor), so most responses stop early at EOS (geometric, mean ~typical) and the ~e^-zone that survive run to the
cap, cap_factor x typical. A random-weight model has no EOS behaviour of its own; a schedule of the response
position alone needs no per-row state, so both engines see the same distribution whatever order they decode rows
in. Reported: useful tokens/s (each response up to and including its EOS; transformers keeps decoding finished
rows until the batch ends, those tokens do not count) and the KV memory each engine needed at its peak against a
contiguous per-row cache of prompt + cap slots for every sequence.

Both sides decode greedily a fixed number of new tokens (ours: a tokenizer stand-in with no stop ids; transformers:
min_new_tokens = max_new_tokens) from the same random prompts with their KV caches, fp32 on CPU. Timings are the
best of --repeats runs. Decode-only step time is (t(new_tokens) - t(1)) / (new_tokens - 1), which removes the
prefill. Memory traffic per decode step is the weights (every matrix is read once per step, the lm_head included)
plus the KV cache read by attention at the average context length; it is compared with the machine's copy
bandwidth, measured here with a large tensor copy (bytes read + bytes written per second).

--device=cuda (default dtype bfloat16 there): both models on the GPU; the table adds the decode step's GPU kernel
time (torch.profiler: the kernels' own time, so wall - GPU is launch and host overhead) and the step's memory floor
(its bytes at the measured copy bandwidth). Our engine runs its static decode step there (CUDA graphs).
"""
from __future__ import annotations

import argparse
import inspect
import math
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import decode_step  # noqa: E402
import sample  # noqa: E402
from bench import hf_peer  # noqa: E402
from configurator import UserError, run_cli  # noqa: E402
import model as model_lib  # noqa: E402
from model import Llama, LlamaConfig  # noqa: E402


class FixedLengthTokenizer:
    """What generate needs from a tokenizer, with no stop ids, so every row runs to max_new_tokens."""
    bos_id = None
    stop_ids = frozenset()

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def encode(self, text, bos=False, eos=False):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return " ".join(map(str, ids))


DEVICE = torch.device("cpu")  # set by main from --device


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def gpu_time(fn) -> float:
    """Seconds the GPU spent in kernels while fn ran (torch.profiler, the kernels' own time)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync()
    return sum(e.self_device_time_total for e in prof.key_averages()) / 1e6


def copy_bandwidth(n_bytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """Bytes moved per second by a large tensor copy (read src + write dst), on the benchmark's device."""
    src = torch.ones(n_bytes // 4, device=DEVICE)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch the pages first
    return 2 * n_bytes / best_time(lambda: dst.copy_(src), repeats)


def step_bytes(model: Llama, batch: int, context: float) -> float:
    """Bytes a decode step reads: every weight once (its dtype), plus K and V of `context` slots for every row."""
    cfg = model.config
    elem = model.embed_tokens.weight.element_size()
    weights = sum(p.numel() for p in model.parameters()) * elem  # tied weights counted once
    kv = 2 * cfg.n_layers * batch * cfg.n_kv_heads * context * cfg.head_dim * elem
    return weights + kv


class EosTokenizer(FixedLengthTokenizer):
    """FixedLengthTokenizer whose EOS id ends a row."""

    def __init__(self, vocab_size: int, eos: int):
        super().__init__(vocab_size)
        self.stop_ids = frozenset({eos})


def eos_schedule(logits: torch.Tensor, t: torch.Tensor, eos: int, typical: int, zone: float) -> None:
    """In place: logits [B, V] of response token t [B] get the EOS logit that makes P(EOS) = 1/typical at
    temperature 1 while t < zone * typical, and -inf (no EOS) after."""
    h = 1.0 / typical
    others = logits.float().clone()
    others[:, eos] = float("-inf")
    target = others.logsumexp(-1) + math.log(h / (1 - h))  # p / (1 - p) = exp(eos - logsumexp(others))
    logits[:, eos] = torch.where(t < zone * typical, target, torch.full_like(target, float("-inf"))).to(logits.dtype)


def with_eos_schedule(model: Llama, prompt_len: int, eos: int, typical: int, zone: float) -> None:
    """Our side: the model's forward applies eos_schedule to the last position's logits of every cached call
    (prefill and decode). The response position of the predicted token is the input's last position + 1 -
    prompt_len (every prompt has prompt_len tokens)."""
    base = model.forward

    def forward(idx, targets=None, pos=None, cache=None, last_only=False, **kw):
        p = pos if pos is not None or cache is None else cache.positions(idx.shape[1])  # [B, T]
        out = base(idx, targets, pos, cache, last_only, **kw)
        if cache is not None and targets is None:
            eos_schedule(out[:, -1], p[:, -1] + 1 - prompt_len, eos, typical, zone)
        return out
    model.forward = forward
    base_logits = decode_step.DecodeStep.logits  # the static decode step (CUDA) computes logits without forward

    def step_logits(step, B, W):  # the input token's position is its row's cached length
        out = base_logits(step, B, W)
        eos_schedule(out, step.lens[:B] + 1 - prompt_len, eos, typical, zone)
        return out
    decode_step.DecodeStep.logits = step_logits


class KVTracker:
    """Peak bytes of today's contiguous model.KVCache: its tensors at allocation, and during a row compaction
    (select) the old cache plus half the new one (keys are rebuilt while the old keys and values are alive)."""

    def __init__(self):
        self.peak, self.now = 0, 0
        self.orig = (model_lib.KVCache.__init__, model_lib.KVCache.select)
        tracker = self

        def init(cache, *a, **k):
            tracker.orig[0](cache, *a, **k)
            tracker.now = self.bytes(cache)
            tracker.peak = max(tracker.peak, tracker.now)

        def select(cache, rows):
            old = self.bytes(cache)
            tracker.orig[1](cache, rows)
            tracker.now = self.bytes(cache)
            tracker.peak = max(tracker.peak, old + tracker.now // 2)
        model_lib.KVCache.__init__, model_lib.KVCache.select = init, select

    @staticmethod
    def bytes(cache) -> int:
        return sum(t.numel() * t.element_size() for t in cache.k + cache.v)

    def close(self):
        model_lib.KVCache.__init__, model_lib.KVCache.select = self.orig


def useful_tokens(rows: list[list[int]], eos: int) -> int:
    """Tokens of each response up to and including its first EOS (all of them when it has none)."""
    return sum(r.index(eos) + 1 if eos in r else len(r) for r in rows)


def rl_case(model: Llama, hf, args) -> dict:
    """The RL-shaped workload on both engines; prints the table and returns the numbers."""
    cfg, P, eos = model.config, args.prompt_len, args.eos
    cap = args.cap_factor * args.typical
    prompts = torch.randint(2, cfg.vocab_size, (args.prompts, P), generator=torch.Generator().manual_seed(0)).tolist()
    with_eos_schedule(model, P, eos, args.typical, args.zone)
    tok = EosTokenizer(cfg.vocab_size, eos)
    tracker = KVTracker() if not hasattr(sample, "last_stats") else None
    kw = {}
    if args.kv_fraction:  # a paged engine's pool at this fraction of the contiguous cache's bytes
        if "kv_blocks" not in inspect.signature(sample.generate).parameters:
            raise UserError("--kv_fraction needs the paged engine (sample.generate(kv_blocks=)); this one has none")
        rows_blocks = args.prompts * args.samples * -(-(P + cap) // 16)  # 16: generate's default block_size
        kw["kv_blocks"] = max(1, int(args.kv_fraction * rows_blocks))
    def run_ours():
        sync()
        t0 = time.perf_counter()
        out = sample.generate(model, tok, prompts, n=args.samples, max_new_tokens=cap, temperature=1.0, seed=0, **kw)
        sync()
        return out, time.perf_counter() - t0
    # warm-up on a small call (kernel compiles, CUDA / cuBLAS start-up), as transformers gets below; the timed call
    # then makes its own engine (a larger pool, its CUDA graphs captured inside the timing), as each step of an RL
    # run under FSDP does (a new rollout copy); "again" is the same call once more, its graphs kept from the first
    # (RL without FSDP: the model keeps them across steps)
    sample.generate(model, tok, prompts[:2], n=2, max_new_tokens=8, temperature=1.0, seed=1)
    ours, t_ours = run_ours()
    static = getattr(sample, "last_stats", {}).get("static_step")  # the kept engine is the static step's
    t_again = run_ours()[1] if static and hasattr(sample, "release_engine") else None
    if tracker is not None:
        tracker.close()
        kv_ours, pool = tracker.peak, tracker.peak
    else:  # the paged engine reports its pool and the most blocks it held at once
        st = sample.last_stats
        kv_ours, pool = st["peak_blocks"] * st["block_bytes"], st["pool_blocks"] * st["block_bytes"]
        print(f"  paged engine: {st['pool_blocks']} blocks in the pool, peak {st['peak_blocks']} in use, "
              f"{st.get('preemptions', 0)} preemptions")

    n_ours = useful_tokens([c.tokens for c in ours], eos)
    if args.ours_only:
        print(f"ours: {n_ours:,} useful tokens in {t_ours:.1f} s = {n_ours / t_ours:,.0f} tok/s; KV peak "
              f"{kv_ours / 2**20:,.1f} MiB, pool {pool / 2**20:,.1f} MiB")
        return {"ours_tok_s": n_ours / t_ours, "kv_peak_mb": kv_ours / 2**20, "kv_pool_mb": pool / 2**20}
    transformers = hf_peer.transformers()

    class HFEosSchedule(transformers.LogitsProcessor):
        def __call__(self, input_ids, scores):
            t = torch.full((scores.shape[0],), input_ids.shape[1] - P, device=scores.device)
            eos_schedule(scores, t, eos, args.typical, args.zone)
            return scores

    x = torch.tensor(prompts, device=DEVICE)
    with torch.inference_mode():  # warm-up, as ours
        hf.generate(x[:2], attention_mask=torch.ones_like(x[:2]), max_new_tokens=8, do_sample=True,
                    num_return_sequences=2, pad_token_id=eos)
    torch.manual_seed(0)
    sync()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=cap, do_sample=True, temperature=1.0,
                          top_k=0, top_p=1.0, num_return_sequences=args.samples, eos_token_id=eos, pad_token_id=eos,
                          logits_processor=transformers.LogitsProcessorList([HFEosSchedule()]))
    t_hf = time.perf_counter() - t0
    n_hf = useful_tokens(out[:, P:].tolist(), eos)
    lens = sorted(len(c.tokens) for c in ours)
    rows = args.prompts * args.samples
    elem = model.embed_tokens.weight.element_size()
    contiguous = rows * (P + cap) * 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * elem  # every row at cap
    r = {"ours_tok_s": n_ours / t_ours, "hf_tok_s": n_hf / t_hf, "ours_s": t_ours, "hf_s": t_hf,
         "median_len": lens[len(lens) // 2], "mean_len": sum(lens) / rows, "at_cap": sum(n == cap for n in lens) / rows,
         "kv_peak_mb": kv_ours / 2**20, "kv_pool_mb": pool / 2**20, "contiguous_mb": contiguous / 2**20}
    print(f"RL-shaped: {args.prompts} prompts x {args.samples} samples, prompt {P}, temperature 1, cap {cap} "
          f"(= {args.cap_factor} x typical {args.typical}); our responses: median {r['median_len']}, mean "
          f"{r['mean_len']:.1f}, {r['at_cap']:.1%} at the cap")
    print(f"  useful tok/s: ours {r['ours_tok_s']:,.0f} ({n_ours:,} in {t_ours:.1f} s), transformers "
          f"{r['hf_tok_s']:,.0f} ({n_hf:,} in {t_hf:.1f} s): ratio {r['ours_tok_s'] / r['hf_tok_s']:.2f}x")
    if t_again is not None:
        r["ours_again_tok_s"] = n_ours / t_again
        print(f"  again, engine kept: ours {r['ours_again_tok_s']:,.0f} tok/s ({t_again:.2f} s): ratio "
              f"{r['ours_again_tok_s'] / r['hf_tok_s']:.2f}x")
    print(f"  KV memory: ours peak {r['kv_peak_mb']:,.1f} MiB (pool {r['kv_pool_mb']:,.1f} MiB) vs a contiguous "
          f"per-row cache {r['contiguous_mb']:,.1f} MiB: {r['kv_peak_mb'] / r['contiguous_mb']:.2f}x")
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="micro")
    ap.add_argument("--batch_sizes", default="1,16,64")
    ap.add_argument("--prompt_len", type=int, default=32)
    ap.add_argument("--new_tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads for both sides (0 = torch's default); 1 is steadier on a shared machine, "
                         "where spinning OpenMP threads slow small matmuls down many times over")
    ap.add_argument("--rl", action="store_true", help="run the RL-shaped case instead of the fixed-length table")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--typical", type=int, default=32, help="mean length of a response that stops at EOS")
    ap.add_argument("--cap_factor", type=int, default=8, help="the response cap, in typical lengths")
    ap.add_argument("--zone", type=float, default=3.0, help="EOS can only come in the first zone x typical tokens")
    ap.add_argument("--eos", type=int, default=1, help="the token id that ends a response")
    ap.add_argument("--kv_fraction", type=float, default=0.0,
                    help="paged engine only: its KV pool at this fraction of the contiguous cache (0 = its default)")
    ap.add_argument("--ours_only", action="store_true", help="--rl: time our engine only (comparing engines)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (| cuda:N)")
    ap.add_argument("--dtype", default="auto", help="auto (bfloat16 on cuda, float32 on cpu) | float32 | bfloat16")
    args = ap.parse_args()
    global DEVICE
    if args.device.split(":")[0] not in ("cpu", "cuda") or (args.device != "cpu" and not torch.cuda.is_available()):
        raise UserError(f"--device must be cpu or cuda (with a CUDA device present), got {args.device!r}")
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    if args.dtype not in ("auto", *dtypes):
        raise UserError(f"--dtype must be auto, float32 or bfloat16, got {args.dtype!r}")
    DEVICE = torch.device(args.device)
    dtype = dtypes.get(args.dtype, torch.bfloat16 if DEVICE.type == "cuda" else torch.float32)
    for name in ("prompts", "samples", "typical", "cap_factor"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.typical < 2 or not args.zone > 0 or not 0 <= args.kv_fraction <= 1:
        raise UserError(f"need --typical >= 2, --zone > 0, 0 <= --kv_fraction <= 1; got {args.typical}, {args.zone}, "
                        f"{args.kv_fraction}")
    if args.threads < 0:
        raise UserError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers = hf_peer.transformers()

    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset(args.preset)).eval()
    with tempfile.TemporaryDirectory() as tmp:  # the same weights, through our HF export
        model.save_pretrained(tmp, dtype=dtype)
        hf = hf_peer.load_llama(tmp, dtype=dtype).to(DEVICE)
    model = model.to(DEVICE, dtype)
    where = (f"{torch.cuda.get_device_name(DEVICE)}" if DEVICE.type == "cuda" else
             f"{torch.get_num_threads()} threads")
    dt = str(dtype).removeprefix("torch.")
    if args.rl:
        print(f"preset {args.preset}: {model.num_params() / 1e6:.2f}M params, {dt}, {where}, "
              f"torch {torch.__version__}, transformers {transformers.__version__}")
        return rl_case(model, hf, args)
    tok = FixedLengthTokenizer(model.config.vocab_size)
    cfg, P, N = model.config, args.prompt_len, args.new_tokens
    bw = copy_bandwidth()
    print(f"preset {args.preset}: {model.num_params() / 1e6:.2f}M params, vocab {cfg.vocab_size}, {dt}, "
          f"{where}, torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"prompt {P} tokens, {N} new tokens (greedy), best of {args.repeats}; "
          f"measured copy bandwidth {bw / 1e9:.1f} GB/s")

    def ours(prompts, n_new):
        return sample.generate(model, tok, prompts, max_new_tokens=n_new)

    def theirs(prompts, n_new):
        x = torch.tensor(prompts, device=DEVICE)
        with torch.inference_mode():
            return hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n_new, min_new_tokens=n_new,
                               do_sample=False, eos_token_id=0, pad_token_id=0)

    header = (f"{'batch':>5} | {'ours tok/s':>10} {'HF tok/s':>9} {'ratio':>6} | {'ours ms/step':>12} "
              f"{'HF ms/step':>10} | {'MB/step':>7} {'ours GB/s':>9} {'of bw':>6} | same tokens")
    print(header)
    print("-" * len(header))
    for B in [int(b) for b in args.batch_sizes.split(",")]:
        prompts = torch.randint(0, cfg.vocab_size, (B, P)).tolist()
        ours(prompts, 2), theirs(prompts, 2)  # warm-up
        t_ours = best_time(lambda: ours(prompts, N), args.repeats)
        t_hf = best_time(lambda: theirs(prompts, N), args.repeats)
        s_ours = (t_ours - best_time(lambda: ours(prompts, 1), args.repeats)) / (N - 1)
        s_hf = (t_hf - best_time(lambda: theirs(prompts, 1), args.repeats)) / (N - 1)
        a = [c.tokens for c in ours(prompts, N)]
        b = theirs(prompts, N)[:, P:].tolist()
        same = sum(x == y for x, y in zip(a, b))
        mb = step_bytes(model, B, P + N / 2)
        print(f"{B:>5} | {B * N / t_ours:>10.0f} {B * N / t_hf:>9.0f} {t_hf / t_ours:>5.2f}x | {s_ours * 1e3:>12.2f} "
              f"{s_hf * 1e3:>10.2f} | {mb / 1e6:>7.1f} {mb / s_ours / 1e9:>9.1f} {mb / s_ours / bw:>5.0%} | "
              f"{same}/{B}")
        if DEVICE.type == "cuda":  # how busy the step keeps the GPU, and how far it is from its memory floor
            g = (gpu_time(lambda: ours(prompts, N)) - gpu_time(lambda: ours(prompts, 1))) / (N - 1)
            print(f"      decode step, batch {B}: wall {s_ours * 1e3:.2f} ms, GPU kernels {g * 1e3:.2f} ms "
                  f"(busy {g / s_ours:.0%}), memory floor {mb / bw * 1e3:.2f} ms")
    w = step_bytes(model, 0, 0)
    print(f"ratio = HF time / our time (> 1: ours is faster). Weights are {w / 1e6:.1f} MB per step; a weight set "
          "this small can stay in the CPU's caches, so 'of bw' above 100% means cache-resident, not DRAM-bound.")


if __name__ == "__main__":
    run_cli(main)
