"""
Mid-training, the OctoThinker way: a long *stable* stage at a constant learning rate on math-heavy web text, then a
short *decay* stage that branches off the stable checkpoint, anneals the LR and mixes in QA / chain-of-thought and
instruction data. One file, read top to bottom: knobs, LR schedule, setup, data, model, the training loop.

    python midtrain.py                                            # built-in default: tiny model, synthetic data, CPU
    python midtrain.py config/octothinker_1b_stable.py            # the paper's recipe (needs the tokenized corpora)
    torchrun --nproc_per_node=8 midtrain.py config/octothinker_1b_decay_long.py
    torchrun --standalone --nproc_per_node=2 midtrain.py --out_dir=out/mt2  # the default run, same global batch
    python midtrain.py --resume=True                              # continue out dirs' latest checkpoints exactly

Ctrl-C (SIGINT) or SIGTERM while training: the step finishes, a checkpoint is written, the command that resumes is
printed, exit status 130 / 143 (runtime.install_stop_handler); a second signal quits at once.

The built-in default makes the synthetic "math world" (data/synth.py) under data/synth, trains a small BPE on it,
tokenizes each corpus into data/synth/shards/<name>, then runs a stable stage (web-heavy mixture, out/midtrain/stable)
and a decay stage from its last checkpoint (QA + instructions + web, cosine to 10% LR, the same AdamW moments,
out/midtrain: `out_dir`). `model.resolve_checkpoint("out/midtrain")` is the final model that sample.py, rl.py and
eval_math.py read.

The two stages are two runs of the same code (run_stage below); stage="both" chains them, "stable" or "decay" runs
one. Each run's LR follows get_lr over its own token budgets: stable = warmup_tokens + stable_tokens at `lr`,
decay = decay_tokens from `lr` down to min_lr_ratio * lr (ramped in over decay_warmup_tokens if set). Checkpoints are
HF folders (see DESIGN.md) plus state.pt with everything needed to continue the same loss trajectory (optimizer,
step, data position, RNG).

A run is measured in tokens, not steps: it trains until its token budget is spent, and the LR is the schedule's
value at the tokens seen. So a run resumed with another total_batch_tokens continues to the same budget along the
same LR curve, in steps of the new size (the step count only names checkpoints and paces logs and evals). Resuming
takes this run's knobs: changed lr, betas or weight decay apply to the loaded AdamW moments too.
"""
from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from types import SimpleNamespace

import torch
import torch.distributed as dist
from tqdm import tqdm

import model as model_lib
import sample
from configurator import UserError, configure, knobs, run_cli
from data.files import remove_stale_temp_dirs, write_atomic
from data.mixture import MixtureLoader, val_batches
from data.tokenizer import Tokenizer
from runtime import (DECAY_SHAPES, PARALLEL, all_reduce_, all_reduce_mean, autocast_for, checkpointing_for,
                     clip_grad_norm, distributed, exit_on_stop, full_model, get_lr, grad_sync, has_checkpoint,
                     install_stop_handler, latest_checkpoint, load_optimizer_state, matmul_peak_flops, peak_flops,
                     progress_bar, restore_stop_handler, rng_state, save_checkpoint, set_rng_state, stop_requested,
                     trim_metrics, wandb_init, wandb_record, world_size_from_env, memory_table, wrap_for_training)

# -----------------------------------------------------------------------------------------------------------------
# knobs: defaults of the built-in run; a config file and --key=value flags override them (configurator.py)

