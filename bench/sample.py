"""
Generation speed: sample.generate vs Hugging Face transformers' `generate` on the same weights, same machine, same
run; and how close our decode step comes to the memory-bandwidth bound.

    python bench/sample.py [--preset micro] [--batch_sizes 1,16,64] [--prompt_len 32] [--new_tokens 64] [--threads 1]

Both sides decode greedily a fixed number of new tokens (ours: a tokenizer stand-in with no stop ids; transformers:
min_new_tokens = max_new_tokens) from the same random prompts with their KV caches, fp32 on CPU. Timings are the
best of --repeats runs. Decode-only step time is (t(new_tokens) - t(1)) / (new_tokens - 1), which removes the
prefill. Memory traffic per decode step is the weights (every matrix is read once per step, the lm_head included)
plus the KV cache read by attention at the average context length; it is compared with the machine's copy
bandwidth, measured here with a large tensor copy (bytes read + bytes written per second).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sample  # noqa: E402
from configurator import UserError, run_cli  # noqa: E402
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


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def copy_bandwidth(n_bytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """Bytes moved per second by a large tensor copy (read src + write dst)."""
    src = torch.ones(n_bytes // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch the pages first
    return 2 * n_bytes / best_time(lambda: dst.copy_(src), repeats)


def step_bytes(model: Llama, batch: int, context: float) -> float:
    """Bytes a decode step reads: every weight once (fp32), plus K and V of `context` slots for every row."""
    cfg = model.config
    elem = model.embed_tokens.weight.element_size()
    weights = sum(p.numel() for p in model.parameters()) * elem  # tied weights counted once
    kv = 2 * cfg.n_layers * batch * cfg.n_kv_heads * context * cfg.head_dim * elem
    return weights + kv


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
    args = ap.parse_args()
    if args.threads < 0:
        raise UserError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset(args.preset)).eval()
    with tempfile.TemporaryDirectory() as tmp:  # the same weights, through our HF export
        model.save_pretrained(tmp)
        hf = transformers.LlamaForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    tok = FixedLengthTokenizer(model.config.vocab_size)
    cfg, P, N = model.config, args.prompt_len, args.new_tokens
    bw = copy_bandwidth()
    print(f"preset {args.preset}: {model.num_params() / 1e6:.2f}M params, vocab {cfg.vocab_size}, fp32, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"prompt {P} tokens, {N} new tokens (greedy), best of {args.repeats}; "
          f"measured copy bandwidth {bw / 1e9:.1f} GB/s")

    def ours(prompts, n_new):
        return sample.generate(model, tok, prompts, max_new_tokens=n_new)

    def theirs(prompts, n_new):
        x = torch.tensor(prompts)
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
    w = step_bytes(model, 0, 0)
    print(f"ratio = HF time / our time (> 1: ours is faster). Weights are {w / 1e6:.1f} MB per step; a weight set "
          "this small can stay in the CPU's caches, so 'of bw' above 100% means cache-resident, not DRAM-bound.")


if __name__ == "__main__":
    run_cli(main)
