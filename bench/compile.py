"""
compile=True's warm-up and step time: the whole model under one torch.compile (what compile=True did before issue
25) vs each block compiled on its own plus lm_head's chunk functions (runtime.compile_model, what it does now), and
eager for reference, on midtrain.py's training step.

    python bench/compile.py                          # the built-in nano model at midtrain's defaults, CPU, inductor
    python bench/compile.py --n_layers=16            # deeper: the whole-model graph grows, the block's does not
    python bench/compile.py --device=cuda --dtype=bfloat16 --preset=llama3.2-1b --vocab_size=128256 \
        --seq_len=8192 --micro_batch=2 --grad_checkpointing=True     # the 1B mid-training preset's step

A step: forward with the chunked cross-entropy (logits_chunk), backward, AdamW step, zero_grad. Each mode runs in a
fresh process with an empty inductor cache (TORCHINDUCTOR_CACHE_DIR), so every run pays the whole compile, as a
new training run does; the modes alternate over `rounds` (drift in the machine's speed hits all alike). Reported:
the first step (the warm-up: tracing, AOT autograd, inductor's codegen and C++/Triton builds) and the median of the
later steps, each in wall seconds and in CPU seconds (this process and the compilers it ran: inductor compiles in
the process here, TORCHINDUCTOR_COMPILE_THREADS=1, so its gcc runs are children it waits for; on a machine shared
with other jobs the CPU seconds compare the modes, the wall seconds swing with the others' load), and the first
loss, which must agree between the modes.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import runtime  # noqa: E402
from configurator import UserError, configure, run_cli  # noqa: E402
from model import Llama, LlamaConfig  # noqa: E402

preset = "nano"  # model.PRESETS name
n_layers = 0  # 0 = the preset's
vocab_size = 1024  # the built-in tokenizer's size (the presets' own vocab for llama3.2-*)
seq_len = 256
micro_batch = 16
logits_chunk = 256
grad_checkpointing = False
steps = 6  # per run: the first is the warm-up, the median of steps 3.. is the step time
rounds = 2  # runs per mode, alternating
modes = "whole,blocks,eager"  # whole = torch.compile(model); blocks = runtime.compile_model; eager
device = "cpu"
dtype = "float32"  # "float32" | "bfloat16" (autocast, as midtrain.py)
seed = 0
worker = ""  # internal: run one mode in this process and print its JSON line


def run_one(c) -> dict:
    """One mode's training steps in this process -> {"first": s, "step": s, "loss": first loss}."""
    dev = torch.device(c.device)
    torch.manual_seed(c.seed)
    over = {"vocab_size": c.vocab_size, **({"n_layers": c.n_layers} if c.n_layers else {})}
    model = Llama(LlamaConfig.from_preset(c.preset, **over)).to(dev)
    model.gradient_checkpointing = c.grad_checkpointing
    fwd = model
    if c.worker == "whole":
        fwd = torch.compile(model)
    elif c.worker == "blocks":
        runtime.compile_model(model)
    opt = model.configure_optimizer(1e-4, 0.1, device_type=dev.type)
    _, autocast = runtime.autocast_for(c.dtype, dev)
    g = torch.Generator().manual_seed(c.seed)
    x, y = (torch.randint(0, c.vocab_size, (c.micro_batch, c.seq_len), generator=g).to(dev) for _ in range(2))
    times, cpu, first_loss = [], [], None
    for _ in range(c.steps):
        t0, c0 = time.perf_counter(), cpu_seconds()
        with autocast():
            _, loss = fwd(x, targets=y, chunk_size=c.logits_chunk)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu.append(cpu_seconds() - c0)
        first_loss = loss.item() if first_loss is None else first_loss
    return {"first": times[0], "step": statistics.median(times[2:]), "first_cpu": cpu[0],
            "step_cpu": statistics.median(cpu[2:]), "loss": first_loss}


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    c = SimpleNamespace(**configure(globals(), argv, verbose=False))
    if c.worker:
        print(json.dumps(run_one(c)), flush=True)
        return
    names = [m for m in c.modes.split(",") if m]
    if not names or set(names) - {"whole", "blocks", "eager"} or c.steps < 3:
        raise UserError(f"--modes={c.modes!r}: a comma-separated subset of whole,blocks,eager (and --steps >= 3)")
    results = {m: [] for m in names}
    for r in range(c.rounds):
        for m in names:
            with tempfile.TemporaryDirectory() as cache:
                env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TORCHINDUCTOR_COMPILE_THREADS": "1"}
                proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, f"--worker={m}"], env=env,
                                      capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{m}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results[m].append(res)
            print(f"round {r + 1} {m:>6}: first step {res['first']:7.2f} s ({res['first_cpu']:7.2f} CPU s), then "
                  f"{1e3 * res['step']:8.1f} ms/step ({1e3 * res['step_cpu']:8.1f} CPU ms), first loss "
                  f"{res['loss']:.6f}", flush=True)
    print(f"\n{c.preset} ({c.n_layers or 'preset'} layers), {c.micro_batch} x {c.seq_len} tokens, {c.device} "
          f"{c.dtype}, grad_checkpointing={c.grad_checkpointing}; median over {c.rounds} fresh-cache runs per mode")
    print(f"{'mode':>8} {'first step s':>13} {'(CPU s)':>9} {'step ms':>9} {'(CPU ms)':>9}")
    for m, rs in results.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"{m:>8} {med['first']:13.2f} {med['first_cpu']:9.2f} {1e3 * med['step']:9.1f} "
              f"{1e3 * med['step_cpu']:9.1f}")


if __name__ == "__main__":
    run_cli(main)