stage = "both"  # "stable" | "decay" | "both" (stable, then decay branching from the stable run's last checkpoint)
resume = False  # continue the running stage's out dir from its `latest` checkpoint (same loss trajectory)
# model
init_from = "scratch:nano"  # stable run's start: "scratch:<model.PRESETS name>" | HF snapshot folder | our checkpoint
tokenizer = "data/synth/tokenizer"  # for scratch runs (Tokenizer.from_pretrained); checkpoints bring their own
# data: every mixture source is a shard folder data_root/<name> made by data/prepare.py (train_*.bin, val_*.bin)
data_root = "data/synth/shards"
synth_dir = "data/synth"  # "" = off; else make the synthetic corpus here, and `tokenizer` and the shards, if absent
synth_scale = 1.0  # size of the synthetic corpus (data.synth scale)
synth_knobs = {}  # data.synth world knobs over its DEFAULT_KNOBS, e.g. {"max_number": 50, "noise": 0.5}
synth_vocab_size = 1024  # vocabulary of the built-in BPE trained on the synthetic web + QA text
seq_len = 256
# outputs: the decay run (the final model) writes out_dir itself and the stable run out_dir/stable, so
# resolve_checkpoint(out_dir) is the mid-trained model; a non-empty stable_out_dir / decay_out_dir wins over out_dir
out_dir = "out/midtrain"
# stable stage: constant LR after an optional linear warmup
stable_out_dir = ""  # "" = out_dir/stable
stable_mixture = {"web": 0.75, "web_noisy": 0.05, "qa_short": 0.2}  # weights, normalised by the loader
warmup_tokens = 40_960  # 10 steps
stable_tokens = 2_048_000  # + 500 steps
# decay stage: starts from decay_init_from's weights ("" = the stable run's latest checkpoint), LR decays to the end
decay_out_dir = ""  # "" = out_dir
decay_init_from = ""
decay_mixture = {"web": 0.3, "web_noisy": 0.05, "instruct": 0.1, "qa_short": 0.35, "qa_long": 0.2}
decay_tokens = 819_200  # 200 steps
decay_shape = "cosine"  # "cosine" | "linear" | "1-sqrt"
min_lr_ratio = 0.1  # the decay ends at min_lr_ratio * lr
# False: a run initialised from one of our checkpoints continues its AdamW moments (a decay branch is a continuation;
# new moments at the full LR spiked the built-in decay's loss from 2.0 to 3.5). True: new moments (the presets)
fresh_optimizer = False
# > 0: the decay stage's LR is scaled by min(1, tokens into the decay / decay_warmup_tokens), so new AdamW moments
# (fresh_optimizer=True) do not take full-LR steps while their variance estimates are still near zero
decay_warmup_tokens = 0
# batch: a step is total_batch_tokens over all ranks; each rank takes its share, total_batch_tokens / (seq_len *
# world_size) sequences, in micro-batches of micro_batch (lowered to the share when larger: the same global batch on
# 1, 2, 4 or 8 ranks) with grad_accum = share / micro_batch micro-steps (resolve_batch)
micro_batch = 16  # sequences per forward on a rank, at most
total_batch_tokens = 4096  # 16 x 256: one micro-batch per step on one process
logits_chunk = 256  # tokens per lm_head + cross-entropy chunk (memory ~ chunk x vocab); 0 = all logits at once
# optimizer: AdamW, weight decay on matrices only (model.configure_optimizer)
lr = 3e-3
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # 0 = off
# evaluation, logging, checkpoints
eval_interval = 125  # steps; 0 = never (validation loss on every eval source, then a greedy sample)
eval_batches = 2  # micro-batches per source in all (split over the ranks), always the same ones
eval_sources = ["web", "web_noisy", "qa_short", "qa_long", "instruct"]  # [] = the running stage's mixture sources
sample_prompt = "Question: Mia has 9 apples. She gives 4 apples to Noah. How many apples does Mia have now?\nAnswer:"
sample_tokens = 48  # greedy tokens generated at each eval (sample.generate); 0 = no sample
log_interval = 50  # print a line every this many steps (the progress bar always shows the latest)
ckpt_interval = 250  # steps; a checkpoint is also written at the end and at stop_at_step
keep_last_n = 2  # checkpoints kept per run (older ones are deleted); 0 = keep all
stop_at_step = 0  # > 0: end the run at this step with a checkpoint, as if killed (schedule unchanged; resume later)
wandb_log = False  # also send the metrics.jsonl records to Weights & Biases (pip install wandb); never required
wandb_project = "nanoocto"
wandb_run_name = ""  # "" = the out dir's name
# system
device = "auto"  # "auto" (cuda if available) | "cpu" | "cuda"
dtype = "auto"  # "auto" = bfloat16 autocast on CUDA, float32 on CPU | "float32" | "bfloat16"
# torch.compile each transformer block on its own and the chunked loss's per-chunk math (runtime.compile_model): the
# first step compiles (once for all blocks); the eval sample decodes eagerly
compile = False
# "ddp": every GPU holds the weights, gradients and AdamW moments (16 bytes a parameter); "fsdp": FSDP2 shards all
# three over the GPUs (16 / world_size bytes a parameter, + one block's full weights at a time); same updates
parallel = "ddp"
fsdp_cpu_offload = False  # fsdp: shards, gradients and the AdamW step in host memory (slower; fits larger models)
# recompute each block in backward: less activation memory, ~30% more compute. "auto": on only when memory_model
# says the step would not fit the device without it (runtime.checkpointing_for; on CPU: the host's memory)
grad_checkpointing = "auto"
seed = 1337

DEFAULTS = copy.deepcopy(knobs(globals()))  # every name above is a knob; main() starts from a copy of these

