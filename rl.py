"""
Reinforcement learning with a verifiable reward (GRPO), the OctoThinker way: a base model answers math problems,
each answer is graded (+1 when its last \\boxed{} is right, -1 otherwise), and the policy is pushed towards the
answers that beat their group's average. Read top to bottom: knobs, prompts, rollouts and rewards, the loop; the
update (the training forward over micro-batches, the optimizer steps) is in policy_update.py and the objective itself
(advantages, clipped surrogate, KL, loss aggregation) in grpo.py.

    python rl.py                                         # built-in default: synthetic problems, out/midtrain, CPU
    python rl.py config/rl_octothinker_3b.py             # the paper's recipe (GPUs)
    torchrun --nproc_per_node=8 rl.py config/rl_octothinker_1b.py
    python rl.py --resume=True                           # continue out_dir's latest checkpoint

Ctrl-C (SIGINT) or SIGTERM while training: the step finishes, a checkpoint is written, the command that resumes is
printed, exit status 130 / 143 (runtime.install_stop_handler); a second signal quits at once.

One step:
  1. draw prompts_per_step problems; under torchrun each rank rolls out its own disjoint share,
  2. sample group_size responses per problem with sample.generate (no grad, one shared prefill per group),
  3. reward each response with the grader (grader.extract_answer in its strict boxed mode + math_equal, or a
     reward_fn hook),
  4. group-relative advantages: (reward - group mean) / (group std + eps) (or only minus the mean: Dr. GRPO),
  5. old log-probs by the training forward, then ppo_epochs x mini_batches optimizer steps on the clipped
     surrogate; gradients are summed over ranks with losses normalised by global counts, so N ranks make the same
     update as one process holding all the rollouts.
Every checkpoint is the common HF folder (model.save_checkpoint) with optimizer, step, prompt-sampler position and
RNG in state.pt, so `--resume=True` continues the run exactly.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import sys
import time
from types import SimpleNamespace
from typing import Callable

import torch
import torch.distributed as dist
from tqdm import tqdm

import benchmarks
import grader
import grpo
import model as model_lib
import sample
from configurator import UserError, UserFileError, configure, knobs, print_config, run_cli
# distributed setup, precision, checkpoints, RNG state and the metrics log work the same in both training scripts
from policy_update import Rollout, chunks, update_policy  # steps 4-5: the training forward and the optimizer steps
from runtime import (PARALLEL, all_reduce_, autocast_for, checkpointing_for, compile_model, distributed, exit_on_stop,
                     full_model, get_lr, install_stop_handler, keep_engine_for, load_optimizer_state, memory_table,
                     progress_bar, restore_stop_handler, rng_state, save_checkpoint, set_rng_state, shard_model,
                     stop_requested, sum_gradients, trim_metrics, wandb_init, wandb_record, world_size_from_env)

# -----------------------------------------------------------------------------------------------------------------
# knobs: defaults of the built-in run; a config file and --key=value flags override them (configurator.py)

# start and output
init_from = "out/midtrain"  # our checkpoint / run folder (follows `latest`) or an HF snapshot with a tokenizer
out_dir = "out/rl"
resume = False  # continue out_dir from its `latest` checkpoint
# prompts: a jsonl file, one problem per line
prompt_file = "data/synth/rl_train.jsonl"
question_field = "question"
answer_field = "answer"  # gold final answer; a GSM8K-style solution ending in "#### N" gives N
template = "Question: {question}\nAnswer:"  # str.format with {question}; "r1" = benchmarks.R1_TEMPLATE
stop = ["\n\nQuestion:", "Question:"]  # stop strings of a response (the R1 template uses ["\nUser:"])
max_prompt_len = 256  # tokens (BOS and template included); longer prompts are dropped
# rollouts
group_size = 8  # responses per prompt (GRPO's group, n)
prompts_per_step = 32  # over all ranks
max_response_len = {0: 192}  # tokens; an int, or a stair schedule {from_step: tokens} (long-CoT answers: ~200)
# sampling temperature; the trainer's log-probs use the same one, so ratios are consistent. 0.7 for the built-in
# ~1M model: at 1.0 its samples are right half as often as its greedy answers (12% vs 25% held out)
temperature = 0.7
top_p = 1.0
rollout_batch_size = 0  # sequences decoded together per rank; 0 = all of a rank's rollouts at once
# the rollout engine's KV pool: GB (> 1) or a fraction (<= 1) of free GPU memory, allocated at once (the newest
# sequence is preempted and recomputed when it runs out); 0 = a pool that grows as needed (sample.generate)
kv_budget = 0.0
# keep the rollout engine through the update instead of freeing it: its KV pool and CUDA graphs (and under FSDP the
# full-weight copy it decodes from, then refreshed in place from the shards) serve the next step, which replays the
# graphs instead of capturing them again. "auto": when memory_model says the update still fits beside them
# (runtime.keep_engine_for: it never turns checkpointing on). On CPU there are no graphs: it saves allocations only
keep_engine = "auto"
# reward: the last \boxed{} answer graded against the gold answer
reward_correct = 1.0
reward_wrong = -1.0
reward_no_answer = -1.0  # no \boxed{} at all (or an unclosed one)
grade_timeout = 2.0  # seconds of sympy per grading call (grader.math_equal)
# advantages
norm_adv_by_std = True  # False: advantage = reward - group mean (Dr. GRPO)
adv_eps = 1e-6
drop_uniform_groups = False  # dynamic sampling (DAPO): drop groups whose rewards are all equal, refill with more
max_refill_rounds = 4  # extra rollout rounds per step when refilling
# the update
loss_agg = "token-mean"  # "token-mean" | "seq-mean-token-mean" | "seq-mean-token-sum-norm"
loss_max_len = 0  # the constant of "seq-mean-token-sum-norm"; 0 = the step's max_response_len
ppo_epochs = 1  # passes over each step's rollouts
mini_batches = 1  # optimizer steps per pass (each rank splits its rollouts into this many parts)
micro_batch = 32  # sequences per forward/backward (when micro_batch_tokens is 0)
# > 0: each forward/backward (log-prob recompute and update) takes length-sorted sequences up to this many tokens,
# padding included (one longer than it goes alone), instead of micro_batch sequences: short responses fill the
# device, long ones do not run out of memory. Padded length buckets rather than packing without padding: packed
# rows need a block-diagonal attention mask, which took 2.8x the CPU time (bench/rl_update.py, README)
micro_batch_tokens = 0
logits_chunk = 256  # response tokens per lm_head + log-softmax chunk (memory ~ chunk x vocab); 0 = all at once
lr = 2e-4  # for the ~1M-parameter built-in model; the paper presets use 1e-6
lr_warmup_steps = 0  # linear warmup over RL steps
# after the warmup the LR follows a cosine from lr down to min_lr_ratio * lr at max_steps (runtime.get_lr, as midtrain);
# 1.0 = constant. A decaying LR ends the run on a settled policy instead of one step's snapshot (the study: README)
min_lr_ratio = 1.0
weight_decay = 0.0
beta1 = 0.9
beta2 = 0.999
grad_clip = 1.0  # 0 = off
clip_low = 0.2  # ratio clipped to [1 - clip_low, 1 + clip_high]; clip_high > clip_low is DAPO's "clip-higher"
clip_high = 0.2
# > 0: k3 KL to a frozen copy of init_from, added to the loss (the reference is loaded only then). 0.1 for the
# built-in model: without it RL drifts to boxing the world's commonest answer ("1") on problems it cannot compute
kl_coef = 0.1
entropy_coef = 0.0  # > 0: entropy bonus
dual_clip = 0.0  # > 1: verl's dual-clip c (3.0): a negative-advantage token's loss is capped at -advantage * c
max_log_ratio = 20.0  # log(new / old) is clamped to +-this before exp: stale ratios (epochs, mini-batches) stay finite
# > 0 (>= 1; verl uses 2.0): truncated importance sampling for the rollout/trainer mismatch: each token's
# policy-gradient term is weighted by min(p_trainer_old / p_sampler, tis_cap) (grpo.tis_weight); 0 = off
tis_cap = 0.0
# long responses (DAPO; off in the paper presets)
overlong_buffer = 0  # > 0: soft overlong punishment, a penalty rising linearly over the last this many tokens
overlong_penalty = 1.0  # the penalty at max_response_len (added to the reward as -overlong_penalty)
mask_truncated = False  # responses cut at max_response_len are left out of the loss (and of its normalisers)
# run length, evaluation, logging, checkpoints
max_steps = 100
# > 0: end the run after this many steps if none of them had a reward signal (every group's rewards equal, so no
# optimizer step): the policy still has its start weights and each later step would sample it again (the study's base
# arm: 0 right of 6,400 samples). 0 = always run max_steps
no_signal_steps = 0
eval_interval = 50  # steps; 0 = never (greedy benchmarks.evaluate on eval_benchmarks; also before and at the end)
eval_benchmarks = "synth"  # comma-separated benchmarks (benchmarks.BENCHMARKS)
eval_style = "fewshot"  # "fewshot" (the synthetic set's own "Question/Answer" format) | "r1"
eval_limit = 0  # first eval_limit problems per benchmark; 0 = all
eval_max_new_tokens = 192
eval_batch_size = 128
eval_data_dir = ""  # "" = benchmarks.default_data_dir
eval_stop = []  # the evaluations' stop strings; [] = eval_style's own (benchmarks.stop_strings)
log_interval = 5  # print a line every this many steps (the progress bar always shows the latest)
ckpt_interval = 50  # steps; a checkpoint is also written at the end
keep_last_n = 2  # 0 = keep all
wandb_log = False  # also send the metrics.jsonl records to Weights & Biases (pip install wandb); never required
wandb_project = "nanoocto"
wandb_run_name = ""  # "" = the out dir's name
# system
device = "auto"  # "auto" (cuda if available) | "cpu" | "cuda"
dtype = "auto"  # "auto" = bfloat16 autocast on CUDA, float32 on CPU | "float32" | "bfloat16"
# recompute each block in backward: less activation memory, ~30% more compute. "auto": on only when memory_model
# says the update would not fit the device without it (runtime.checkpointing_for; on CPU: the host's memory)
grad_checkpointing = "auto"
# torch.compile each transformer block on its own and the chunked log-probs' per-chunk math (runtime.compile_model),
# for the log-prob recompute and the update (the reference's forward too); rollouts decode eagerly
compile = False
# "ddp": every GPU holds the policy, its gradients and AdamW moments (16 bytes a parameter, + the reference's 4 with
# kl_coef); "fsdp": FSDP2 shards them over the GPUs; rollouts then decode from a full copy of the weights in the
# training dtype (bf16 on GPU: 2 bytes a parameter), gathered once per step and freed before the update
parallel = "ddp"
fsdp_cpu_offload = False  # fsdp: shards, gradients and the AdamW step in host memory
seed = 1337

DEFAULTS = copy.deepcopy(knobs(globals()))  # every name above is a knob; main() starts from a copy of these


# -----------------------------------------------------------------------------------------------------------------
# config checks: every mistake we can see before loading a model


def check_config(c, world_size: int) -> list[tuple[int, int]]:
    """Raise ValueError naming the first bad knob; return the response-length schedule."""
    if c.loss_agg not in grpo.LOSS_AGGS:
        raise UserError(f"loss_agg must be one of {grpo.LOSS_AGGS}, got {c.loss_agg!r}")
    if c.device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device must be 'auto', 'cpu' or 'cuda', got {c.device!r}")
    if c.dtype not in ("auto", "float32", "bfloat16"):
        raise UserError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {c.dtype!r}")
    if c.eval_style not in ("fewshot", "r1"):
        raise UserError(f"eval_style must be 'fewshot' or 'r1', got {c.eval_style!r}")
    for name in ("group_size", "prompts_per_step", "max_prompt_len", "ppo_epochs", "mini_batches", "micro_batch",
                 "max_steps"):
        if not isinstance(getattr(c, name), int) or getattr(c, name) < 1:
            raise UserError(f"{name} must be an int >= 1, got {getattr(c, name)!r}")
    for name in ("rollout_batch_size", "max_refill_rounds", "loss_max_len", "lr_warmup_steps", "eval_interval",
                 "logits_chunk", "kv_budget", "eval_limit", "micro_batch_tokens", "log_interval", "ckpt_interval",
                 "keep_last_n"):
        if getattr(c, name) < 0:
            raise UserError(f"{name} must be >= 0, got {getattr(c, name)}")
    if not isinstance(c.no_signal_steps, int) or c.no_signal_steps < 0:
        raise UserError(f"no_signal_steps must be an int >= 0 (0 = off), got {c.no_signal_steps!r}")
    if c.prompts_per_step % world_size:
        raise UserError(f"prompts_per_step={c.prompts_per_step} is not divisible by the {world_size} ranks: each "
                        "rank rolls out an equal share")
    if c.parallel not in PARALLEL:
        raise UserError(f"parallel must be one of {PARALLEL}, got {c.parallel!r}")
    if c.grad_checkpointing not in (True, False, "auto"):
        raise UserError(f"grad_checkpointing must be True, False or 'auto', got {c.grad_checkpointing!r}")
    if c.keep_engine not in (True, False, "auto"):
        raise UserError(f"keep_engine must be True, False or 'auto', got {c.keep_engine!r}")
    if c.group_size < 2:
        raise UserError("group_size must be >= 2: advantages are relative to the group")
    if not c.temperature > 0:
        raise UserError(f"temperature must be > 0 (RL samples), got {c.temperature}")
    if not 0 < c.top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], got {c.top_p}")
    if not (0 <= c.clip_low < 1 and c.clip_high >= 0):
        raise UserError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {c.clip_low}, {c.clip_high}")
    if not (c.dual_clip == 0 or c.dual_clip > 1) or not c.max_log_ratio > 0:
        raise UserError(f"dual_clip must be 0 (off) or > 1 (verl: 3.0) and max_log_ratio > 0, got {c.dual_clip}, "
                        f"{c.max_log_ratio}")
    if not (c.tis_cap == 0 or c.tis_cap >= 1):
        raise UserError(f"tis_cap must be 0 (off) or >= 1 (verl: 2.0), got {c.tis_cap}")
    if c.overlong_buffer < 0 or c.overlong_penalty < 0:
        raise UserError(f"overlong_buffer and overlong_penalty must be >= 0, got {c.overlong_buffer}, "
                        f"{c.overlong_penalty}")
    if not c.lr > 0 or not 0 <= c.min_lr_ratio <= 1 or min(c.weight_decay, c.grad_clip, c.kl_coef, c.entropy_coef) < 0:
        raise UserError("need lr > 0, min_lr_ratio in [0, 1] (1 = a constant LR) and weight_decay, grad_clip, kl_coef, "
                        "entropy_coef >= 0")
    if not (0 <= c.beta1 < 1 and 0 <= c.beta2 < 1) or not c.adv_eps > 0:
        raise UserError("need betas in [0, 1) and adv_eps > 0")
    if c.template != "r1" and "{question}" not in c.template:
        raise UserError(f"template must contain {{question}} (or be 'r1'), got {c.template!r}")
    for name in ("stop", "eval_stop"):
        v = getattr(c, name)
        if not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
            raise UserError(f"{name} must be a list of non-empty strings, got {v!r}")
    if not c.resume and os.path.isfile(os.path.join(c.out_dir, "latest")):
        raise UserError(f"{c.out_dir} already holds a run; pass --resume=True to continue it, or delete it / "
                        "choose another out_dir")
    return length_schedule(c.max_response_len)


def length_schedule(x) -> list[tuple[int, int]]:
    """max_response_len as an int or {from_step: tokens} (keys may be strings after a JSON round trip) ->
    sorted [(from_step, tokens)], starting at step 0."""
    sched = {0: x} if isinstance(x, int) and not isinstance(x, bool) else x
    if not isinstance(sched, dict) or not sched:
        raise UserError(f"max_response_len must be an int or a dict {{from_step: tokens}}, got {x!r}")
    try:
        pairs = sorted((int(k), v) for k, v in sched.items())
    except (TypeError, ValueError):
        raise UserError(f"max_response_len keys must be step numbers, got {list(sched)}") from None
    if pairs[0][0] != 0:
        raise UserError(f"max_response_len schedule must start at step 0, got {x!r}")
    for k, v in pairs:
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise UserError(f"max_response_len at step {k} must be an int >= 1, got {v!r}")
    return pairs


def response_len_at(schedule: list[tuple[int, int]], step: int) -> int:
    """The stair value of the last entry at or before `step` (0-based: the step being taken)."""
    return [v for k, v in schedule if k <= step][-1]


# -----------------------------------------------------------------------------------------------------------------
# prompts (loaded by benchmarks.load_prompts): a seeded sampler with a saveable position


def lr_at(step: int, c) -> float:
    """The LR of 0-based step: linear warmup, then a cosine from lr to min_lr_ratio * lr at max_steps."""
    if step < c.lr_warmup_steps:
        return c.lr * (step + 1) / c.lr_warmup_steps
    return get_lr(step - c.lr_warmup_steps, c.lr, 0, 0, c.max_steps - c.lr_warmup_steps, c.min_lr_ratio, "cosine")


def sampler_draw(state: dict, n_items: int, k: int, seed: int) -> list[int]:
    """k prompt indices from a seeded shuffle of all n_items, epoch after epoch; advances state {epoch, pos}.
    Every rank holds the same state and draws the same indices, then takes its own slice."""
    out = []
    while len(out) < k:
        g = torch.Generator().manual_seed(seed * 100_003 + state["epoch"])
        order = torch.randperm(n_items, generator=g).tolist()
        take = order[state["pos"]:state["pos"] + k - len(out)]
        out += take
        state["pos"] += len(take)
        if state["pos"] >= n_items:
            state["epoch"], state["pos"] = state["epoch"] + 1, 0
    return out


def derive_seed(*parts) -> int:
    """A 62-bit seed from (seed, step, rank, round): rollouts depend on where they are in the run, not on RNG
    history, so a resumed run samples exactly what the uninterrupted one would have."""
    h = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 2


# -----------------------------------------------------------------------------------------------------------------
# rollouts and rewards


def make_math_reward(correct: float = 1.0, wrong: float = -1.0, no_answer: float = -1.0,
                     timeout: float = 2.0) -> Callable:
    """The rule-based reward: `correct` when the final \\boxed{} answer equals the gold one, `wrong` when it does not,
    `no_answer` when the response has no complete \\boxed{}. It uses the grader's strict "boxed" extraction mode:
    no "the answer is" or last-math fallbacks (the R1-style format asks for a box, and a looser rule is more to
    game)."""
    def reward(completion, example) -> float:
        pred = grader.extract_answer(completion.text, mode="boxed")
        if pred is None:
            return no_answer
        return correct if grader.math_equal(pred, example["answer"], timeout=timeout) else wrong
    return reward


def rollout(model, tok, examples: list[dict], c, seed: int, max_new_tokens: int, reward_fn: Callable,
            autocast=contextlib.nullcontext) -> list[Rollout]:
    """group_size responses to each example, graded; -> rollouts in order (group g = example g), advantages set."""
    with autocast():
        comps = sample.generate(model, tok, [ex["prompt_ids"] for ex in examples], n=c.group_size,
                                max_new_tokens=max_new_tokens, temperature=c.temperature, top_p=c.top_p,
                                stop=tuple(c.stop), seed=seed, batch_size=c.rollout_batch_size or None,
                                kv_budget=c.kv_budget or None)
    out = [Rollout(cp.prompt_tokens, cp.tokens, cp.logprobs, cp.text, cp.finish_reason,
                   float(reward_fn(cp, examples[cp.prompt_index]))
                   + grpo.overlong_penalty(len(cp.tokens), max_new_tokens, c.overlong_buffer, c.overlong_penalty),
                   cp.prompt_index) for cp in comps]
    rewards = torch.tensor([r.reward for r in out]).view(len(examples), c.group_size)  # [G, n]
    adv = grpo.compute_advantages(rewards, c.norm_adv_by_std, c.adv_eps).view(-1).tolist()
    for r, a in zip(out, adv):
        r.advantage = a
    return out


def is_uniform(group: list[Rollout]) -> bool:
    return len({r.reward for r in group}) == 1


# -----------------------------------------------------------------------------------------------------------------
# one step's rollouts across ranks, with optional dynamic sampling (drop uniform groups, refill)


def collect_rollouts(model, tok, examples, c, d, step: int, sampler: dict, max_new: int, reward_fn, autocast):
    """-> (rollouts kept for the update on this rank, stats over everything sampled, globally)."""
    kept: list[list[Rollout]] = []  # groups
    sampled: list[Rollout] = []
    target, kept_global = c.prompts_per_step, 0
    rounds = 1 + (c.max_refill_rounds if c.drop_uniform_groups else 0)
    for rnd in range(rounds):
        need = target - kept_global
        k = -(-need // d.world_size) * d.world_size  # a multiple of the ranks, every rank an equal share
        ids = sampler_draw(sampler, len(examples), k, c.seed)
        share = ids[d.rank * k // d.world_size:(d.rank + 1) * k // d.world_size]
        outs = rollout(model, tok, [examples[i] for i in share], c, derive_seed(c.seed, step, d.rank, rnd), max_new,
                       reward_fn, autocast)
        sampled += outs
        groups = chunks(outs, c.group_size)
        kept += [gr for gr in groups if not (c.drop_uniform_groups and is_uniform(gr))]
        kept_global = int(all_reduce_(torch.tensor([len(kept)]), d).item())
        if kept_global >= target or not c.drop_uniform_groups:
            break
    if kept_global > target:  # refill overshot: trim to prompts_per_step, ranks in order
        counts = [torch.zeros(1, dtype=torch.long) for _ in range(d.world_size)]
        if d.ddp:
            dist.all_gather(counts, torch.tensor([len(kept)]))
        else:
            counts = [torch.tensor([len(kept)])]
        before = sum(int(x) for x in counts[:d.rank])
        kept = kept[:max(0, min(len(kept), target - before))]
    rewards = torch.tensor([r.reward for r in sampled], dtype=torch.float64)
    lens = torch.tensor([len(r.tokens) for r in sampled], dtype=torch.float64)
    groups = chunks(sampled, c.group_size)
    s = torch.tensor([rewards.sum(), (rewards > 0).sum(), lens.sum(), len(sampled),
                      sum(r.finish_reason == "length" for r in sampled), sum(is_uniform(gr) for gr in groups),
                      len(groups), len(kept), sum(len(r.prompt_tokens) for r in sampled)], dtype=torch.float64)
    all_reduce_(s, d)
    mx = all_reduce_(lens.max().view(1), d, dist.ReduceOp.MAX if d.ddp else None)
    n = s[3].item()
    stats = {"reward": s[0].item() / n, "accuracy": s[1].item() / n, "response_len": s[2].item() / n,
             "response_len_max": int(mx.item()), "truncated": s[4].item() / n, "uniform_groups": s[5].item() / s[6].item(),
             "groups_sampled": int(s[6].item()), "groups_kept": int(s[7].item()), "gen_tokens": int(s[2].item()),
             "prompt_tokens": int(s[8].item())}
    return [r for gr in kept for r in gr], stats


# -----------------------------------------------------------------------------------------------------------------
# evaluation


def run_eval(model, tok, c, step: int, autocast) -> dict:
    """Greedy accuracy on eval_benchmarks (benchmarks.evaluate) -> {benchmark: accuracy}."""
    with autocast(), contextlib.redirect_stdout(io.StringIO()):  # its table would cut through the progress bar
        rep = benchmarks.evaluate(model, tok, c.eval_benchmarks, data_dir=c.eval_data_dir or None,
                                  style=c.eval_style, max_new_tokens=c.eval_max_new_tokens, limit=c.eval_limit or None,
                                  batch_size=c.eval_batch_size, progress=False, grade_timeout=c.grade_timeout,
                                  out_dir=os.path.join(c.out_dir, "eval", f"step-{step:06d}"),
                                  stop=c.eval_stop or None)
    return {k: v["accuracy"] for k, v in rep["benchmarks"].items()}


# -----------------------------------------------------------------------------------------------------------------
# the run


def main(argv: list[str] | None = None, reward_fn: Callable | None = None) -> dict:
    """Run RL with the knobs of argv (config files and --key=value flags). reward_fn(completion, example) -> float
    replaces the math grader (tests, other tasks). -> {"before": eval, "after": eval, "steps": n}."""
    argv = sys.argv[1:] if argv is None else argv
    ns = copy.deepcopy(DEFAULTS)
    ns["max_response_len"] = None  # a None default accepts both an int and a {step: tokens} dict from the config
    c = SimpleNamespace(**configure(ns, argv, verbose=False))
    if c.max_response_len is None:
        c.max_response_len = copy.deepcopy(DEFAULTS["max_response_len"])
    schedule = check_config(c, world_size_from_env())  # all knob errors before any work
    with distributed(c.device, c.parallel) as d:  # no process group outlives this (issue 28)
        log = tqdm.write if d.master else (lambda *a, **k: None)
        if d.master:
            print_config(vars(c))
        stop = install_stop_handler(d.master, os.path.relpath(__file__), argv)
        try:
            return run(c, d, schedule, reward_fn, log, stop)
        finally:
            restore_stop_handler(stop)


def run(c, d, schedule, reward_fn, log, stop=None) -> dict:
    """stop (runtime.install_stop_handler): a SIGINT / SIGTERM ends the run after the current step with a checkpoint
    and SystemExit(128 + signal)."""
    train_dtype, autocast = autocast_for(c.dtype, d.device)
    latest = os.path.join(c.out_dir, "latest")
    resume_from = model_lib.resolve_checkpoint(c.out_dir) if c.resume and os.path.isfile(latest) else None
    if c.resume and resume_from is None:
        log(f"resume: no checkpoint in {c.out_dir}, starting from {c.init_from}")
    if not os.path.exists(c.init_from) and resume_from is None:
        raise UserFileError(f"init_from={c.init_from!r} does not exist (the built-in default starts from the "
                            "mid-trained model: run `python midtrain.py` first, or pass --init_from=PATH)")
    model, tok, state = model_lib.load_checkpoint(resume_from or c.init_from, dtype=torch.float32,
                                                  load_state=resume_from is not None)
    model.to(d.device)
    model.gradient_checkpointing = checkpointing_for("rl", model.config, c, d, log)  # "auto": by memory
    keep_engine = keep_engine_for(model.config, c, d, model.gradient_checkpointing, log)  # "auto": by memory
    ref_model = None
    if c.kl_coef > 0:  # a frozen copy of the starting weights (of the original init_from, also when resuming)
        ref_model = model_lib.load_checkpoint(c.init_from, dtype=torch.float32)[0].to(d.device).eval()
        ref_model.requires_grad_(False)
    n_params = model.num_params()
    if c.compile:  # before sharding, so FSDP's hooks stay outside the graphs; dynamic: micro-batches change shape
        for m in (model, ref_model) if ref_model is not None else (model,):
            compile_model(m, dynamic=True)
    if c.parallel == "fsdp" and d.ddp:  # in place; the optimizer is built on the shards below
        shard_model(model, d.device, train_dtype, c.fsdp_cpu_offload)
        sum_gradients(model)  # the losses are normalised by global counts: ranks' gradients add up
        if ref_model is not None:
            shard_model(ref_model, d.device, train_dtype, c.fsdp_cpu_offload)
    examples = benchmarks.load_prompts(c.prompt_file, tok, c.template, c.max_prompt_len, c.question_field, c.answer_field,
                            log=log)
    longest = max(len(e["prompt_ids"]) for e in examples)
    most = max(v for _, v in schedule)
    if longest + most > model.config.max_seq_len:
        raise UserError(f"the longest kept prompt ({longest} tokens) + max_response_len ({most}) exceeds the "
                        f"model's context of {model.config.max_seq_len}: lower max_prompt_len or max_response_len")
    if reward_fn is None:
        reward_fn = make_math_reward(c.reward_correct, c.reward_wrong, c.reward_no_answer, c.grade_timeout)
    optimizer = model.configure_optimizer(c.lr, c.weight_decay, (c.beta1, c.beta2), device_type=d.device.type)

    # at_ref: no optimizer step yet, so the policy has its reference's weights and a step of uniform groups has an
    # exactly zero gradient (update_policy skips it: the study's base arm, all rewards -1, costs rollouts only)
    step, sampler, at_ref = 0, {"epoch": 0, "pos": 0}, True
    metrics_path = os.path.join(c.out_dir, "metrics.jsonl")
    if resume_from is not None:
        load_optimizer_state(optimizer, state["optimizer"], model)  # with this run's betas and weight decay
        step, sampler, at_ref = state["step"], dict(state["sampler"]), state.get("at_ref", False)
        set_rng_state(state["rng"])
        log(f"resumed from {resume_from} at step {step}")
    else:
        torch.manual_seed(c.seed)
    if d.master:
        os.makedirs(c.out_dir, exist_ok=True)
        if resume_from is None and os.path.exists(metrics_path):
            os.remove(metrics_path)  # leftovers of a run that never checkpointed
        trim_metrics(metrics_path, step)
    run_config = {**vars(c), "run": {"init_from": c.init_from, "world_size": d.world_size,
                                     "resumed_from": resume_from, "prompts": len(examples)}}
    log(f"{n_params / 1e6:.2f}M params | {c.max_steps} steps x {c.prompts_per_step} prompts x {c.group_size} "
        f"responses | {d.world_size} rank(s) ({c.parallel}) on {d.device} | {c.init_from} -> {c.out_dir}")
    log(memory_table("rl", model.config, c, d, model.gradient_checkpointing))

    wandb_run = wandb_init(c, c.out_dir) if d.master else None  # None unless wandb_log=True

    def write_metrics(rec):
        if d.master:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            wandb_record(wandb_run, rec)

    def save(step_now):
        st = {"step": step_now, "sampler": dict(sampler), "rng": rng_state(), "init_from": c.init_from,
              "at_ref": at_ref}
        save_checkpoint(os.path.join(c.out_dir, f"ckpt-{step_now:06d}"), model, optimizer, tok, run_config, st, d,
                        c.keep_last_n)

    evals = []  # (step, result) of this run's evaluations; while at_ref, all of them are of the start weights
    kept = None  # keep_engine under fsdp: the full-weight copy the kept engine decodes from

    def sampling_model(every_rank: bool = True):
        """The weights to sample from. fsdp: gathered from the shards (every rank calls; every_rank=False: only
        rank 0 keeps them), into the kept copy in place when keep_engine."""
        nonlocal kept
        if keep_engine:
            kept = full_model(model, train_dtype, into=kept)
            return kept
        return full_model(model, train_dtype, keep=every_rank or d.master)

    def evaluate(step_now):
        if at_ref and evals:  # the same weights give the same greedy answers: they are not decoded again
            same, res = evals[0]
            write_metrics({"kind": "eval", "step": step_now, "accuracy": res, "seconds": 0.0, "same_as_step": same})
            log(f"step {step_now:>4} | greedy eval: the start weights, as at step {same}")
            return res
        res = None
        policy = sampling_model(every_rank=False)
        if d.master:
            t0 = time.time()
            res = run_eval(policy, tok, c, step_now, autocast)
            if keep_engine:  # the eval's engine is sized for its rows and lengths, not the kept rollouts' plan
                sample.release_engine(policy)
            write_metrics({"kind": "eval", "step": step_now, "accuracy": res, "seconds": round(time.time() - t0, 1)})
            log(f"step {step_now:>4} | greedy eval " + " ".join(f"{k} {100 * v:.1f}%" for k, v in res.items()))
        if d.ddp:
            dist.barrier()  # the others wait while rank 0 evaluates
        evals.append((step_now, res))  # on every rank (rank 0 alone has the numbers)
        return res

    before = after = None
    if c.eval_interval and resume_from is None:
        before = evaluate(0)
    bar = progress_bar(d.master, total=c.max_steps, initial=step, desc="rl")
    t_run = time.time()
    if stop is not None:
        stop.armed = True
    # at_ref after no_signal_steps steps: not one group had a reward spread, and the policy has not moved
    no_signal = lambda: bool(c.no_signal_steps) and at_ref and step >= c.no_signal_steps  # noqa: E731
    while step < c.max_steps and not no_signal():  # (a resumed run that had stopped so stays stopped)
        t0 = time.perf_counter()
        max_new = response_len_at(schedule, step)
        lr_now = lr_at(step, c)
        for group in optimizer.param_groups:
            group["lr"] = lr_now
        # 1-3: rollouts and rewards (each rank its own prompts)
        policy = sampling_model()  # fsdp: the full weights once per step, freed before the update (or kept)
        batch, rs = collect_rollouts(policy, tok, examples, c, d, step, sampler, max_new, reward_fn, autocast)
        if not keep_engine:
            sample.release_engine(policy)  # the KV pool generate keeps between calls: the update needs that memory
        del policy
        t_rollout = time.perf_counter() - t0
        # 4-5: the update
        model.train()
        us = update_policy(model, optimizer, batch, c, d, ref_model, c.loss_max_len or max_new,
                           seed=derive_seed(c.seed, "update", step, d.rank), autocast=autocast,
                           vocab_size=tok.vocab_size, at_ref=at_ref)
        at_ref = at_ref and us["optimizer_steps"] == 0
        step += 1
        dt = time.perf_counter() - t0
        rec = {"kind": "train", "step": step, "lr": lr_now, "max_response_len": max_new, **rs, **us,
               "rollout_s": t_rollout, "step_s": dt, "gen_tok_s": rs["gen_tokens"] / max(t_rollout, 1e-9),
               "train_tok_s": us["forward_tokens"] / max(us["recompute_s"] + us["update_s"], 1e-9),
               "elapsed": round(time.time() - t_run, 2)}
        write_metrics({k: round(v, 6) if isinstance(v, float) else v for k, v in rec.items()})
        bar.set_postfix(reward=f"{rs['reward']:+.3f}", acc=f"{rs['accuracy']:.1%}", len=f"{rs['response_len']:.0f}",
                        refresh=False)
        bar.update(1)
        if c.log_interval and (step % c.log_interval == 0 or step == 1):
            log(f"step {step:>4} | reward {rs['reward']:+.3f} | acc {rs['accuracy']:6.1%} | len "
                f"{rs['response_len']:5.1f} (max {rs['response_len_max']}, trunc {rs['truncated']:.0%}) | uniform "
                f"{rs['uniform_groups']:.0%} | clip {us['clip_frac']:.3f} | kl old {us['approx_kl']:.1e} ref "
                f"{us['ref_kl']:.1e} | ent "
                f"{us['entropy']:.2f} | gnorm {us['grad_norm']:.3f} | mismatch {us['logprob_mismatch_mean']:.1e} (max "
                f"{us['logprob_mismatch_max']:.1e}) | "
                f"{t_rollout:.1f}+{us['recompute_s']:.1f}+{us['update_s']:.1f} s | {rec['gen_tok_s']:,.0f} gen tok/s")
        last = step == c.max_steps or no_signal()
        saved = last or (c.ckpt_interval and step % c.ckpt_interval == 0)
        if saved:
            save(step)  # before eval: a crashing eval loses nothing
        if c.eval_interval and (last or step % c.eval_interval == 0):
            after = evaluate(step)
        signum = stop_requested(stop, d)
        if signum:
            if not saved:
                save(step)
            bar.close()
            exit_on_stop(stop, signum, step, model_lib.resolve_checkpoint(c.out_dir) if d.master else c.out_dir, d,
                         log)
    if stop is not None:
        stop.armed = False
    bar.close()
    if step < c.max_steps:
        log(f"no reward signal in {step} steps ({step * c.prompts_per_step} groups of {c.group_size}, every group's "
            f"rewards equal): the policy still has its start weights, so the run ends here (no_signal_steps="
            f"{c.no_signal_steps}; 0 runs all {c.max_steps} steps)")
    log(f"done: {step} steps in {time.time() - t_run:.1f} s -> {c.out_dir}")
    if before and after:
        for k in after:
            log(f"held-out greedy accuracy on {k}: before {100 * before[k]:.1f}% -> after {100 * after[k]:.1f}%")
    return {"before": before, "after": after, "steps": step}


if __name__ == "__main__":
    run_cli(main)
