"""
What the two training stages (midtrain.py, rl.py) run on, in one place: the distributed setup (torchrun's env),
precision (autocast), the cross-rank reductions, the progress bar, and the training checkpoints (the HF folder of
model.py plus state.pt: optimizer, RNG, data position), with `latest`, pruning and the metrics log's trim on resume.

The stages import this module, model, data, sample and the grader; never each other.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import random
import re
import shutil
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import model as model_lib
from data.files import remove_stale_temp_dirs, write_atomic

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
# MFU: achieved FLOPs over the device's peak. GPUs: datasheet bf16 dense peaks; elsewhere a matmul measured at start

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
def peak_flops(dev: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """-> (FLOP/s per device, where the number comes from)."""
    if dev.type == "cuda" and dtype == torch.bfloat16:
        name = torch.cuda.get_device_name(dev)
        for key, flops in PEAK_FLOPS_BF16:
            if key in name:
                return flops, f"{name} bf16 datasheet"
    flops = measure_peak_flops(dev, dtype)
    return flops, f"measured {str(dtype).removeprefix('torch.')} matmul on {dev.type}"


# -----------------------------------------------------------------------------------------------------------------
# RNG and optimizer state


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


def load_optimizer_state(optimizer, saved: dict) -> None:
    """Continue saved AdamW moments under this run's knobs. load_state_dict also brings back the saved groups'
    betas and weight decay, which would silently win over changed knobs (lr is set every step anyway); the groups
    keep configure_optimizer's layout, so the decay stays on the group that has it (matrices)."""
    knobs_now = [{"betas": g["betas"], "weight_decay": g["weight_decay"]} for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, hyper in zip(optimizer.param_groups, knobs_now):
        group.update(hyper)


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
    """On resume, drop records written after the checkpoint (by the interrupted run), so the log stays one story."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= last_step]
    write_atomic(path, "".join(rows))