# the built-in synthetic sources: shard folder name -> (corpus file in synth_dir, how data.prepare reads a record)
SYNTH_SOURCES = {
    "web": ("web.jsonl", {"field": "text"}),
    "web_noisy": ("web_noisy.jsonl", {"field": "text"}),
    "qa_short": ("qa_short.jsonl", {"template": "qa"}),
    "qa_long": ("qa_long.jsonl", {"template": "qa"}),
    "instruct": ("instruct.jsonl", {"field": "text"}),
}
STAGES = ("stable", "decay", "both")

# -----------------------------------------------------------------------------------------------------------------
# what one run does: its token budgets, over which its LR follows runtime.get_lr (warmup -> stable -> decay)


def stage_plan(c, which: str) -> SimpleNamespace:
    """What one run does: its out dir, start weights, mixture, token budgets (warmup, stable, decay) and the
    decay's warmup."""
    stable_dir = c.stable_out_dir or os.path.join(c.out_dir, "stable")
    if which == "stable":
        return SimpleNamespace(name="stable", out_dir=stable_dir, init_from=c.init_from,
                               mixture=c.stable_mixture, budgets=(c.warmup_tokens, c.stable_tokens, 0),
                               decay_warmup=0)
    return SimpleNamespace(name="decay", out_dir=c.decay_out_dir or c.out_dir,
                           init_from=c.decay_init_from or stable_dir, mixture=c.decay_mixture,
                           budgets=(0, 0, c.decay_tokens), decay_warmup=c.decay_warmup_tokens)


# -----------------------------------------------------------------------------------------------------------------
# config checks: every mistake we can see before touching data or weights


def check_config(c, world_size: int) -> int:
    """Raise UserError naming the first bad knob; return (micro_batch, grad_accum) for this world size."""
    if c.stage not in STAGES:
        raise UserError(f"stage must be one of {STAGES}, got {c.stage!r}")
    if c.decay_shape not in DECAY_SHAPES:
        raise UserError(f"decay_shape must be one of {DECAY_SHAPES}, got {c.decay_shape!r}")
    if c.dtype not in ("auto", "float32", "bfloat16"):
        raise UserError(f"dtype must be 'auto', 'float32' or 'bfloat16' (float16 would need loss scaling), "
                        f"got {c.dtype!r}")
    if c.device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device must be 'auto', 'cpu' or 'cuda', got {c.device!r}")
    if c.parallel not in PARALLEL:
        raise UserError(f"parallel must be one of {PARALLEL}, got {c.parallel!r}")
    if c.grad_checkpointing not in (True, False, "auto"):
        raise UserError(f"grad_checkpointing must be True, False or 'auto', got {c.grad_checkpointing!r}")
    if not c.out_dir and not (c.stable_out_dir and c.decay_out_dir):
        raise UserError("out_dir is empty: give the folder for the runs (e.g. --out_dir=out/midtrain), or both "
                        "stable_out_dir and decay_out_dir")
    for name in ("seq_len", "micro_batch", "total_batch_tokens"):
        if getattr(c, name) < 1:
            raise UserError(f"{name} must be >= 1, got {getattr(c, name)}")
    batch = resolve_batch(c.total_batch_tokens, c.seq_len, c.micro_batch, world_size)
    if not c.lr > 0 or not 0 <= c.min_lr_ratio <= 1:
        raise UserError(f"need lr > 0 and 0 <= min_lr_ratio <= 1, got lr={c.lr}, min_lr_ratio={c.min_lr_ratio}")
    if c.weight_decay < 0 or c.grad_clip < 0 or not (0 <= c.beta1 < 1 and 0 <= c.beta2 < 1):
        raise UserError("need weight_decay >= 0, grad_clip >= 0 and betas in [0, 1)")
    for name in ("warmup_tokens", "stable_tokens", "decay_tokens", "decay_warmup_tokens", "eval_interval",
                 "eval_batches", "sample_tokens", "log_interval", "ckpt_interval", "keep_last_n", "stop_at_step",
                 "logits_chunk"):
        if getattr(c, name) < 0:
            raise UserError(f"{name} must be >= 0, got {getattr(c, name)}")
    if c.decay_warmup_tokens > c.decay_tokens:
        raise UserError(f"decay_warmup_tokens={c.decay_warmup_tokens} exceeds decay_tokens={c.decay_tokens}: the "
                        "decay would end before its LR ramp does")
    if c.eval_interval > 0 and c.eval_batches < 1:
        raise UserError(f"eval_batches must be >= 1 when eval_interval > 0 (got eval_batches={c.eval_batches}, "
                        f"eval_interval={c.eval_interval}); eval_interval=0 turns evaluation off")
    stages = ("stable", "decay") if c.stage == "both" else (c.stage,)
    for s in stages:
        plan = stage_plan(c, s)
        if sum(plan.budgets) <= 0:
            knob = "stable_tokens" if s == "stable" else "decay_tokens"
            raise UserError(f"the {s} stage has no tokens to train on: set {knob}")
        check_mixture(f"{s}_mixture", plan.mixture)
        chained = s == "decay" and c.stage == "both" and not c.decay_init_from
        if not chained:
            check_init_from(f"{'init_from' if s == 'stable' else 'decay_init_from'}", plan.init_from, c.seq_len)
        if not c.resume and has_checkpoint(plan.out_dir):
            raise UserError(f"{plan.out_dir} already holds a run (latest: {latest_checkpoint(plan.out_dir)}); "
                            f"pass --resume=True to continue it, or delete it / choose another out_dir "
                            f"(or {s}_out_dir)")
    dirs = [os.path.abspath(stage_plan(c, s).out_dir) for s in ("stable", "decay")]
    if c.stage == "both" and dirs[0] == dirs[1]:
        raise UserError(f"the stable and decay runs would both write {dirs[0]}: give stable_out_dir and "
                        "decay_out_dir different folders (the decay run branches from the stable one)")
    if not isinstance(c.eval_sources, list) or not all(isinstance(s, str) for s in c.eval_sources):
        raise UserError(f"eval_sources must be a list of source names, got {c.eval_sources!r}")
    return batch


