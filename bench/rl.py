"""
Time of one GRPO step split into its phases: rollout (sample.generate + grading), log-prob recompute (the no-grad
training forward that gives the old log-probs), and update (forward + backward + optimizer), with tokens/s of each.

    python bench/rl.py                          # the built-in default model (out/midtrain) on synthetic prompts
    python bench/rl.py --ckpt= --preset=micro   # a random model of a model.PRESETS shape instead

The reward is a seeded coin flip per response (--reward=random, the default), so nearly every group is mixed and
the update runs on every sequence: the worst case for update time (with the real grader, --reward=math, the
uniform groups of a weak model are skipped by the update and it is much cheaper). ppo_epochs=2 by default, so the
old log-probs are recomputed (with one on-policy update per step rl.py takes them from the update's own forward).
Timings: the first step is a warm-up and is not counted; the median of the others is reported.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import statistics
import sys
import time
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import benchmarks  # noqa: E402
import model as model_lib  # noqa: E402
import policy_update  # noqa: E402
import rl  # noqa: E402
from configurator import UserFileError, run_cli  # noqa: E402
from data.tokenizer import Tokenizer  # noqa: E402


def load_model(args):
    if args.ckpt:
        net, tok, _ = model_lib.load_checkpoint(args.ckpt)
        return net, tok, args.ckpt
    if os.path.isdir(args.tokenizer):
        tok = Tokenizer.from_pretrained(args.tokenizer)
    else:  # a tiny stand-in BPE (byte-level: encodes anything)
        words = [f"Question: What is {a} + {b}? Answer: {a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}."
                 for a in range(30) for b in range(0, 30, 7)]
        tok = Tokenizer.train(words, vocab_size=280)
    cfg = model_lib.LlamaConfig.from_preset(args.preset, vocab_size=tok.vocab_size, bos_id=tok.bos_id,
                                            eos_id=tok.eos_id)
    torch.manual_seed(0)
    return model_lib.Llama(cfg), tok, f"random {args.preset}"


def load_examples(args, tok):
    if args.ckpt and os.path.isfile(args.prompts):
        return benchmarks.load_prompts(args.prompts, tok, rl.DEFAULTS["template"], rl.DEFAULTS["max_prompt_len"],
                                       log=lambda s: None)
    rng = random.Random(0)
    rows = []
    for _ in range(200):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        q = f"Question: Mia has {a} apples and buys {b} more. How many apples does Mia have now?\nAnswer:"
        rows.append({"question": q, "answer": str(a + b), "prompt_ids": tok.encode(q, bos=True)})
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="out/midtrain", help="checkpoint; '' = a random model of --preset")
    p.add_argument("--preset", default="nano")
    p.add_argument("--tokenizer", default="data/synth/tokenizer", help="for a random model (--ckpt=)")
    p.add_argument("--prompts", default="data/synth/rl_train.jsonl")
    p.add_argument("--group_size", type=int, default=8)
    p.add_argument("--prompts_per_step", type=int, default=32)
    p.add_argument("--max_new_tokens", type=int, default=96)
    p.add_argument("--ppo_epochs", type=int, default=2)
    p.add_argument("--micro_batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=4, help="timed steps (after one warm-up step)")
    p.add_argument("--reward", choices=("random", "math"), default="random")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ckpt and not os.path.exists(args.ckpt):
        raise UserFileError(f"--ckpt={args.ckpt!r} not found: run `python midtrain.py`, or pass --ckpt= for a "
                            "random model")

    net, tok, what = load_model(args)
    examples = load_examples(args, tok)
    c = SimpleNamespace(**{**copy.deepcopy(rl.DEFAULTS), "group_size": args.group_size,
                           "prompts_per_step": args.prompts_per_step, "ppo_epochs": args.ppo_epochs,
                           "micro_batch": args.micro_batch, "stop": rl.DEFAULTS["stop"]})
    d = SimpleNamespace(ddp=False, rank=0, world_size=1, device=torch.device("cpu"), master=True)
    if args.reward == "random":
        coin = random.Random(0)
        reward_fn = lambda comp, ex: coin.choice((1.0, -1.0))  # noqa: E731
    else:
        reward_fn = rl.make_math_reward()
    opt = net.configure_optimizer(c.lr, c.weight_decay, (c.beta1, c.beta2))
    sampler = {"epoch": 0, "pos": 0}
    rows = []
    for step in range(args.steps + 1):
        t0 = time.perf_counter()
        batch, rs = rl.collect_rollouts(net, tok, examples, c, d, step, sampler, args.max_new_tokens, reward_fn,
                                        contextlib.nullcontext)
        t_roll = time.perf_counter() - t0
        net.train()
        us = policy_update.update_policy(net, opt, batch, c, d, loss_max_len=args.max_new_tokens, seed=step)
        trained = [r for r in batch if r.advantage != 0]
        seq_tokens = sum(len(r.prompt_tokens) + len(r.tokens) - 1 for r in trained)  # forward positions
        rows.append({"rollout_s": t_roll, "recompute_s": us["recompute_s"], "update_s": us["update_s"],
                     "step_s": time.perf_counter() - t0, "gen_tokens": rs["gen_tokens"],
                     "gen_tok_s": rs["gen_tokens"] / t_roll,
                     # with one on-policy update there is no separate recompute (the update's forward gives them)
                     "recompute_tok_s": seq_tokens / us["recompute_s"] if args.ppo_epochs > 1 else 0.0,
                     "update_tok_s": args.ppo_epochs * seq_tokens / us["update_s"] if us["update_s"] else 0.0,
                     "trained_seqs": len(trained), "mean_response_len": rs["response_len"]})
    timed = rows[1:]
    med = {k: statistics.median(r[k] for r in timed) for k in timed[0]}
    print(f"model: {what}, {net.num_params() / 1e6:.2f}M params | torch threads {torch.get_num_threads()} | "
          f"{args.prompts_per_step} prompts x {args.group_size} responses, <= {args.max_new_tokens} new tokens, "
          f"ppo_epochs {args.ppo_epochs}, micro_batch {args.micro_batch}, reward {args.reward}")
    print(f"median of {len(timed)} steps (after 1 warm-up):")
    total = med["rollout_s"] + med["recompute_s"] + med["update_s"]
    for k, label, tps in (("rollout_s", "rollout (generate + grade)", med["gen_tok_s"]),
                          ("recompute_s", "old log-prob recompute", med["recompute_tok_s"]),
                          ("update_s", f"update ({args.ppo_epochs} epochs fwd+bwd+step)", med["update_tok_s"])):
        rate = f"{tps:9,.0f} tok/s" if tps else "  (none: on-policy, taken from the update's forward)"
        print(f"  {label:<34} {med[k]:7.2f} s  {100 * med[k] / total:5.1f}%  {rate}")
    print(f"  {'step':<34} {med['step_s']:7.2f} s  | {med['gen_tokens']:.0f} generated tokens "
          f"(mean response {med['mean_response_len']:.1f}), {med['trained_seqs']:.0f} sequences trained")
    print(json.dumps({k: round(v, 4) for k, v in med.items()}))


if __name__ == "__main__":
    run_cli(main)
