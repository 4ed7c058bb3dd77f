"""
What the two training stages (midtrain.py, rl.py) run on, in one place: the distributed setup (torchrun's env),
precision (autocast), the learning-rate schedule, the cross-rank reductions, the progress bar, compile=True's
per-block torch.compile, data parallelism (DDP, or FSDP2 sharding with the full weights gathered for sampling), and
the training checkpoints (the HF folder of model.py plus state.pt: optimizer, RNG, data position), with `latest`,
pruning and the metrics log's trim on resume, and the optional W&B logger of the metrics records. DESIGN.md,
"runtime.py", has the choices and their memory numbers.

The stages import this module, model, data, sample and the grader; never each other.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import gc
import importlib
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import memory_model
import model as model_lib
from configurator import UserError
from data.files import remove_stale_temp_dirs, write_atomic

# -----------------------------------------------------------------------------------------------------------------
# the learning-rate schedule of both stages: warmup -> stable -> decay, budgets in one unit (tokens or steps)

DECAY_SHAPES = ("cosine", "linear", "1-sqrt")


def get_lr(t, lr, warmup, stable, decay, min_lr_ratio=0.1, shape="cosine", decay_warmup=0) -> float:
    """LR after t tokens (or steps) of a run: linear from 0 to `lr` over `warmup`, constant for `stable`, then from
    `lr` down to min_lr_ratio * lr over `decay` with the given shape; min_lr after that (or `lr` forever if decay is 0).
    decay_warmup > 0 scales the decay's LR by min(1, tokens into the decay / decay_warmup)."""
    if shape not in DECAY_SHAPES:
        raise ValueError(f"decay_shape must be one of {DECAY_SHAPES}, got {shape!r}")
    if t < warmup:
        return lr * t / warmup
    t = t - warmup - stable
    if t < 0 or decay <= 0:
        return lr
    p = min(t / decay, 1.0)  # progress through the decay, 0 -> 1
    f = {"cosine": 0.5 * (1.0 + math.cos(math.pi * p)), "linear": 1.0 - p, "1-sqrt": 1.0 - math.sqrt(p)}[shape]
    min_lr = lr * min_lr_ratio
    ramp = min(t / decay_warmup, 1.0) if decay_warmup > 0 else 1.0
    return (min_lr + (lr - min_lr) * f) * ramp


# -----------------------------------------------------------------------------------------------------------------
# distributed setup (torchrun sets RANK, LOCAL_RANK, WORLD_SIZE) and precision

DIST_TIMEOUT = datetime.timedelta(hours=2)


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup_distributed(device_knob: str) -> SimpleNamespace:
    """-> d: ddp (more than one process), rank, local_rank, world_size, device, master."""
    world = world_size_from_env()
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device_knob == "auto" else device_knob == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available")
    dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        # On GPUs gradients go over NCCL, but the scripts also all-reduce small CPU tensors (counts, losses,
        # rewards), which NCCL cannot carry: give CPU tensors gloo. The long timeout covers the work rank 0 does
        # alone while the others wait at a barrier (rl.py's greedy eval, writing a 3B checkpoint).
        dist.init_process_group("cpu:gloo,cuda:nccl" if use_cuda else "gloo", timeout=DIST_TIMEOUT)
    return SimpleNamespace(ddp=world > 1, rank=rank, local_rank=local_rank, world_size=world, device=dev,
                           master=rank == 0)