def resolve_batch(total_batch_tokens: int, seq_len: int, micro_batch: int, world_size: int) -> tuple[int, int]:
    """-> (micro_batch, grad_accum) of one rank: its share of a step is total_batch_tokens / (seq_len * world_size)
    whole sequences, taken micro_batch at a time (at most the share), so the global batch is the same on any number
    of ranks that splits it."""
    per_rank = seq_len * world_size
    if total_batch_tokens % per_rank:
        ok = max(1, round(total_batch_tokens / per_rank)) * per_rank
        raise UserError(f"total_batch_tokens={total_batch_tokens} does not split into whole sequences over the ranks: "
                        f"it must be a multiple of seq_len * world_size = {seq_len} * {world_size} = {per_rank} "
                        f"(e.g. {ok}; or change seq_len or the number of processes)")
    share = total_batch_tokens // per_rank
    micro = min(micro_batch, share)
    if share % micro:
        fits = max(m for m in range(1, micro + 1) if share % m == 0)
        raise UserError(f"micro_batch={micro_batch} does not divide a rank's {share} sequences per step "
                        f"(total_batch_tokens={total_batch_tokens} / (seq_len={seq_len} * world_size={world_size})): "
                        f"pick a divisor of {share}, e.g. --micro_batch={fits}")
    return micro, share // micro


def check_mixture(name: str, mixture) -> None:
    if not isinstance(mixture, dict) or not mixture:
        raise UserError(f"{name} must be a non-empty dict {{source: weight}}, got {mixture!r}")
    bad = {k: w for k, w in mixture.items() if not isinstance(w, (int, float)) or not w >= 0 or w == float("inf")}
    if bad or sum(mixture.values()) <= 0:
        raise UserError(f"{name} weights must be finite, >= 0 and not all 0, got {mixture}")


def check_init_from(name: str, path: str, seq_len: int) -> None:
    if path.startswith("scratch:"):
        preset = path.removeprefix("scratch:")
        if preset not in model_lib.PRESETS:
            raise UserError(f"{name}={path!r}: unknown model preset {preset!r}; one of {sorted(model_lib.PRESETS)}")
        max_len = model_lib.PRESETS[preset].get("max_seq_len", model_lib.LlamaConfig.max_seq_len)
        if seq_len > max_len:
            raise UserError(f"seq_len={seq_len} exceeds preset {preset!r}'s max_seq_len={max_len}")
    elif not os.path.exists(path):
        raise UserError(f"{name}={path!r} does not exist (expected 'scratch:<preset>', an HF snapshot folder or "
                        "one of our checkpoints / run folders)")


# -----------------------------------------------------------------------------------------------------------------
# the built-in data: synthetic corpus -> tokenizer -> shards, each made only if absent (or stale)


