"""
The miniature OctoThinker study: the paper's mid-training ablations at toy scale, on the synthetic math world, on a
laptop CPU. Every box below is one run of midtrain.py or rl.py with the knobs of this file; every arm's model is
then RL-ed with the same GRPO budget and evaluated on the same held-out problems before and after RL.

    python study.py                                  # one seed on 2 CPU cores -> out/study/results.md
    python study.py --seeds=[1337,1338,1339]         # three seeds: the table shows mean +- spread
    python study.py --arms=["stable","short"]        # a subset (the stages they need run, the others do not)
    python study.py --arms=["base","stable","short","long","hybrid","noisy"]   # with the long-CoT arm (not a default)

    scratch --base: general web, warmup+decay--> base                        arm "base"   (no mid-training)
    base --stable: clean math web, constant LR--> stable                     arm "stable" (stable stage only)
        stable --decay: short-CoT QA--> short                                arm "short"
        stable --decay: long-CoT QA---> long                                 arm "long" (opt-in: its RL is slow)
        stable --decay: both (hybrid)-> hybrid                               arm "hybrid"
    base --stable: noisy math web--> stable_noisy --decay: short-CoT, noisy web--> noisy   arm "noisy" (data quality)
    each arm --GRPO, rl_steps x rl_prompts x rl_group--> <arm>_rl

The paper's stable stage is 200B tokens of high-quality math web at a constant LR; its decay stage (20B tokens)
anneals the LR while mixing in QA with short or long chain of thought and a little instruction data; "noisy" is its
FineMath vs MegaMath-Web-Pro contrast. Here "base" plays Llama-3.2: a model pre-trained (and annealed) on general,
low-quality web text of the same world.

Time: one seed of the five default arms (11 stages + 9 evaluations) took 26 min alone on a 2-core Intel Xeon with
AVX-512 (1,527 s: mid-training 543 s on both cores, the two 900-step stable stages 193-197 s each; then RL and
evaluations 984 s, two at a time in 1-thread worker processes, an RL run 373-485 s; 3 more seeds' RL and
evaluations 2,970 s) and ~40-50 min on a 2-core AMD EPYC without AVX-512 (estimated: 2-2.5x slower at
mid-training, 1.4-2x at RL), plus ~20 s to build the study's world on the first run; each stage's seconds are in its
study_done.json. The long arm's RL, with ~210-token answers, takes several times a short arm's (not measured). To go
faster, lower rl_steps / stable_tokens / rl_prompts / eval_problems / sample_k, at a cost the README measures ("What
the miniature study shows": 100 RL steps left the weakest seeds' gains low; a 300-step stable stage left the
stable-only arm unable to compute).

Resumable at two levels: a finished stage leaves <stage>/study_done.json and is never rerun; an interrupted one
continues from its latest checkpoint (midtrain/rl --resume=True). Evaluations are cached in eval/<model>/.
Output: out_dir/seed-<s>/<stage>/..., out_dir/results.json, out_dir/results.md (the table, also printed) and
out_dir/rl_curves.png (matplotlib, optional: without it the plot is skipped with a message).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import multiprocessing
import os
import re
import signal
import statistics
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from types import SimpleNamespace

import torch
from tqdm import tqdm

import benchmarks
import midtrain
import model as model_lib
import rl
from configurator import UserError, configure, knobs, run_cli
from data.files import write_atomic

# -----------------------------------------------------------------------------------------------------------------
# knobs: one visible block; a config file and --key=value flags override them (configurator.py)

out_dir = "out/study"
seeds = [1337]  # one full study per seed (weights init, data order, RL sampling); the table averages over seeds
# "long" (the long-CoT decay) is left out by default for time: its ~210-token answers make its RL several times a
# short arm's. Add it with --arms='["base","stable","short","long","hybrid","noisy"]'
arms = ["base", "stable", "short", "hybrid", "noisy"]
# data: the built-in synthetic world (made under synth_dir if absent, shared with `python midtrain.py`)
synth_dir = "data/synth_study"
synth_scale = 1.0
# data.synth world knobs over its defaults (as midtrain.py's synth_knobs). The default world's noisy web (noise 0.3:
# 15% of its equations wrong) taught about as well as the clean web (3 seeds: 25.2% vs 23.4% greedy), so the study's
# world makes it as bad as the knob allows: half the equations wrong, most pages shuffled or padded with junk. Only
# web_noisy changes. max_answer_share thins the answers that would otherwise be the gold of more than 3% of problems
# ("1" was 12% of them: a weak policy's best guess), and 1,000 held-out problems put the standard error of an
# accuracy at 1.3-1.6 points (150: ~2.8).
synth_knobs = {"noise": 1.0, "max_answer_share": 0.03, "n_heldout": 1000}
synth_vocab_size = 1024
tokenizer = "data/synth_study/tokenizer"
data_root = "data/synth_study/shards"
# model and optimisation, shared by every mid-training stage
model = "nano"  # a model.PRESETS name; trained from scratch by the base stage
seq_len = 512  # long-CoT examples (up to ~450 tokens with their question) fit in one window
micro_batch = 8
total_batch_tokens = 4096
lr = 3e-3
# mid-training stages: token budgets and mixtures (shard folder name -> weight); stable and decay as in midtrain.py
base_tokens = 409_600  # 100 steps: the "pre-trained base model" (warmup, constant, then decay to 10% LR)
base_mixture = {"web_noisy": 1.0}
# the paper's stages are 200B stable, 20B decay tokens; here 900 and 200 steps. A 300-step stable stage (the earlier
# default, with a 400-step decay) left the stable-only model unable to do arithmetic ("4 * 2 = 9"; greedy 7.8%, seed
# 1338) and its RL reward flat even over 200 steps; at 900 steps it is at 26.1% and RL lifts it (README)
stable_tokens = 3_686_400  # 900 steps at constant LR (re-warmed over warmup_tokens)
warmup_tokens = 40_960
stable_mixture = {"web": 0.75, "web_noisy": 0.05, "qa_short": 0.2}
noisy_stable_mixture = {"web_noisy": 0.8, "qa_short": 0.2}
decay_tokens = 819_200  # 200 steps, LR annealed to 10%
decay_mixtures = {
    "short": {"web": 0.3, "web_noisy": 0.05, "instruct": 0.1, "qa_short": 0.55},
    "long": {"web": 0.3, "web_noisy": 0.05, "instruct": 0.1, "qa_long": 0.55},
    # long-CoT QA heavier than short: at short 0.35 / long 0.2 the share of greedy answers that went long before RL
    # was a seed lottery (41 / 1 / 10% on 3 seeds; 0.45 / 0.1 gave 21 / 12 / 20%), and so was the arm's greedy gain
    # (+27.7 / +5.0 / +7.1). At 0.2 / 0.35 every seed's model opens long on part of the problems before RL and gains
    # +15-24: 29-55% on the EPYC's 3 seeds, 19-96% on the Xeon's (the 96% seed ended below stable-only until RL ran
    # at KL 0, which drops the long answers on every seed: README)
    "hybrid": {"web": 0.3, "web_noisy": 0.05, "instruct": 0.1, "qa_short": 0.2, "qa_long": 0.35},
}
# the noisy arm swaps the clean web for the noisy one in its decay too: short with web -> web_noisy (compare the two).
# As the long-leaning hybrid's twin its greedy gain was a coin too: RL dropped its long answers on one seed of three
# (46 / 6 / 29% long after RL; gains +5.8 / +14.7 / +3.1, README)
noisy_decay_mixture = {"web_noisy": 0.35, "instruct": 0.1, "qa_short": 0.55}
# RL: the same GRPO budget for every arm
# twice python rl.py's steps: with KL 0 a step costs about half as much, and 200 steps lifted the seeds that 100
# left lowest (seed 1339: short +2.7 -> +5.7, noisy -0.8 -> +3.6; README "The RL budget"); at 48 x 16 the
# short arm's greedy fell (37.8 -> 32.3%, seed 1337)
rl_steps = 200
rl_prompts = 32  # prompts per step
rl_group = 8  # responses per prompt
rl_lr = 2e-4
# the RL LR falls on a cosine from rl_lr to this fraction of it by the last step (1.0 = constant). A constant LR left
# greedy accuracy swinging 3-5 points between evaluations and the run ending on one draw of it; decayed to 0, no seed
# of any arm was left flat (3 seeds: short's gain +3.0 -> +6.2; README "The RL learning rate's schedule")
rl_min_lr_ratio = 0.0
# the RL LR first rises linearly from 0 over this fraction of rl_steps (rl.py's lr_warmup_steps; 25 of 200). Without
# it the first AdamW steps knocked the short-CoT arms down on some seeds (seed 1339's noisy 50.0 -> 39.8% greedy at
# step 25) and they spent the run climbing back; with it noisy's greedy gain cleared two seed std (README)
rl_warmup_frac = 0.125
rl_max_response_len = 320  # tokens: room for a long-CoT answer; the base arm's rambling is cut here
rl_temperature = 0.7  # rl.py's default: at 1.0 the tiny models' samples are right half as often as greedy
# k3 KL to the arm's own start model (rl.py's default 0.1); 0 = none, and no reference model to run. At 0.1 the
# KL held seed 1339's hybrid to its start model's long answers (96% long -> 60% after 100 steps, below stable-only);
# at 0 RL dropped them (-> 0%) and every seed's hybrid ended above stable-only (3 seeds: +7.9 +- 10.5 -> +13.8 +- 1.3
# greedy), RL twice as fast. Under the earlier design's constant LR, KL 0 had lowered greedy (README)
rl_kl_coef = 0.0
rl_eval_interval = 25  # held-out greedy accuracy every this many RL steps (the plot's middle panel); 0 = off
# an RL run whose first this many steps had no reward spread in any group ends there (rl.py's no_signal_steps): the
# policy still has its start weights, so more steps only sample it again. The base arm (0 right of 6,400 samples) then
# costs an eighth of its rollouts. 0 = every arm runs rl_steps
rl_no_signal_steps = 25
# evaluation on the held-out synthetic problems (never seen in training), before and after RL
eval_problems = 0  # the first eval_problems of heldout.jsonl; 0 = all
sample_k = 4  # samples per problem at rl_temperature: pass@1 (sampled accuracy), pass@k, maj@k; 0 = greedy only
eval_max_new_tokens = 320
# a response's stop strings (RL's rollouts and every evaluation). A blank line ends an answer (no QA answer of the
# world holds one): the base arm's web prose then stops at its first paragraph instead of running on to
# rl_max_response_len. rl.py's own, ["\n\nQuestion:", "Question:"], passes no flag to it
stop = ["\n\n", "Question:"]
eval_batch_size = 1024  # rows decoded together: the sampled eval's eval_problems x sample_k rows in one batch
device = "cpu"  # the study is sized for a CPU; "auto" uses CUDA when present
# RL runs and evaluations at a time, each in its own process with cores / parallel torch threads (mid-training stages
# run one at a time on every core). Decoding a tiny model is latency-bound: on 2 cores, two 1-thread GRPO runs of the
# base arm side by side took 174 s each, one alone on both cores 124 s (1.4x the throughput), while training gains
# nothing from the split. 1 = one at a time, in this process.
parallel = 2

DEFAULTS = copy.deepcopy(knobs(globals()))
ARMS = ("base", "stable", "short", "long", "hybrid", "noisy")

# -----------------------------------------------------------------------------------------------------------------
# the stage graph: stage name -> (parent stage or None, kind: pretrain | stable | decay | rl, mixture)


def plan_stages(c) -> dict[str, SimpleNamespace]:
    """Every stage a full study can run, in an order where parents come first."""
    p = {"base": SimpleNamespace(parent=None, kind="pretrain", mixture=c.base_mixture),
         "stable": SimpleNamespace(parent="base", kind="stable", mixture=c.stable_mixture),
         "stable_noisy": SimpleNamespace(parent="base", kind="stable", mixture=c.noisy_stable_mixture)}
    for name in ("short", "long", "hybrid"):
        p[name] = SimpleNamespace(parent="stable", kind="decay", mixture=c.decay_mixtures[name])
    p["noisy"] = SimpleNamespace(parent="stable_noisy", kind="decay", mixture=c.noisy_decay_mixture)
    for arm in ARMS:
        p[f"{arm}_rl"] = SimpleNamespace(parent=arm, kind="rl", mixture=None)
    return p


def needed_stages(plan: dict, arms: list[str]) -> list[str]:
    """The stages the chosen arms need (ancestors included), in plan order."""
    need = set()
    for arm in arms:
        s = f"{arm}_rl"
        while s is not None:
            need.add(s)
            s = plan[s].parent
    return [s for s in plan if s in need]


def check_config(c) -> None:
    """Raise ValueError naming the first bad knob, before any work."""
    if not c.seeds or len(set(c.seeds)) != len(c.seeds) or not all(isinstance(s, int) for s in c.seeds):
        raise UserError(f"seeds must be a non-empty list of distinct ints, got {c.seeds!r}")
    bad = [a for a in c.arms if a not in ARMS]
    if not c.arms or bad or len(set(c.arms)) != len(c.arms):
        raise UserError(f"arms must be distinct names from {ARMS}, got {c.arms!r}")
    if set(c.decay_mixtures) != {"short", "long", "hybrid"}:
        raise UserError(f"decay_mixtures needs exactly the keys short, long, hybrid; got {sorted(c.decay_mixtures)}")
    for name in ("base_mixture", "stable_mixture", "noisy_stable_mixture", "noisy_decay_mixture"):
        midtrain.check_mixture(name, getattr(c, name))
    for name, mix in c.decay_mixtures.items():
        midtrain.check_mixture(f"decay_mixtures[{name!r}]", mix)
    for name in ("base_tokens", "stable_tokens", "decay_tokens", "rl_steps", "rl_prompts", "rl_group",
                 "eval_max_new_tokens", "eval_batch_size"):
        if getattr(c, name) <= 0:
            raise UserError(f"{name} must be > 0, got {getattr(c, name)}")
    if c.eval_problems < 0 or c.sample_k < 0 or c.sample_k == 1:
        raise UserError(f"eval_problems must be >= 0 and sample_k 0 (off) or >= 2; got {c.eval_problems}, "
                        f"{c.sample_k}")
    if not c.rl_temperature > 0 or c.rl_kl_coef < 0 or c.rl_eval_interval < 0 or not 0 <= c.rl_min_lr_ratio <= 1:
        raise UserError(f"need rl_temperature > 0, rl_kl_coef >= 0, rl_eval_interval >= 0 and rl_min_lr_ratio in "
                        f"[0, 1]; got {c.rl_temperature}, {c.rl_kl_coef}, {c.rl_eval_interval}, {c.rl_min_lr_ratio}")
    if not 0 <= c.rl_warmup_frac < 1:
        raise UserError(f"rl_warmup_frac must be in [0, 1) (a fraction of rl_steps), got {c.rl_warmup_frac}")
    if not isinstance(c.rl_no_signal_steps, int) or c.rl_no_signal_steps < 0:
        raise UserError(f"rl_no_signal_steps must be an int >= 0 (0 = off), got {c.rl_no_signal_steps!r}")
    if c.model not in model_lib.PRESETS or c.seq_len > model_lib.PRESETS[c.model].get("max_seq_len", 0):
        raise UserError(f"model must be a model.PRESETS name whose max_seq_len >= seq_len={c.seq_len}, "
                        f"got {c.model!r}")
    if c.rl_max_response_len >= model_lib.PRESETS[c.model]["max_seq_len"] - 16:
        raise UserError(f"rl_max_response_len={c.rl_max_response_len} leaves no room for a prompt in the context of "
                        f"{c.model!r}")
    if c.base_tokens * 3 // 4 <= c.warmup_tokens or c.stable_tokens <= c.warmup_tokens:
        raise UserError(f"base_tokens * 3/4 and stable_tokens must exceed warmup_tokens={c.warmup_tokens}, got "
                        f"{c.base_tokens} and {c.stable_tokens}")
    if not isinstance(c.parallel, int) or c.parallel < 1:
        raise UserError(f"parallel must be an int >= 1 (RL runs and evaluations at a time), got {c.parallel!r}")
    if not isinstance(c.stop, list) or not all(isinstance(s, str) and s for s in c.stop):
        raise UserError(f"stop must be a list of non-empty strings, got {c.stop!r}")
    if c.rl_group < 2:
        raise UserError(f"rl_group must be >= 2 (GRPO compares responses within a group), got {c.rl_group}")


# -----------------------------------------------------------------------------------------------------------------
# running one stage: the argv of midtrain.py / rl.py, then a done marker


def midtrain_argv(c, st: SimpleNamespace, folder: str, parent_dir: str | None, seed: int) -> list[str]:
    common = [f"--tokenizer={c.tokenizer}", f"--data_root={c.data_root}", "--synth_dir=", f"--seq_len={c.seq_len}",
              f"--micro_batch={c.micro_batch}", f"--total_batch_tokens={c.total_batch_tokens}", f"--lr={c.lr}",
              f"--seed={seed}", f"--device={c.device}", "--eval_interval=0", "--log_interval=0", "--resume=True",
              "--keep_last_n=1", "--ckpt_interval=50", "--eval_sources=[]"]
    mix = json.dumps(st.mixture)
    if st.kind == "pretrain":  # pre-training from scratch: warmup + constant, then its own anneal (both stages)
        return common + ["--stage=both", f"--init_from=scratch:{c.model}", f"--stable_out_dir={folder}/pretrain",
                         f"--decay_out_dir={folder}", f"--stable_mixture={mix}", f"--decay_mixture={mix}",
                         f"--warmup_tokens={c.warmup_tokens}",
                         f"--stable_tokens={c.base_tokens * 3 // 4 - c.warmup_tokens}",
                         f"--decay_tokens={c.base_tokens - c.base_tokens * 3 // 4}"]
    if st.kind == "stable":  # continued pre-training at a constant LR, re-warmed, fresh optimizer
        return common + ["--stage=stable", f"--init_from={parent_dir}", f"--stable_out_dir={folder}",
                         f"--stable_mixture={mix}", f"--warmup_tokens={c.warmup_tokens}",
                         f"--stable_tokens={c.stable_tokens - c.warmup_tokens}", "--fresh_optimizer=True"]
    # a decay branch: continues the stable run (its AdamW moments too) while the LR anneals
    return common + ["--stage=decay", f"--decay_init_from={parent_dir}", f"--decay_out_dir={folder}",
                     f"--decay_mixture={mix}", f"--decay_tokens={c.decay_tokens}", "--fresh_optimizer=False"]


def rl_warmup_steps(c) -> int:
    return int(c.rl_warmup_frac * c.rl_steps)  # < rl_steps, as rl.py needs


def rl_argv(c, folder: str, parent_dir: str, seed: int) -> list[str]:
    return [f"--init_from={parent_dir}", f"--out_dir={folder}", f"--prompt_file={c.synth_dir}/rl_train.jsonl",
            f"--max_steps={c.rl_steps}", f"--prompts_per_step={c.rl_prompts}", f"--group_size={c.rl_group}",
            f"--lr={c.rl_lr}", f"--lr_warmup_steps={rl_warmup_steps(c)}", f"--min_lr_ratio={c.rl_min_lr_ratio}",
            f"--max_response_len={c.rl_max_response_len}",
            f"--seed={seed}", f"--temperature={c.rl_temperature}", f"--kl_coef={c.rl_kl_coef}",
            f"--no_signal_steps={c.rl_no_signal_steps}", *stop_argv(c, "--stop"),
            f"--max_prompt_len={model_lib.PRESETS[c.model]['max_seq_len'] - c.rl_max_response_len}",
            f"--device={c.device}", "--log_interval=0", "--resume=True", "--keep_last_n=1", "--ckpt_interval=10",
            # held-out greedy accuracy during RL, with the study's own evaluation knobs (the plot's middle panel)
            f"--eval_interval={c.rl_eval_interval}", "--eval_benchmarks=synth", "--eval_style=fewshot",
            f"--eval_data_dir={c.synth_dir}", f"--eval_limit={c.eval_problems}",
            f"--eval_max_new_tokens={c.eval_max_new_tokens}", f"--eval_batch_size={c.eval_batch_size}",
            *stop_argv(c, "--eval_stop")]


def own_stop(c) -> bool:
    """True when the study's stop strings are rl.py's and the evaluations' own: then no flag passes them and the
    evaluation knobs leave them out, so runs and evaluations made before the knob existed still match."""
    return c.stop == list(benchmarks.stop_strings("fewshot"))


def stop_argv(c, flag: str) -> list[str]:
    return [] if own_stop(c) else [f"{flag}={json.dumps(c.stop)}"]


def stage_argv(c, name: str, st: SimpleNamespace, seed_dir: str, seed: int) -> list[str]:
    folder = os.path.join(seed_dir, name)
    parent_dir = os.path.join(seed_dir, st.parent) if st.parent else None
    return rl_argv(c, folder, parent_dir, seed) if st.kind == "rl" else midtrain_argv(c, st, folder, parent_dir, seed)


def stage_done(c, name: str, st: SimpleNamespace, seed_dir: str, seed: int) -> float | None:
    """The recorded wall seconds of a finished stage; None when it has not finished."""
    folder = os.path.join(seed_dir, name)
    marker = os.path.join(folder, "study_done.json")
    if not os.path.isfile(marker):
        return None
    with open(marker) as f:
        done = json.load(f)
    argv = stage_argv(c, name, st, seed_dir, seed)
    if done.get("argv", argv) != argv:  # a finished stage is reused only with the knobs it ran with
        changed = sorted(set(argv) ^ set(done["argv"]))
        raise UserError(f"stage {name} in {folder} was run with other knobs ({', '.join(changed)}): delete "
                        "that folder (and the stages after it) or choose another out_dir")
    return done["seconds"]


def run_stage(c, name: str, st: SimpleNamespace, seed_dir: str, seed: int) -> float:
    """Run one stage (midtrain.py or rl.py, in this process), then leave its done marker. -> its wall seconds."""
    folder = os.path.join(seed_dir, name)
    argv = stage_argv(c, name, st, seed_dir, seed)
    t0 = time.time()
    os.makedirs(folder, exist_ok=True)
    # the stage's own log (resolved config, periodic lines) goes to its folder; its progress bar stays on stderr (in
    # a worker process run_jobs draws it instead)
    with open(os.path.join(folder, "log.txt"), "a") as f, contextlib.redirect_stdout(f):
        (rl.main if st.kind == "rl" else midtrain.main)(argv)
    seconds = time.time() - t0
    write_json(os.path.join(folder, "study_done.json"), {"stage": name, "seconds": seconds, "seed": seed,
                                                         "argv": argv})
    return seconds


def write_json(path: str, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1) + "\n")


# -----------------------------------------------------------------------------------------------------------------
# evaluation: greedy accuracy, and pass@1 / pass@k / maj@k of samples at the RL temperature, on the same held-out
# problems, cached per model


def eval_knobs(c) -> dict:
    names = ("eval_problems", "sample_k", "rl_temperature", "eval_max_new_tokens") + (() if own_stop(c) else ("stop",))
    return {k: getattr(c, k) for k in names}


def cached_eval(c, out: str) -> dict | None:
    """The evaluation in `out` if one was made with today's eval knobs (else None: evaluate again)."""
    path = os.path.join(out, "summary.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        cached = json.load(f)
    if cached.get("knobs", eval_knobs(c)) != eval_knobs(c):
        return None
    if "by_kind" not in cached:  # an evaluation made before the study split its accuracy by kind
        cached["by_kind"] = greedy_by_kind(c, out)
    return cached


def evaluate_model(c, ckpt_dir: str, out: str) -> dict:
    """-> {"greedy", "greedy_len", "sampled" (pass@1: the mean over samples), "pass_k", "maj"} (accuracies in
    [0, 1]; the sampled ones None when sample_k = 0)."""
    t0 = time.time()
    use_cuda = c.device == "cuda" or (c.device == "auto" and torch.cuda.is_available())
    dev = torch.device("cuda" if use_cuda else "cpu")
    model, tok, _ = model_lib.load_checkpoint(model_lib.resolve_checkpoint(ckpt_dir), dtype=torch.float32)
    model.to(dev).eval()
    common = dict(data_dir=c.synth_dir, style="fewshot", max_new_tokens=c.eval_max_new_tokens,
                  limit=c.eval_problems or None, batch_size=c.eval_batch_size, progress=False, stop=c.stop)
    with contextlib.redirect_stdout(io.StringIO()):  # evaluate prints its own table; ours comes at the end
        greedy = benchmarks.evaluate(model, tok, ["synth"], out_dir=os.path.join(out, "greedy"), **common)
        sampled = (benchmarks.evaluate(model, tok, ["synth"], n=c.sample_k, temperature=c.rl_temperature, seed=0,
                                       out_dir=os.path.join(out, sampled_folder(c)), **common) if c.sample_k else None)
    g = greedy["benchmarks"]["synth"]
    s = sampled["benchmarks"]["synth"] if sampled else None
    res = {"greedy": g["accuracy"], "greedy_len": g["mean_response_tokens"],
           "by_kind": greedy_by_kind(c, out),
           "sampled": s["accuracy"] if s else None, "pass_k": s[f"pass@{c.sample_k}"] if s else None,
           "maj": s[f"maj@{c.sample_k}"] if s else None,
           "problems": g["count"], "seconds": time.time() - t0, "knobs": eval_knobs(c)}
    write_json(os.path.join(out, "summary.json"), res)
    return res


STEP = re.compile(r"\d+ [-+*/] \d+ = \d+")  # one written operation of a solution, "4 - 3 = 1"


def greedy_by_kind(c, out: str) -> dict:
    """Where the greedy answers are right, and where they stop short: {"word" | "arith" | "equation": accuracy,
    "early_stop": the share of 2- and 3-step word problems whose answer writes fewer operations than the problem
    has}. RL can raise one kind and lower another: a policy that learns to box the first step's result gains on
    one-step word problems and loses on the longer ones. {} when the evaluation in `out` kept no greedy samples."""
    samples_path = os.path.join(out, "greedy", "samples_synth.jsonl")
    if not os.path.isfile(samples_path):
        return {}
    examples = benchmarks.load_benchmark("synth", c.synth_dir)
    with open(samples_path) as f:
        rows = [json.loads(line) for line in f]  # greedy: one per problem, in the examples' order
    right, short = {}, []
    for ex, r in zip(examples, rows):
        right.setdefault(ex["kind"], []).append(r["correct"])
        if ex["kind"] == "word" and ex["steps"] >= 2:
            short.append(len(STEP.findall(r["completion"])) < ex["steps"])
    out = {k: sum(v) / len(v) for k, v in sorted(right.items())}
    out["early_stop"] = sum(short) / len(short) if short else None
    return out


def sampled_folder(c) -> str:
    return f"sample{c.sample_k}-t{c.rl_temperature:g}"


def same_weights(a_dir: str, b_dir: str) -> bool:
    """True when two checkpoints (or run folders) hold bit-identical weights."""
    a, b = (model_lib.load_safetensors_folder(model_lib.resolve_checkpoint(d)) for d in (a_dir, b_dir))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def rl_curve(folder: str) -> dict:
    """An RL run's curves from its metrics.jsonl: per step reward and mean response length; held-out greedy
    accuracy at eval_step (step 0 = before RL, then every rl_eval_interval steps and the last)."""
    cv = {"step": [], "reward": [], "response_len": [], "eval_step": [], "heldout": []}
    path = os.path.join(folder, "metrics.jsonl")
    if os.path.isfile(path):  # absent until the run's first step
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                if r.get("kind") == "train":
                    cv["step"].append(r["step"])
                    cv["reward"].append(r["reward"])
                    cv["response_len"].append(r["response_len"])
                elif r.get("kind") == "eval" and r["step"] not in cv["eval_step"]:  # a resumed run may repeat one
                    cv["eval_step"].append(r["step"])
                    cv["heldout"].append(r["accuracy"]["synth"])
    return cv


# -----------------------------------------------------------------------------------------------------------------
# running jobs `parallel` at a time: worker processes with their share of the cores, a progress bar per job


def init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()


def watch_parent(parent: int, interval: float = 1.0) -> None:
    """A worker whose study process is gone (killed, even by SIGKILL) stops as if sent SIGTERM: an RL or
    mid-training stage after its current step, with a checkpoint; an evaluation at once. Left running, it would go
    on writing its stage's folder beside the rerun that resumes the same stage."""
    while os.getppid() == parent:
        time.sleep(interval)
    os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def forward_sigterm():
    """SIGTERM to this process while workers run: passed on to them (each stage stops after its step with a
    checkpoint), then a KeyboardInterrupt here, so that run_jobs waits for them as it does on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        for p in multiprocessing.active_children():
            p.terminate()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def worker_env(threads: int):
    """Environment the worker processes start with: their thread count, and no progress bars of their own (two
    processes redrawing one terminal line garble it; this process draws one bar per job instead)."""
    new = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    old = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v


def run_jobs(c, jobs: list, on_done, log) -> None:
    """Run jobs [(key, fn, args, progress)] in the order given, c.parallel at a time. fn and args must pickle (a
    module-level function), fn(*args) runs in a spawned worker process (in this one when parallel is 1);
    progress() -> (done, total) feeds the job's bar; on_done(key, result) -> further jobs, queued at the end."""
    queue = list(jobs)
    if c.parallel == 1:
        while queue:
            key, fn, args, _ = queue.pop(0)
            queue += on_done(key, fn(*args))
        return
    threads = max(1, torch.get_num_threads() // c.parallel)
    running = {}  # future -> (key, progress, bar)
    # spawn, not fork: a forked child of a process that has run OpenMP (torch) can hang in its first parallel region
    with worker_env(threads), forward_sigterm(), ProcessPoolExecutor(
            c.parallel, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker,
            initargs=(threads,)) as pool:
        try:
            while queue or running:
                while queue and len(running) < c.parallel:
                    key, fn, args, progress = queue.pop(0)
                    bar = tqdm(total=progress()[1], desc=" ".join(key), leave=False, dynamic_ncols=True)
                    running[pool.submit(fn, *args)] = (key, progress, bar)
                finished, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                for key, progress, bar in running.values():
                    bar.update(progress()[0] - bar.n)
                for fut in finished:
                    key, _, bar = running.pop(fut)
                    bar.close()
                    queue += on_done(key, fut.result())  # a failed job raises here
        except BaseException:
            for _, _, bar in running.values():
                bar.close()
            log(f"[study] stopping: waiting for the {len(running)} running job(s) to end (their work is kept)")
            pool.shutdown(cancel_futures=True)
            raise


# -----------------------------------------------------------------------------------------------------------------
# one seed: the mid-training stages one after the other, then every arm's RL and evaluations before and after RL


def run_seed(c, seed: int, log) -> dict:
    seed_dir = os.path.join(c.out_dir, f"seed-{seed}")
    plan = plan_stages(c)
    todo = needed_stages(plan, c.arms)
    seconds = {name: stage_done(c, name, plan[name], seed_dir, seed) for name in todo}
    t0 = time.time()
    for name in (n for n in todo if plan[n].kind != "rl"):
        if seconds[name] is None:
            log(f"[study] seed {seed}: {name} (from {plan[name].parent or 'scratch'})")
            seconds[name] = run_stage(c, name, plan[name], seed_dir, seed)
            log(f"[study] seed {seed}: {name} done in {seconds[name]:.0f} s")
    t_mid = time.time() - t0

    evals, rl_unchanged = {}, set()
    folder = lambda model: os.path.join(seed_dir, model)  # noqa: E731
    eval_out = lambda model: os.path.join(seed_dir, "eval", model)  # noqa: E731

    def eval_job(model):
        def progress():  # greedy, then the samples: each writes its results.json when done
            parts = ["greedy"] + ([sampled_folder(c)] if c.sample_k else [])
            return sum(os.path.isfile(os.path.join(eval_out(model), p, "results.json")) for p in parts), len(parts)
        return (("eval", model), evaluate_model, (c, folder(model), eval_out(model)), progress)

    def rl_job(arm):
        name = f"{arm}_rl"
        return (("rl", name), run_stage, (c, name, plan[name], seed_dir, seed),
                lambda: (len(rl_curve(folder(name))["step"]), c.rl_steps))

    def after_rl(arm):
        if same_weights(folder(arm), folder(f"{arm}_rl")):
            # every RL group was uniform (all advantages 0, no update): the evaluation would repeat `before`
            rl_unchanged.add(arm)
            log(f"[study] seed {seed}: {arm}_rl has {arm}'s weights bit for bit (RL made no update): same eval")
            return []
        evals[f"{arm}_rl"] = cached_eval(c, eval_out(f"{arm}_rl"))
        return [] if evals[f"{arm}_rl"] else [eval_job(f"{arm}_rl")]

    def on_done(key, result):
        kind, name = key
        if kind == "rl":
            seconds[name] = result
            log(f"[study] seed {seed}: {name} done in {result:.0f} s")
            return after_rl(name[:-3])
        evals[name] = result
        log(f"[study] seed {seed}: eval {name}: greedy {100 * result['greedy']:.1f}%"
            + (f", pass@1 {100 * result['sampled']:.1f}%, pass@{c.sample_k} {100 * result['pass_k']:.1f}%"
               if c.sample_k else "") + f" ({result['seconds']:.0f} s)")
        return []

    jobs = []  # the RL runs first: the longest jobs, and the evaluations after RL wait for them
    for arm in c.arms:
        if seconds[f"{arm}_rl"] is None:
            jobs.append(rl_job(arm))
    for arm in c.arms:
        evals[arm] = cached_eval(c, eval_out(arm))
        if evals[arm] is None:
            jobs.append(eval_job(arm))
    for arm in c.arms:
        if seconds[f"{arm}_rl"] is not None:
            jobs += after_rl(arm)
    t0 = time.time()
    run_jobs(c, jobs, on_done, log)
    log(f"[study] seed {seed}: mid-training {t_mid:.0f} s, then RL and evaluations ({c.parallel} at a time) "
        f"{time.time() - t0:.0f} s (this run)")

    rows = {}
    for arm in c.arms:
        before = evals[arm]
        after = {**before, "seconds": 0.0} if arm in rl_unchanged else evals[f"{arm}_rl"]
        # the arm's own stages: shared ancestors (base, stable) are reported once, under their own arms
        own = [arm, f"{arm}_rl"] + (["stable_noisy"] if arm == "noisy" else [])
        rows[arm] = {"before": before, "after": after, "curve": rl_curve(folder(f"{arm}_rl")),
                     "wall_s": sum(seconds[s] for s in own) + before["seconds"] + after["seconds"]}
    return rows


# -----------------------------------------------------------------------------------------------------------------
# the table and the plot


def mean_spread(values: list[float], scale: float = 1.0, digits: int = 1, sign: str = "") -> str:
    """'12.3' for one value, '12.3 +- 1.4' (sample std) for several; sign="+" writes '+12.3' for a change."""
    vals = [v * scale for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:{sign}.{digits}f}"
    return f"{statistics.mean(vals):{sign}.{digits}f} +- {statistics.stdev(vals):.{digits}f}"


def first_last(curve: dict, key: str, k: int = 5) -> tuple[float, float]:
    """Means over the first and the last k RL steps (one step alone is noisy)."""
    v = curve[key]
    k = max(1, min(k, len(v) // 2 or 1))
    return sum(v[:k]) / k, sum(v[-k:]) / k


def results_table(c, by_seed: dict) -> str:
    k = c.sample_k
    # a gain is after - before within each seed, then mean +- std over seeds: the std a finding must clear
    head = ["arm", "greedy before RL", "greedy after RL", "greedy gain"] + \
        (["pass@1 before", "pass@1 after", "pass@1 gain", f"pass@{k} before", f"pass@{k} after"] if k else []) + \
        ["RL reward first -> last 5 steps", "resp len (RL, last 5)", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in c.arms:
        rows = [by_seed[s][arm] for s in c.seeds]
        col = lambda f, scale=100.0, d=1, sign="": mean_spread([f(r) for r in rows], scale, d, sign)  # noqa: E731
        cells = [arm]
        for m in ("greedy",) + (("sampled", "pass_k") if k else ()):
            cells += [col(lambda r, w=w: r[w][m]) for w in ("before", "after")]
            if m != "pass_k":
                cells.append(col(lambda r: r["after"][m] - r["before"][m], sign="+"))
        cells += [f"{col(lambda r: first_last(r['curve'], 'reward')[0], 1, 2)} -> "
                  f"{col(lambda r: first_last(r['curve'], 'reward')[1], 1, 2)}",
                  col(lambda r: first_last(r["curve"], "response_len")[1], 1, 0), col(lambda r: r["wall_s"], 1, 0)]
        lines.append("| " + " | ".join(cells) + " |")
    n = by_seed[c.seeds[0]][c.arms[0]]["before"]["problems"]
    ended = [a for a in c.arms if any(0 < len(by_seed[s][a]["curve"]["step"]) < c.rl_steps for s in c.seeds)]
    lines.append("")
    lines.append(f"Accuracies in % on {n} held-out synthetic problems: greedy" + (
                 f"; pass@1 = the mean over {k} samples per problem at the RL temperature {c.rl_temperature:g}, "
                 f"pass@{k} = at least one of them right" if k else "") +
                 f". {len(c.seeds)} seed(s) (mean +- sample std); a gain is after - before RL within a seed. "
                 f"RL: {c.rl_steps} GRPO steps x {c.rl_prompts} "
                 f"prompts x {c.rl_group} responses at temperature {c.rl_temperature:g}, lr {c.rl_lr:g} "
                 + (f"reached over {rl_warmup_steps(c)} warmup steps, then " if rl_warmup_steps(c) else "")
                 + (f"falling on a cosine to {c.rl_min_lr_ratio * c.rl_lr:g}" if c.rl_min_lr_ratio < 1 else "constant")
                 + f", KL {c.rl_kl_coef:g}, reward +1 right / -1 wrong" +
                 (f"; {' and '.join(ended)}: no reward spread in the first {c.rl_no_signal_steps} steps, so RL "
                  "ended there (rl_no_signal_steps)" if ended else "") + ". Wall s: the arm's own stages and evaluations "
                 "(its decay, RL and evals; 'noisy' includes its own stable stage; 'base' and 'stable' are shared "
                 "by the arms below them)" +
                 (f"; RL runs and evals ran {c.parallel} at a time, each on 1/{c.parallel} of the cores, so their "
                  "seconds overlap." if c.parallel > 1 else "."))
    return "\n".join(lines)


def kinds_table(c, by_seed: dict) -> str:
    """Greedy accuracy per problem kind before -> after RL, and the multi-step word answers that stop short."""
    kinds = ("word", "arith", "equation", "early_stop")
    head = ["arm"] + [f"{k} before -> after" for k in kinds[:3]] + ["2-3 step word answers stopped short"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in c.arms:
        rows = [by_seed[s][arm] for s in c.seeds]
        cells = [arm] + [" -> ".join(mean_spread([r[w]["by_kind"].get(k) for r in rows], 100.0)
                                     for w in ("before", "after")) for k in kinds]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Greedy accuracy in % by problem kind (word stories, bare arithmetic, equations), and the share of "
              "the 2- and 3-step word problems whose greedy answer writes fewer operations (\"a op b = c\") than the "
              "problem has: the answer boxed after too few steps."]
    return "\n".join(lines)


def plot_curves(c, by_seed: dict, path: str, log) -> bool:
    """Per arm (mean over seeds): reward, held-out greedy accuracy and response length over RL steps. False when
    matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("[study] matplotlib is not installed: no plot (pip install matplotlib); the table is complete")
        return False
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for arm in c.arms:
        curves = [by_seed[s][arm]["curve"] for s in c.seeds]
        for ax, x, key, smoothed in ((axes[0], "step", "reward", True), (axes[1], "eval_step", "heldout", False),
                                     (axes[2], "step", "response_len", True)):
            n = min(len(cv[key]) for cv in curves)
            ys = [statistics.mean(cv[key][i] for cv in curves) * (100 if key == "heldout" else 1) for i in range(n)]
            if n:
                ax.plot(curves[0][x][:n], smooth(ys) if smoothed else ys, label=arm, marker=None if smoothed else "o")
    axes[0].set(title="mean reward per RL step (smoothed over 5)", xlabel="RL step", ylabel="reward (+1 / -1)")
    axes[1].set(title="held-out greedy accuracy during RL", xlabel="RL step", ylabel="% correct")
    axes[2].set(title="mean response length (smoothed over 5)", xlabel="RL step", ylabel="tokens")
    axes[1].legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, png.getvalue())
    return True


def smooth(ys: list[float], window: int = 5) -> list[float]:
    """Trailing moving average (window steps)."""
    out = []
    for i in range(len(ys)):
        part = ys[max(0, i - window + 1):i + 1]
        out.append(sum(part) / len(part))
    return out


# -----------------------------------------------------------------------------------------------------------------


def check_world(c, stamp: dict, log) -> None:
    """Record in out_dir the synthetic world its stages and evaluations are made from (the corpus knobs and vocab
    size of midtrain.build_synth_data's stamp); refuse to reuse them with another. A stage's argv names the data
    folders, not what is in them: without this, --synth_knobs='{"noise": 0.3}' would reuse every finished stage."""
    world = {"corpus": stamp["corpus"], "vocab_size": stamp["vocab_size"]}
    path = os.path.join(c.out_dir, "study_world.json")
    if not os.path.isfile(path):
        if os.path.isdir(c.out_dir) and any(n.startswith("seed-") for n in os.listdir(c.out_dir)):
            log(f"[study] {c.out_dir} has no study_world.json (made before it existed): its finished stages are "
                "taken to be of this world")
        write_json(path, world)
        return
    with open(path) as f:
        old = json.load(f)
    if old != world:
        flat = lambda w: {**w["corpus"], "vocab_size": w["vocab_size"]}  # noqa: E731
        a, b = flat(old), flat(world)
        changed = ", ".join(f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
                            if a.get(k) != b.get(k))
        raise UserError(f"out_dir={c.out_dir!r} holds stages made from another synthetic world ({changed}; "
                        f"{path}): choose another out_dir, or delete that one to start over")


def main(argv: list[str] | None = None) -> dict:
    c = SimpleNamespace(**configure(copy.deepcopy(DEFAULTS), argv))
    check_config(c)
    # stdout stays for the table; tqdm.write keeps the messages clear of the progress bars
    log = lambda msg: tqdm.write(msg, file=sys.stderr)  # noqa: E731
    t0 = time.time()
    stamp = midtrain.build_synth_data(SimpleNamespace(synth_dir=c.synth_dir, synth_scale=c.synth_scale,
                                              synth_knobs=c.synth_knobs, synth_vocab_size=c.synth_vocab_size,
                                              tokenizer=c.tokenizer, data_root=c.data_root), log)
    check_world(c, stamp, log)
    write_json(os.path.join(c.out_dir, "study_config.json"), vars(c))
    by_seed = {seed: run_seed(c, seed, log) for seed in c.seeds}
    table = results_table(c, by_seed) + "\n\n" + kinds_table(c, by_seed)
    write_atomic(os.path.join(c.out_dir, "results.md"), table + "\n")
    write_json(os.path.join(c.out_dir, "results.json"), {"config": vars(c), "seeds": {str(s): r for s, r in
                                                                                      by_seed.items()}})
    plotted = plot_curves(c, by_seed, os.path.join(c.out_dir, "rl_curves.png"), log)
    print(table)
    log(f"[study] {time.time() - t0:.0f} s; results in {c.out_dir}/results.md"
        + (f" and {c.out_dir}/rl_curves.png" if plotted else ""))
    return by_seed


if __name__ == "__main__":
    run_cli(main)
