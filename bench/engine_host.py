"""
The generation engine's host time per decode step: what the GPU waits for between two graph replays.

    python bench/engine_host.py [--batch_sizes=1,16,64,256] [--new_tokens=128] [--repeats=3]

On a GPU a decode step is the captured graph's kernels plus the engine's Python around it (admission, block
tables, the sampler's per-row state, the copies up and down, appending each row's token, stop checks). This
measures the second part alone, on the CPU: the static decode step (decode_step.DecodeStep, what CUDA runs) with
its model replaced by constant logits (DecodeStep.logits patched: no layers, no lm_head), so what is left is the
engine's bookkeeping, the buffers' copies and a draw over a 1,024-token vocabulary. Rows decode new_tokens tokens
with no stop (greedy, then sampled at temperature 1), then sampled with RL's stop string "\nUser:" through a real
byte-level BPE (trained here on README.md, 1,024 tokens: the stop check decodes tokens); per step =
(t(new_tokens + 1) - t(1)) / new_tokens, best of --repeats, which removes the prefill. One torch thread (the host
side of a GPU run is one thread too).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import decode_step  # noqa: E402
import sample  # noqa: E402
from bench.sample import FixedLengthTokenizer  # noqa: E402
from configurator import run_cli  # noqa: E402
from model import Llama, LlamaConfig  # noqa: E402


def constant_logits(step, B: int, W: int) -> torch.Tensor:
    """[B, V] fp32, token 5 most likely: the model's work taken out of the step."""
    logits = torch.zeros(B, step.model.config.vocab_size)
    logits[:, 5] = 4.0
    return logits


def per_step(model, tok, B: int, n_new: int, repeats: int, **kw) -> float:
    prompts = torch.randint(0, model.config.vocab_size, (B, 32)).tolist()

    def timed(n):
        t0 = time.perf_counter()
        sample.generate(model, tok, prompts, max_new_tokens=n, static_step=True, **kw)
        return time.perf_counter() - t0
    timed(n_new + 1)  # warm-up (and the engine's buffers at this size)
    return (min(timed(n_new + 1) for _ in range(repeats)) - min(timed(1) for _ in range(repeats))) / n_new


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch_sizes", default="1,16,64,256")
    ap.add_argument("--new_tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset("nano")).eval()
    decode_step.DecodeStep.logits = constant_logits
    tok = FixedLengthTokenizer(model.config.vocab_size)
    from data.tokenizer import Tokenizer
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")) as f:
        bpe = Tokenizer.train(f.read().splitlines(), vocab_size=model.config.vocab_size)
    bpe_decode, bpe = bpe.decode, FixedLengthTokenizer(bpe.vocab_size)  # no stop ids: the cap or the stop string
    bpe.decode = bpe_decode
    print(f"engine host time per decode step (model replaced by constant logits), {args.new_tokens} new tokens, "
          f"best of {args.repeats}")
    print(f"{'rows':>5} | {'greedy ms':>9} {'sampled ms':>10} {'+ stop ms':>9} | {'us/row greedy':>13}")
    for B in [int(b) for b in args.batch_sizes.split(",")]:
        g = per_step(model, tok, B, args.new_tokens, args.repeats)
        s = per_step(model, tok, B, args.new_tokens, args.repeats, temperature=1.0, seed=0)
        st = per_step(model, bpe, B, args.new_tokens, args.repeats, temperature=1.0, seed=0, stop=["\nUser:"])
        print(f"{B:>5} | {g * 1e3:>9.3f} {s * 1e3:>10.3f} {st * 1e3:>9.3f} | {g / B * 1e6:>13.1f}")


if __name__ == "__main__":
    run_cli(main)