def build_synth_data(c, log=print) -> dict:
    """Make the built-in corpus (c.synth_dir), the BPE trained on it (c.tokenizer) and one shard folder per source
    (c.data_root/<name>). A stamp records what the tokenizer and shards were made from; a changed corpus or vocab
    size rebuilds them. -> the stamp: {"corpus": the corpus knobs, "vocab_size", "tokenizer"}."""
    from data.prepare import is_prepared, prepare
    from data.synth import QA_TEMPLATE, generate_corpus, read_jsonl

    t0 = time.time()
    # returns at once if the folder already holds a complete corpus made with the same knobs
    manifest = generate_corpus(c.synth_dir, seed=0, scale=c.synth_scale, **c.synth_knobs)
    stamp_path = os.path.join(c.data_root, "synth_build.json")
    stamp = {"corpus": manifest["knobs"], "vocab_size": c.synth_vocab_size, "tokenizer": os.path.abspath(c.tokenizer)}
    old = None
    if os.path.isfile(stamp_path):
        with open(stamp_path) as f:
            old = json.load(f)
    fresh = old == json.loads(json.dumps(stamp))
    tok_file = os.path.join(c.tokenizer, "nanoocto_tokenizer.json")
    if fresh and os.path.isfile(tok_file):
        tok = Tokenizer.from_pretrained(c.tokenizer)
    else:
        fresh = False
        web = [r["text"] for r in read_jsonl(os.path.join(c.synth_dir, "web.jsonl"))]
        qa = [QA_TEMPLATE.format(**r) for r in read_jsonl(os.path.join(c.synth_dir, "qa_short.jsonl"))]
        tok = Tokenizer.train(web + qa, c.synth_vocab_size)
        tok.save(c.tokenizer)
        log(f"built-in tokenizer: {tok.vocab_size} tokens trained on {len(web)} web pages + {len(qa)} QA "
            f"-> {c.tokenizer}")
    val_tokens = max(1, round(20_000 * c.synth_scale))  # per source; an eval reads at most a few batches
    for name, (fname, how) in SYNTH_SOURCES.items():
        folder = os.path.join(c.data_root, name)
        if fresh and is_prepared(folder):
            continue
        # BOS starts every document: sample.generate puts BOS before a text prompt, so training must too
        done = prepare(os.path.join(c.synth_dir, fname), folder, tok, val_tokens=val_tokens, bos=True,
                       overwrite=True, progress=False, **how)
        log(f"shards {folder}: {done['train_tokens']:,} train + {done['val_tokens']:,} val tokens")
    write_atomic(stamp_path, json.dumps(stamp, indent=1) + "\n")
    log(f"built-in data ready in {time.time() - t0:.1f} s ({c.synth_dir}, {c.data_root})")
    return stamp


# -----------------------------------------------------------------------------------------------------------------
# model and tokenizer: from scratch, from an HF snapshot, or from one of our checkpoints


def load_start(init: str, c, load_state: bool):
    """-> (model fp32 on CPU, tokenizer, training state or None)."""
    if init.startswith("scratch:"):
        tok = Tokenizer.from_pretrained(c.tokenizer)
        cfg = model_lib.LlamaConfig.from_preset(init.removeprefix("scratch:"), vocab_size=tok.vocab_size,
                                                bos_id=tok.bos_id, eos_id=tok.eos_id)
        torch.manual_seed(c.seed)  # the same initial weights on every rank and every rerun
        return model_lib.Llama(cfg), tok, None
    model, tok, state = model_lib.load_checkpoint(init, dtype=torch.float32, load_state=load_state)
    return model, tok, state


# -----------------------------------------------------------------------------------------------------------------
# evaluation: validation loss per source on fixed batches, and a greedy sample


def val_sources(c, mixture: dict, log) -> list[str]:
    """The sources to evaluate that have enough val tokens for one batch (others are skipped, with a note)."""
    names = c.eval_sources or sorted(mixture)
    usable = []
    for name in names:
        try:
            val_batches(os.path.join(c.data_root, name), c.seq_len, c.micro_batch, 1, 0, world_size_from_env())
            usable.append(name)
        except (ValueError, FileNotFoundError) as e:
            log(f"eval: skipping source {name!r}: {e}")
    return usable