@contextlib.contextmanager
def distributed(device_knob: str, parallel: str = "ddp"):
    """setup_distributed for the body -> d; on leaving it, by any path (return, UserError, a signal's or a NaN's
    SystemExit, any exception), no collective is left pending and every process group is destroyed, while the
    interpreter is still whole. Every entry point that starts a process group runs inside this.

    Why (issue 28, DESIGN.md "Exit"): gloo runs each collective on its own worker threads, which drop their
    reference to the work's tensors only after the caller's wait() has returned. A tensor whose Python object died
    first was handed over to C++ (torch "resurrects" it), so that last drop takes the GIL. destroy_process_group
    does not stop those threads while anything still holds the group (FSDP2's DTensor ops leave a holder; DDP does when
    torch._dynamo came after the group), so a worker could reach for the GIL while the interpreter was being torn
    down: pthread_exit through a noexcept destructor, "terminate called without an active exception", exit -6."""
    if parallel == "ddp" and world_size_from_env() > 1:
        # before the group: torch._dynamo imported after it (DDP's constructor does) keeps the group alive past
        # destroy_process_group, and with it gloo's threads; imported first, the group goes and they are joined
        # (measured; after FSDP2's DTensor ops it stays held either way, so fsdp runs skip the import's seconds)
        importlib.import_module("torch._dynamo")
    d = setup_distributed(device_knob)
    synced = False  # every rank leaves at the same point: a return, or our SystemExits (stop, non-finite loss)
    try:
        yield d
        synced = True
    except SystemExit:
        synced = True
        raise
    finally:
        shutdown_distributed(drain=synced)


def shutdown_distributed(drain: bool = True) -> None:
    """Destroy every process group (a no-op without one). drain: first a barrier, which gloo runs only after all
    work issued before it, with the GIL released while waiting, so the worker threads finish dropping the tensors
    of the last collectives now, not at interpreter exit. Only when every rank reaches it (a rank that raised
    alone would wait for the others until the timeout)."""
    if not dist.is_initialized():
        return
    try:
        if drain:
            dist.barrier()
    finally:
        dist.destroy_process_group()
        gc.collect()  # the models, optimizers and DDP wrappers in reference cycles hold the group: free them now


def autocast_for(dtype_knob: str, dev: torch.device):
    """Mixed precision: fp32 master weights, matmuls in bf16 under autocast (bf16 needs no loss scaling)."""
    use_bf16 = dtype_knob == "bfloat16" or (dtype_knob == "auto" and dev.type == "cuda")
    if not use_bf16:
        return torch.float32, contextlib.nullcontext
    return torch.bfloat16, lambda: torch.autocast(dev.type, dtype=torch.bfloat16)


def all_reduce_(t: torch.Tensor, d, op=None) -> torch.Tensor:
    """Sum (or op) over ranks, in place; a no-op on one process."""
    if d.ddp:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor, d) -> torch.Tensor:
    if d.ddp:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= d.world_size
    return t


def barrier(d) -> None:
    if d.ddp:
        dist.barrier()


def progress_bar(master: bool, **kw) -> tqdm:
    """tqdm on the master rank only, and off when TQDM_DISABLE=1 (study.py's worker processes: two bars redrawn
    from two processes garble the terminal). tqdm reads TQDM_DISABLE itself only when disable= is passed."""
    off = not master or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true")
    return tqdm(disable=off, dynamic_ncols=True, **kw)


# -----------------------------------------------------------------------------------------------------------------
# MFU: achieved FLOPs over the device's peak. GPUs: datasheet bf16 dense peaks, and a matmul measured at start beside
# them; elsewhere only the measured matmul

PEAK_FLOPS_BF16 = [  # (substring of torch.cuda.get_device_name(), dense bf16 FLOP/s), most specific first
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("GH200", 989e12), ("H100", 989e12), ("H200", 989e12),
    ("H800", 989e12), ("B200", 2250e12), ("B100", 1750e12), ("A100", 312e12), ("A800", 312e12),
    ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12),
]


def measure_peak_flops(dev: torch.device, dtype: torch.dtype, seconds: float = 0.6) -> float:
    """Best FLOP/s of square matmuls on this device and dtype, timed for about `seconds`. Several sizes, because
    the best one depends on the machine (caches, threads, other processes sharing the cores)."""
    sizes = (512, 1024, 2048) if dev.type == "cpu" else (4096, 8192)
    reps = 1 if dev.type == "cpu" else 10  # on a GPU time several, so launch overhead vanishes
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
        a @ b  # the first call pays one-time costs
        t_end = time.perf_counter() + seconds / len(sizes)
        for i in range(10_000):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            if dev.type == "cuda":
                torch.cuda.synchronize()
            best = max(best, reps * 2 * n ** 3 / (time.perf_counter() - t0))
            if i >= 2 and time.perf_counter() > t_end:
                break
    return best