@torch.no_grad()
def evaluate(model, c, names: list[str], d, autocast) -> dict:
    """Mean validation loss per source over the first eval_batches micro-batches of its val stream, whatever the
    number of ranks: rank r's i-th batch is global batch i * world_size + r (val_batches' layout); batches past
    eval_batches in the last round are run but weigh 0 (every rank runs as many forwards: FSDP gathers in each)."""
    model.eval()
    out = {}
    rounds = -(-c.eval_batches // d.world_size)
    for name in names:
        total = torch.zeros(2, device=d.device)  # [loss sum, batches]
        for i, (x, y) in enumerate(val_batches(os.path.join(c.data_root, name), c.seq_len, c.micro_batch, rounds,
                                               d.rank, d.world_size)):
            with autocast():
                _, loss = model(x.to(d.device), targets=y.to(d.device), chunk_size=c.logits_chunk)
            weight = float(i * d.world_size + d.rank < c.eval_batches)
            total += torch.stack([loss.float() * weight, torch.tensor(weight, device=d.device)])
        all_reduce_(total, d)
        out[name] = (total[0] / total[1]).item()
    model.train()
    return out


def greedy_sample(model, tok, c, autocast) -> str:
    with autocast():
        return sample.generate(model, tok, [c.sample_prompt], max_new_tokens=c.sample_tokens, temperature=0.0,
                               seed=0)[0].text


# -----------------------------------------------------------------------------------------------------------------
# one run (a stage): build, train, checkpoint, evaluate


def run_stage(c, which: str, d, batch: tuple[int, int], peak: float, stop=None) -> bool:
    """Train one stage to the end of its budget (or stop_at_step); batch: this rank's (micro_batch, grad_accum).
    Returns True when the stage is complete. stop (runtime.install_stop_handler): a SIGINT / SIGTERM ends the run
    after the current step with a checkpoint and SystemExit(128 + signal)."""
    micro_batch, grad_accum = batch
    plan = stage_plan(c, which)
    log = tqdm.write if d.master else (lambda *a, **k: None)
    out_dir = plan.out_dir
    if d.master and os.path.isdir(out_dir):
        remove_stale_temp_dirs(out_dir)  # before reading `latest`: it may restore a moved-aside folder
    if d.ddp:
        dist.barrier()
    resume_from = latest_checkpoint(out_dir) if c.resume else None
    if c.resume and resume_from is None:
        log(f"[{which}] resume: no checkpoint in {out_dir}, starting from {plan.init_from}")
    start = resume_from or plan.init_from
    model, tok, state = load_start(start, c, load_state=resume_from is not None or not c.fresh_optimizer)
    if resume_from is None and state is not None:  # weights + optimizer moments of another run; new step/data
        state = {"optimizer": state["optimizer"]}

    # --- data
    loader = MixtureLoader({n: os.path.join(c.data_root, n) for n in plan.mixture}, plan.mixture, c.seq_len,
                           micro_batch, rank=d.rank, world_size=d.world_size,
                           # the decay branch reads its sources in another order than the stable run did
                           seed=c.seed + (1 if which == "decay" else 0), log=log)
    if loader.vocab_size != tok.vocab_size or tok.vocab_size > model.config.vocab_size:
        raise UserError(f"data in {c.data_root} was tokenized with a {loader.vocab_size}-token vocabulary, the "
                        f"model's tokenizer has {tok.vocab_size} and the model {model.config.vocab_size}: re-run "
                        "data/prepare.py with the model's tokenizer")
    if c.seq_len > model.config.max_seq_len:
        raise UserError(f"seq_len={c.seq_len} exceeds the model's max_seq_len={model.config.max_seq_len}")
    evals = val_sources(c, plan.mixture, log) if c.eval_interval > 0 else []

    # --- model, optimizer
    model.to(d.device)
    model.gradient_checkpointing = checkpointing_for("midtrain", model.config, c, d, log)  # "auto": by memory
    n_params, flops_per_token = model.num_params(), model.flops_per_token(c.seq_len)
    train_dtype, autocast = autocast_for(c.dtype, d.device)
    # raw_model: the Llama the optimizer holds (sharded in place under fsdp); model: what forward/backward run on
    model, raw_model = wrap_for_training(model, c.parallel, d, train_dtype, c.fsdp_cpu_offload, c.compile)
    optimizer = raw_model.configure_optimizer(c.lr, c.weight_decay, (c.beta1, c.beta2), device_type=d.device.type)
    if state is not None and "optimizer" in state:
        load_optimizer_state(optimizer, state["optimizer"], raw_model)

    # --- where we are
    step, tokens = 0, 0
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    if resume_from is not None:
        loader.load_state_dict(state["loader"])
        step, tokens = state["step"], state["tokens"]
        set_rng_state(state["rng"])
        log(f"[{which}] resumed from {resume_from} at step {step} ({tokens:,} tokens)")
        report_changed_knobs(resume_from, c, log)
    if d.master:
        os.makedirs(out_dir, exist_ok=True)
        if resume_from is None and os.path.exists(metrics_path):
            os.remove(metrics_path)  # leftovers of a run that never checkpointed
        trim_metrics(metrics_path, step)
    # the run ends when its token budget is spent; a resume with another total_batch_tokens takes the rest in
    # steps of the new size (n_steps is where this run's step count will end)
    budget = sum(plan.budgets)
    n_steps = step + math.ceil(max(0, budget - tokens) / c.total_batch_tokens)
    run_config = {**vars(c), "run": {"stage": which, "out_dir": out_dir, "init_from": start, "world_size": d.world_size,
                                     "micro_batch": micro_batch, "grad_accum": grad_accum, "steps": n_steps,
                                     "mixture": plan.mixture}}
    log(f"[{which}] {n_params / 1e6:.2f}M params, {n_steps} steps of {c.total_batch_tokens:,} tokens "
        f"({d.world_size} x {micro_batch} x {c.seq_len} x {grad_accum} accum, {c.parallel}), mixture {plan.mixture}, "
        f"from {start} -> {out_dir}")
    log(memory_table("midtrain", raw_model.config, c, d, raw_model.gradient_checkpointing))
    # MFU against the datasheet (peak) and against what a plain matmul reaches here (the same number where no
    # datasheet applies: CPU, fp32)
    matmul_peak = matmul_peak_flops(d.device, train_dtype)
    if matmul_peak != peak:
        log(f"[{which}] measured {str(train_dtype).removeprefix('torch.')} matmul peak: {matmul_peak / 1e12:.1f} "
            f"TFLOP/s per device ({matmul_peak / peak:.0%} of the datasheet's {peak / 1e12:.0f})")

    def save(step_now, tokens_now):
        st = {"step": step_now, "tokens": tokens_now, "loader": loader.state_dict(), "rng": rng_state(),
              "stage": which}
        save_checkpoint(os.path.join(out_dir, f"ckpt-{step_now:06d}"), raw_model, optimizer, tok, run_config, st, d,
                        c.keep_last_n)

    wandb_run = wandb_init(c, out_dir) if d.master else None  # None unless wandb_log=True

    def write_metrics(rec):
        if d.master:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            wandb_record(wandb_run, rec)

    def run_eval(step_now, tokens_now):
        t0 = time.time()
        val = evaluate(raw_model, c, evals, d, autocast)
        text = None
        if c.sample_tokens > 0:  # under fsdp every rank joins the gather of the weights, rank 0 samples
            sampler = full_model(raw_model, train_dtype, keep=d.master)  # bf16 on GPU: half an fp32 copy
            text = greedy_sample(sampler, tok, c, autocast) if d.master else None
            del sampler
        write_metrics({"kind": "eval", "step": step_now, "tokens": tokens_now, "val": val, "sample": text,
                       "seconds": round(time.time() - t0, 2)})
        log(f"[{which}] step {step_now:>5}/{n_steps} | val " + " ".join(f"{k} {v:.3f}" for k, v in val.items()))
        if text is not None:
            log(f"[{which}]   sample: {c.sample_prompt!r} -> {text!r}")

    if tokens >= budget:
        log(f"[{which}] already complete: step {step}, {tokens:,} of {budget:,} tokens")
        return True
    if resume_from is None and evals:
        run_eval(0, 0)  # where the run starts from

    bar = progress_bar(d.master, total=n_steps, initial=step, desc=which, leave=True)
    t_run, tok_s, steps_here = time.time(), 0.0, 0
    saved_at = step if resume_from is not None else -1
    model.train()
    signum = 0
    if stop is not None:
        stop.armed = True
    while tokens < budget:
        if c.stop_at_step and step >= c.stop_at_step:
            break
        t0 = time.perf_counter()
        # the LR for this step is the schedule's value at the tokens seen once it is done, so a warmup's first
        # step already moves and a decay's last step runs at exactly min_lr
        lr_now = get_lr(tokens + c.total_batch_tokens, c.lr, *plan.budgets, c.min_lr_ratio, c.decay_shape,
                        plan.decay_warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr_now
        loss_sum = torch.zeros((), device=d.device)
        for micro in range(grad_accum):
            x, y = loader.next_batch()  # [micro_batch, seq_len] each
            x, y = x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)
            # gradients are all-reduced only on the last micro-step; the others accumulate locally
            with grad_sync(model, raw_model, sync=micro == grad_accum - 1):
                with autocast():
                    _, loss = model(x, targets=y, chunk_size=c.logits_chunk)
                (loss / grad_accum).backward()
            loss_sum += loss.detach().float()
        loss_mean = all_reduce_mean(loss_sum / grad_accum, d).item()
        grad_norm = clip_grad_norm(raw_model.parameters(), c.grad_clip)
        if not (math.isfinite(loss_mean) and math.isfinite(grad_norm)):
            bar.close()
            stop_non_finite(which, step + 1, loss_mean, grad_norm, out_dir, d)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += c.total_batch_tokens
        if d.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        steps_here += 1
        # smoothed throughput; the first two steps (allocator, compile warm-up) only seed it
        tok_s = c.total_batch_tokens / dt if steps_here <= 2 else 0.9 * tok_s + 0.1 * c.total_batch_tokens / dt
        mfu = flops_per_token * tok_s / (d.world_size * peak)
        mfu_matmul = flops_per_token * tok_s / (d.world_size * matmul_peak)
        write_metrics({"kind": "train", "step": step, "tokens": tokens, "loss": loss_mean, "lr": lr_now,
                       "grad_norm": grad_norm, "tok_s": round(c.total_batch_tokens / dt, 1), "mfu": round(mfu, 4),
                       "mfu_matmul": round(mfu_matmul, 4), "elapsed": round(time.time() - t_run, 2)})
        bar.set_postfix(loss=f"{loss_mean:.3f}", lr=f"{lr_now:.2e}", tok_s=f"{tok_s:,.0f}", mfu=f"{mfu:.1%}",
                        refresh=False)
        bar.update(1)
        if c.log_interval and step % c.log_interval == 0:
            log(f"[{which}] step {step:>5}/{n_steps} | loss {loss_mean:.4f} | lr {lr_now:.2e} | "
                f"{tok_s:,.0f} tok/s | mfu {mfu:.1%}"
                + (f" ({mfu_matmul:.1%} of the matmul peak)" if matmul_peak != peak else ""))
        last = tokens >= budget or step == c.stop_at_step
        if last or (c.ckpt_interval and step % c.ckpt_interval == 0):
            save(step, tokens)  # before eval: a crashing eval loses nothing
            saved_at = step
        if evals and (tokens >= budget or step % c.eval_interval == 0):
            run_eval(step, tokens)
        signum = stop_requested(stop, d)
        if signum:
            break
    if stop is not None and not signum:  # stopping: stay armed, so torchrun's SIGTERM (sent once a rank has left)
        stop.armed = False               # cannot kill this rank before it has checkpointed and said how to resume
    bar.close()
    if saved_at != step:  # stop_at_step reached before this resumed run took a step, or a signal
        save(step, tokens)
    if signum:
        exit_on_stop(stop, signum, step, latest_checkpoint(out_dir) if d.master else out_dir, d, log)
    done = tokens >= budget
    log(f"[{which}] {'done' if done else 'stopped'} at step {step}/{n_steps} ({tokens:,} tokens) in "
        f"{time.time() - t_run:.1f} s -> {latest_checkpoint(out_dir) if d.master else out_dir}")
    return done


def stop_non_finite(which: str, step: int, loss: float, grad_norm: float, out_dir: str, d) -> None:
    """A NaN/inf loss or gradient: stop without saving the bad state; the last good checkpoint stays `latest`."""
    what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {grad_norm}"
    good = latest_checkpoint(out_dir)
    keep = f"the last good checkpoint is {good}" if good else "no checkpoint of this run was written yet"
    msg = (f"[{which}] step {step}: {what} is not finite; stopping without saving this state ({keep}). "
           "Lower lr, check the data, or resume from the checkpoint with different knobs.")
    raise SystemExit(msg if d.master else 1)


def report_changed_knobs(ckpt: str, c, log) -> None:
    """Resuming with changed knobs is allowed (e.g. a longer stable stage) but must not go unnoticed."""
    path = os.path.join(ckpt, "run_config.json")
    if not os.path.isfile(path):
        return
    with open(path) as f:
        old = json.load(f)
    ignore = {"resume", "stop_at_step", "run"}
    changed = {k: (old[k], v) for k, v in vars(c).items() if k in old and k not in ignore and old[k] != v}
    for k, (was, now) in changed.items():
        log(f"resume: knob {k} changed: {was!r} -> {now!r}")


# -----------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    c = SimpleNamespace(**configure(copy.deepcopy(DEFAULTS), argv))
    batch = check_config(c, world_size_from_env())  # all knob errors before any work
    with distributed(c.device, c.parallel) as d:  # no process group outlives this (issue 28)
        log = tqdm.write if d.master else (lambda *a, **k: None)
        if batch[0] < c.micro_batch:
            log(f"micro_batch {c.micro_batch} -> {batch[0]}: a rank's share of a {c.total_batch_tokens:,}-token step "
                f"on {d.world_size} ranks is {batch[0]} sequences")
        stop = install_stop_handler(d.master, os.path.relpath(__file__), argv)
        try:
            run_stages(c, d, batch, stop, log)
        finally:
            restore_stop_handler(stop)


def run_stages(c, d, batch: tuple[int, int], stop, log) -> None:
    if c.synth_dir:
        if d.master:
            build_synth_data(c, log)
        if d.ddp:
            dist.barrier()
    train_dtype, _ = autocast_for(c.dtype, d.device)
    peak, source = peak_flops(d.device, train_dtype)
    log(f"peak for MFU: {peak / 1e12:.3f} TFLOP/s per device ({source})")
    t0 = time.time()
    stages = ("stable", "decay") if c.stage == "both" else (c.stage,)
    for which in stages:
        if not run_stage(c, which, d, batch, peak, stop):
            log(f"stopped early in the {which} stage (stop_at_step={c.stop_at_step}); --resume=True continues")
            break
    log(f"total {time.time() - t0:.1f} s")


if __name__ == "__main__":
    run_cli(main)