@functools.lru_cache(maxsize=None)  # measured once per process, not once per stage
def matmul_peak_flops(dev: torch.device, dtype: torch.dtype) -> float:
    """What this device reaches in practice (measure_peak_flops): MFU against it next to the datasheet's says how
    much of the gap is the kernels' and how much the card's (clocks, power)."""
    return measure_peak_flops(dev, dtype)


@functools.lru_cache(maxsize=None)
def peak_flops(dev: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """-> (FLOP/s per device, where the number comes from): the datasheet's bf16 peak on a known GPU, else the
    measured matmul peak."""
    if dev.type == "cuda" and dtype == torch.bfloat16:
        name = torch.cuda.get_device_name(dev)
        for key, flops in PEAK_FLOPS_BF16:
            if key in name:
                return flops, f"{name} bf16 datasheet"
    return matmul_peak_flops(dev, dtype), f"measured {str(dtype).removeprefix('torch.')} matmul on {dev.type}"


# -----------------------------------------------------------------------------------------------------------------
# RNG state


def rng_state() -> dict:
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        # this process's device only: a run may resume on fewer (or more) GPUs than wrote the checkpoint
        s["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return s


def set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    cuda = s.get("cuda")
    if cuda is None or not torch.cuda.is_available():
        return
    dev = torch.cuda.current_device()
    if isinstance(cuda, (list, tuple)):  # older checkpoints saved every visible device's state
        if dev >= len(cuda):
            return
        cuda = cuda[dev]
    torch.cuda.set_rng_state(cuda, dev)


# -----------------------------------------------------------------------------------------------------------------
# checkpoints: out_dir/ckpt-<step>, `latest` names the newest; rank 0 writes

CKPT_RE = re.compile(r"^ckpt-(\d+)$")


def has_checkpoint(out_dir: str) -> bool:
    return os.path.isfile(os.path.join(out_dir, "latest"))


def latest_checkpoint(out_dir: str) -> str | None:
    return model_lib.resolve_checkpoint(out_dir) if has_checkpoint(out_dir) else None


def prune_checkpoints(out_dir: str, keep: int) -> None:
    remove_stale_temp_dirs(out_dir)  # leftovers of a save that was killed
    if keep <= 0:
        return
    found = sorted((int(m.group(1)), name) for name in os.listdir(out_dir) if (m := CKPT_RE.match(name)))
    for _, name in found[:-keep]:
        shutil.rmtree(os.path.join(out_dir, name), ignore_errors=True)


def trim_metrics(path: str, last_step: int) -> None:
    """On resume, drop records written after the checkpoint (by the interrupted run), so the log stays one story.
    A run killed in the middle of a write leaves a torn last line: it goes too."""
    if not os.path.isfile(path):
        return
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("step", 0) <= last_step:
                rows.append(line if line.endswith("\n") else line + "\n")
    write_atomic(path, "".join(rows))


# -----------------------------------------------------------------------------------------------------------------
# Weights & Biases: the stages' metrics records, also sent to W&B when their wandb_log knob is on (as in nanoGPT;
# `pip install wandb`). metrics.jsonl is always written; W&B is never required.


def wandb_init(c, out_dir: str):
    """A W&B run for one stage run (None when c.wandb_log is off). Called on rank 0 only."""
    if not getattr(c, "wandb_log", False):
        return None
    try:
        import wandb
    except ImportError:
        raise UserError("wandb_log=True needs the wandb package: pip install wandb (then wandb login), or pass "
                        "--wandb_log=False; metrics.jsonl has the same records") from None
    if wandb.run is not None:  # midtrain's stable then decay: one W&B run each
        wandb.run.finish()
    return wandb.init(project=c.wandb_project, name=c.wandb_run_name or os.path.basename(os.path.normpath(out_dir)),
                      config=dict(vars(c)))


def wandb_record(wandb_run, rec: dict) -> None:
    """One metrics.jsonl record as W&B scalars: "train/loss", "eval/val/web", ... at the record's step."""
    if wandb_run is None:
        return
    flat = {}
    for key, value in rec.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and key != "step":
                flat["/".join(p for p in (rec.get("kind", "train"), key, sub) if p)] = v
    wandb_run.log(flat, step=rec["step"])


# -----------------------------------------------------------------------------------------------------------------
# data parallelism: "ddp" (every rank holds the full model, gradients all-reduced) or "fsdp" (FSDP2: parameters,
# gradients and AdamW moments sharded over the ranks; each block's weights all-gathered just for its forward and
# backward). One process is the same under both: nothing to wrap.

PARALLEL = ("ddp", "fsdp")


def shard_model(model, dev: torch.device, train_dtype: torch.dtype, cpu_offload: bool = False) -> None:
    """fully_shard each block, then the root (embedding, final norm, lm_head), in place. The tied lm_head is the
    embedding's Parameter, so it lives once, in the root's group, and its two gradients add up there.
    On GPU with bf16: MixedPrecisionPolicy computes in bf16 from fp32 master shards, gradients reduced in fp32.
    cpu_offload: shards, gradients and the AdamW step live in host memory (the optimizer then runs on the CPU)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    bf16 = dev.type == "cuda" and train_dtype == torch.bfloat16  # gloo on CPU keeps fp32 (autocast does bf16)
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
    # pinned host memory makes the copies to the GPU asynchronous; there is no GPU to pin for on a CPU run
    offload = CPUOffloadPolicy(pin_memory=dev.type == "cuda") if cpu_offload else OffloadPolicy()
    kw = {"mp_policy": mp, "offload_policy": offload}
    for block in model.layers:
        fully_shard(block, **kw)
    fully_shard(model, **kw)


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def compile_backend() -> str:
    """torch.compile's backend for compile=True: inductor, unless NANOOCTO_COMPILE_BACKEND names another (the tests
    use aot_eager: the same graphs and autograd, without inductor's C++ build on CPU)."""
    return os.environ.get("NANOOCTO_COMPILE_BACKEND", "") or "inductor"


def compile_model(model, backend=None, dynamic: bool | None = None) -> None:
    """compile=True, before shard_model / DDP: each block torch.compile'd on its own, in place (block.compile(): the
    parameter names, hence checkpoints, are unchanged, and FSDP's per-block hooks stay outside the graphs), and the
    chunked loss / log-probs' per-chunk math (lm_head.chunk_fns). The blocks are alike, so one graph serves all:
    compile time does not grow with depth (torchtitan's way). Gradient checkpointing recomputes the compiled
    block; a KV-cache forward (sampling) runs the blocks eagerly (model.Llama.forward).
    dynamic: torch.compile's; None = a graph for the first shape, a dynamic-shape one if another comes (midtrain's
    shapes never change); True = dynamic-shape from the start (rl.py, whose micro-batches change shape every time).
    Each grad mode, train/eval mode and a 1-sequence batch (a size dynamo always specializes) is a graph of its
    own; dynamo allows 8 per function (torch._dynamo.config.recompile_limit), then runs it eagerly."""
    backend = backend or compile_backend()
    for block in model.layers:
        block.compile(backend=backend, dynamic=dynamic)
    model.compile_backend = backend


def wrap_for_training(model, parallel: str, d, train_dtype: torch.dtype, cpu_offload: bool = False,
                      compile: bool = False):
    """Model on d.device, fp32 -> (module to run forward/backward on, the model to build the optimizer from and
    save: the same object under FSDP, sharded in place). Build the optimizer after this: FSDP swaps parameters."""
    if compile:
        compile_model(model)
    if parallel == "fsdp" and d.ddp:
        shard_model(model, d.device, train_dtype, cpu_offload)
        return model, model
    if parallel == "ddp" and d.ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        dev_ids = [d.local_rank] if d.device.type == "cuda" else None
        return DDP(model, device_ids=dev_ids, gradient_as_bucket_view=True), model
    return model, model


@contextlib.contextmanager
def grad_sync(run, model, sync: bool):
    """Accumulate gradients locally unless sync (the last micro-step): DDP's no_sync, FSDP's reduce-scatter off."""
    if is_sharded(model):
        model.set_requires_gradient_sync(sync)
        yield
    elif not sync and hasattr(run, "no_sync"):
        with run.no_sync():
            yield
    else:
        yield


def sum_gradients(model) -> None:
    """FSDP averages gradients over ranks; a stage whose losses are already normalised by global counts (rl.py)
    needs their sum, as its hand-written DDP all-reduce makes."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no PREMUL_SUM)


def clip_grad_norm(params, max_norm: float) -> float:
    """Clip to max_norm (0 = off) -> the total norm before clipping (over all shards under FSDP)."""
    norm = torch.nn.utils.clip_grad_norm_(list(params), max_norm or float("inf"))
    return (norm.full_tensor() if hasattr(norm, "full_tensor") else norm).item()


def even_out(items: list, d, sharded: bool) -> list:
    """Pad a rank's list of micro-batches with None up to the longest over the ranks: under FSDP every forward
    all-gathers, so every rank must run as many (a None is a dummy forward, see dummy_pass)."""
    if not (sharded and d.ddp):
        return items
    n = all_reduce_(torch.tensor([len(items)]), d, dist.ReduceOp.MAX).item()
    return items + [None] * (int(n) - len(items))


def dummy_pass(model, backward: bool) -> None:
    """Two tokens through the model, zero gradient: joins the ranks' all-gathers / reduce-scatters. Not one: compiled
    blocks (compile_model) specialize sizes of 1, so [1, 1] would compile a graph of its own, where [1, 2] reuses a
    1-sequence micro-batch's."""
    dev = next(model.parameters()).device
    out = model(torch.zeros(1, 2, dtype=torch.long, device=dev))
    if backward:
        (out.float().sum() * 0.0).backward()


# -----------------------------------------------------------------------------------------------------------------
# full weights out of shards: for checkpoints (rank 0 writes) and for sampling (an inference copy)


def gathered_weights(model, keep: bool = True):
    """-> iterator of (HF name, full tensor) in model.hf_names order. Under FSDP every rank must drain it (each
    tensor is one all-gather); keep=False drops each right away (ranks that do not write). Unsharded: the model's
    own tensors."""
    sd = model.state_dict()
    for key, name in model_lib.hf_names(model):
        t = sd[key].detach()
        if hasattr(t, "full_tensor"):
            t = t.full_tensor()
        yield name, (t if keep else None)


def full_model(model, dtype: torch.dtype, keep: bool = True, into=None):
    """The model for sampling. Unsharded: the model itself. FSDP: a plain Llama in `dtype` gathered from the
    shards, one tensor at a time (collective: every rank calls; keep=False on ranks that do not sample returns
    None). Free it (del) before the update: it is a full copy, unless rl.py's keep_engine keeps it: `into`, a copy
    this function made before, is then refreshed in place, so its tensors keep their addresses and the decode
    engine kept on it (KV pool, CUDA graphs, Llama.decode_weights) stays valid."""
    if not is_sharded(model):
        return model
    if into is not None:
        params = dict(into.named_parameters())
        by_name = {name: params[key] for key, name in model_lib.hf_names(into)}
        with torch.no_grad():
            for name, t in gathered_weights(model):
                by_name[name].copy_(t)  # casts to the copy's dtype; bumps the version decode_weights watches
        return into
    state = {}
    dev = next(model.parameters()).device
    for name, t in gathered_weights(model, keep):
        if keep:
            state[name] = t.to(dtype)
    if not keep:
        return None
    with torch.device("meta"):
        copy = model_lib.Llama(model.config)
    copy.load_hf_state_dict(state)
    copy.inv_freq = model_lib.rope_inv_freq(model.config).to(dev)
    return copy.eval()


# -----------------------------------------------------------------------------------------------------------------
# training checkpoints: the HF folder (model.save_checkpoint) + state.pt; the optimizer state is saved gathered,
# keyed by parameter name (torch.distributed.checkpoint's full optimizer state dict), so one file format serves
# every parallel mode and world size


def optimizer_state(model, optimizer, d) -> dict | None:
    """AdamW state keyed by parameter name, full tensors on the CPU; None before the first step (nothing to keep).
    Collective under FSDP (rank 0 gets it, the others an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    sharded = is_sharded(model)
    if not optimizer.state:  # the same on every rank: steps are taken together
        return None
    if not (sharded or d.master):
        return {}
    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(optimizer, saved: dict | None, model=None) -> None:
    """Continue saved AdamW moments under this run's knobs. Loading also brings back the saved groups' betas and
    weight decay, which would silently win over changed knobs (lr is set every step anyway); the groups keep
    configure_optimizer's layout, so the decay stays on the group that has it (matrices).
    saved: keyed by parameter name (any parallel mode; model needed) or, from older checkpoints, by index."""
    if saved is None:
        return
    knobs_now = [{"betas": g["betas"], "weight_decay": g["weight_decay"]} for g in optimizer.param_groups]
    if all(isinstance(k, int) for k in saved["state"]):
        if model is not None and is_sharded(model):
            raise UserError("this checkpoint's optimizer state is keyed by index (written before parallel=fsdp "
                            "existed): resume it once with parallel=ddp, whose next checkpoint FSDP can read")
        optimizer.load_state_dict(saved)
    else:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, saved, options=StateDictOptions(full_state_dict=True))
    for group, hyper in zip(optimizer.param_groups, knobs_now):
        group.update(hyper)


def save_checkpoint(path: str, model, optimizer, tok, run_config: dict, state: dict, d, keep_last_n: int) -> None:
    """Every rank calls it. Rank 0 writes path (HF folder + tokenizer + run_config + state.pt with the optimizer
    state), moves `latest` to it and prunes; under FSDP the others join each tensor's gather. model: the one the
    optimizer was built on (unwrapped; sharded in place under FSDP)."""
    state = {**state, "optimizer": optimizer_state(model, optimizer, d)}
    tensors = gathered_weights(model, keep=d.master)
    if d.master:
        model_lib.save_checkpoint(path, model, tok, run_config, state, tensors=tensors)
        prune_checkpoints(os.path.dirname(os.path.abspath(path)), keep_last_n)
    elif is_sharded(model):
        for _ in tensors:
            pass
    barrier(d)  # nobody races ahead of a checkpoint in progress


# -----------------------------------------------------------------------------------------------------------------
# SIGINT / SIGTERM (Ctrl-C, a scheduler's preemption): the training loop finishes its step, checkpoints, prints how
# to resume and exits with 128 + the signal (130, 143), so `python midtrain.py && python rl.py` does not go on with
# an unfinished model. A second signal exits at once. Only while a loop is armed: before it (loading, data
# building) a signal acts as usual, there is nothing to save yet.

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# torchrun passes a signal it receives on to every rank, and a terminal's Ctrl-C has already reached them all (one
# process group): under torchrun a repeat within this many seconds is that same stop, not a second one
REPEAT_WINDOW_S = 2.0


def install_stop_handler(master: bool, script: str, argv: list[str]) -> SimpleNamespace:
    """Handle STOP_SIGNALS in this process until restore_stop_handler(stop). -> stop: armed (set by the loop),
    signum (the first signal seen while armed, 0 = none), the command line (for the resume hint). Outside the main
    thread (no handlers there) a no-op."""
    stop = SimpleNamespace(armed=False, signum=0, at=0.0, previous={}, script=script, argv=list(argv))
    if threading.current_thread() is not threading.main_thread():
        return stop
    window = REPEAT_WINDOW_S if "TORCHELASTIC_RUN_ID" in os.environ else 0.0

    def handler(signum, frame):
        if not stop.armed:  # as before this handler: KeyboardInterrupt for SIGINT, death for SIGTERM
            before = stop.previous.get(signum)
            if callable(before):
                return before(signum, frame)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        name = signal.Signals(signum).name
        if not stop.signum:
            stop.signum, stop.at = signum, time.monotonic()
            say(master, f"\n{name}: stopping after this step with a checkpoint (send it again to quit at once)\n")
        elif time.monotonic() - stop.at > window:
            say(master, f"\n{name} again: quitting now, without a checkpoint of this step\n")
            os._exit(128 + signum)

    # a signal the process was started ignoring (SIGINT of a background job in a script) stays ignored
    stop.previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS if signal.getsignal(s) != signal.SIG_IGN}
    return stop


def device_memory(dev: torch.device) -> tuple[float, str]:
    """-> (bytes, what they are): a GPU's total memory, or on CPU the host's physical memory (where a CPU run's
    activations live)."""
    if dev.type == "cuda":
        return float(torch.cuda.get_device_properties(dev).total_memory), torch.cuda.get_device_name(dev)
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "host memory"


def checkpointing_for(stage: str, cfg, c, d, log=None) -> bool:
    """The grad_checkpointing knob resolved: True / False as given; "auto" by memory_model.auto_checkpointing
    against this device's memory (a GPU's; on CPU the host's), its decision and numbers logged."""
    if c.grad_checkpointing != "auto":
        return bool(c.grad_checkpointing)
    mem, name = device_memory(d.device)
    on, line = memory_model.auto_checkpointing(stage, cfg, c, d.world_size, d.device.type, mem, name)
    if log is not None:
        log(line)
    return on


def keep_engine_for(cfg, c, d, checkpointing: bool, log=None) -> bool:
    """rl.py's keep_engine knob resolved: True / False as given; "auto" by memory_model.auto_keep_engine against
    this device's memory, its decision and numbers logged."""
    if c.keep_engine != "auto":
        return bool(c.keep_engine)
    mem, name = device_memory(d.device)
    keep, line = memory_model.auto_keep_engine(cfg, c, d.world_size, d.device.type, mem, checkpointing, name)
    if log is not None:
        log(line)
    return keep


def memory_table(stage: str, cfg, c, d, checkpointing: bool | None = None) -> str:
    """memory_model's per-GPU plan of this run as one table ("midtrain" or "rl" knobs c; checkpointing: the
    resolved grad_checkpointing); the stages log it on rank 0 at start. On a CPU run the capacity line is sized
    for an 80 GB GPU."""
    cuda = d.device.type == "cuda"
    gpu = device_memory(d.device)[0] if cuda else 80 * memory_model.GB
    plan = memory_model.plan_for_knobs(stage, cfg, c, d.world_size, d.device.type, gpu, checkpointing=checkpointing)
    n = memory_model.param_count(cfg)
    size = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"
    dtype = "bf16" if memory_model.uses_bf16(c.dtype, d.device.type) else "fp32"
    return memory_model.format_plan(plan, f"{size} params, {d.world_size} rank(s), {c.parallel}, {dtype}")


def restore_stop_handler(stop: SimpleNamespace) -> None:
    for s, h in stop.previous.items():
        signal.signal(s, h)
    stop.previous = {}


def say(master: bool, text: str) -> None:
    """Write from a signal handler: print() there can hit a reentrant write of the interrupted code."""
    if master:
        os.write(sys.stderr.fileno(), text.encode())


def stop_requested(stop: SimpleNamespace | None, d) -> int:
    """After each step: the signal to stop on (0 = go on), the same on every rank: the flags are all-reduced (MAX),
    so the ranks stop at the same step even when the signal reached them on either side of this check."""
    if stop is None:
        return 0
    if not d.ddp:
        return stop.signum
    return int(all_reduce_(torch.tensor([stop.signum], dtype=torch.int64), d, dist.ReduceOp.MAX).item())


def resume_command(script: str, argv: list[str], d) -> str:
    """The command that continues this run: the same one with --resume=True (torchrun's own flags are not visible
    to the script: a one-node launch is written out, a multi-node one is named)."""
    args = [a for a in argv if not a.replace("-", "_").startswith("__resume")] + ["--resume=True"]
    if d.world_size == 1:
        launch = ["python"]
    elif os.environ.get("LOCAL_WORLD_SIZE") == str(d.world_size):
        launch = ["torchrun", "--standalone", f"--nproc_per_node={d.world_size}"]
    else:
        launch = ["torchrun", "<the same launch flags>"]
    return shlex.join([*launch, script, *args])


def exit_on_stop(stop: SimpleNamespace, signum: int, step: int, ckpt: str, d, log) -> None:
    """The run has written ckpt after `step`: say so and how to resume, and exit with 128 + signum."""
    log(f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint {ckpt}. Resume with:\n"
        f"  {resume_command(stop.script, stop.argv, d)}")
    raise SystemExit(128 + signum)
