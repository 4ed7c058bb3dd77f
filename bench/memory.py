"""
Peak memory and time of the two vocabulary-sized steps, with the whole logits at once (logits_chunk=0, the previous
path) vs a chunk of tokens at a time (lm_head.chunked_logprobs), at shapes that keep Llama 3's real vocabulary and long
sequences but shrink the rest of the model so a CPU runs them:

    python bench/memory.py                       # 2 layers, d=256, V=128,256; 2 x 1,024 response tokens
    python bench/memory.py --response_len=4096   # longer responses: the old path's memory grows with them, not the new
    python bench/memory.py --plan=config/rl_octothinker_3b.py   # no measurement: memory_model's per-GPU plan of a
                                                                # preset (--world_size=8 --gpu_gb=80 by default)

  rl:       one policy_update.update_policy (forward, log-probs + entropy of the response tokens, clipped loss, backward,
            AdamW step) on `n_seqs` rollouts of prompt_len + response_len tokens, one micro-batch;
  midtrain: one forward + backward of the mean cross-entropy over n_seqs x (prompt_len + response_len) tokens.

Each measurement runs in a fresh process: the model and optimizer state are built first, then the kernel's peak-RSS
counter is reset (/proc/self/clear_refs) and the step runs; "peak" is the step's high-water mark over the resident
memory it started from (what the step itself needs), "process" the whole process's high-water mark, "model" what
memory_model predicts for the step's process (weights, optimizer state, gradients, activations, logits) next to
the process's measured high-water mark above its RSS right after the imports.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import memory_model  # noqa: E402
import model as model_lib  # noqa: E402
import policy_update  # noqa: E402
import rl  # noqa: E402
from configurator import UserError, configure, run_cli  # noqa: E402

vocab_size = 128256  # Llama 3's
dim = 256
n_layers = 2
n_seqs = 2  # sequences in the micro-batch
prompt_len = 64
response_len = 1024  # tokens per sequence that go through the vocabulary (the RL targets)
chunk = rl.DEFAULTS["logits_chunk"]  # tokens per chunk of the new path (the scripts' default)
cases = "rl,midtrain"
threads = 0  # torch threads per measurement; 0 = torch's default
plan = ""  # a config file (a preset): print memory_model's per-GPU plan of its run instead of measuring
world_size = 8  # --plan: GPUs of the run
gpu_gb = 80.0  # --plan: memory of one GPU
measure = ""  # internal: "<case>:<chunk>" runs that one measurement in this process and prints it as JSON


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (this benchmark reads Linux's memory counters)")


def reset_peak() -> int:
    """Reset the process's peak-RSS counter to its current RSS (Linux >= 4.0); returns that RSS in kB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss_kb("VmRSS")


def build_config(c) -> model_lib.LlamaConfig:
    return model_lib.LlamaConfig.from_preset("test", vocab_size=c["vocab_size"], dim=c["dim"], n_layers=c["n_layers"],
                                             n_heads=4, n_kv_heads=2, ffn_dim=3 * c["dim"],
                                             max_seq_len=c["prompt_len"] + c["response_len"])


def build(c) -> model_lib.Llama:
    torch.manual_seed(0)
    return model_lib.Llama(build_config(c)).train()


def rl_step(c, net, chunk_size: int):
    """-> a function running one RL update on random rollouts (half the advantages +1, half -1)."""
    g = torch.Generator().manual_seed(1)
    V = c["vocab_size"]
    rollouts = [policy_update.Rollout(torch.randint(0, V, (c["prompt_len"],), generator=g).tolist(),
                           torch.randint(0, V, (c["response_len"],), generator=g).tolist(),
                           torch.zeros(c["response_len"]), "", "length", 0.0, i, 1.0 if i % 2 else -1.0)
                for i in range(c["n_seqs"])]
    knobs = SimpleNamespace(**{**rl.DEFAULTS, "micro_batch": c["n_seqs"], "logits_chunk": chunk_size})
    solo = SimpleNamespace(ddp=False, rank=0, world_size=1)
    opt = net.configure_optimizer(knobs.lr, knobs.weight_decay, (knobs.beta1, knobs.beta2))
    for p in net.parameters():  # a zero-gradient step makes AdamW's moments (weight decay is 0: nothing moves), so
        p.grad = torch.zeros_like(p)  # the measured step is like every step of a run but its first
    opt.step()
    opt.zero_grad(set_to_none=True)
    return lambda: policy_update.update_policy(net, opt, rollouts, knobs, solo, loss_max_len=c["response_len"])


def midtrain_step(c, net, chunk_size: int):
    g = torch.Generator().manual_seed(1)
    shape = (c["n_seqs"], c["prompt_len"] + c["response_len"])
    x, y = (torch.randint(0, c["vocab_size"], shape, generator=g) for _ in range(2))

    def step():
        _, loss = net(x, targets=y, chunk_size=chunk_size)
        loss.backward()
        net.zero_grad(set_to_none=True)
    return step


def measure_one(c) -> dict:
    case, chunk_size = c["measure"].split(":")
    imports_kb = rss_kb("VmRSS")
    net = build(c)
    step = {"rl": rl_step, "midtrain": midtrain_step}[case](c, net, int(chunk_size))
    base = reset_peak()
    t0 = time.perf_counter()
    step()
    seconds = time.perf_counter() - t0
    return {"case": case, "chunk": int(chunk_size), "peak_mb": (rss_kb("VmHWM") - base) / 1024,
            "process_mb": rss_kb("VmHWM") / 1024, "above_imports_mb": (rss_kb("VmHWM") - imports_kb) / 1024,
            "seconds": seconds}


def predicted_mb(case: str, chunk_size: int, c) -> float:
    """memory_model's bytes for one measurement's process (no rollout phase: the benchmark runs the update only),
    in MiB. The midtrain case builds no optimizer."""
    cfg = build_config(c)
    common = dict(bf16=False, checkpointing=False, logits_chunk=chunk_size)
    if case == "rl":
        plan = memory_model.rl_plan(cfg, micro_batch=c["n_seqs"], prompt_len=c["prompt_len"],
                                    response_len=c["response_len"], rollout_rows=0, **common)
    else:
        plan = memory_model.midtrain_plan(cfg, micro_batch=c["n_seqs"], seq_len=c["prompt_len"] + c["response_len"],
                                          optimizer="none", **common)
    return plan.total("update") / 2**20


def start_measurement(case: str, chunk_size: int, c) -> subprocess.Popen:
    """One measurement in a fresh process (so neither path inherits the other's heap); finish() collects it."""
    argv = [sys.executable, os.path.abspath(__file__), f"--measure={case}:{chunk_size}"]
    argv += [f"--{k}={c[k]}" for k in ("vocab_size", "dim", "n_layers", "n_seqs", "prompt_len", "response_len",
                                       "threads")]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"measurement {proc.args[2]} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def run_measurement(case: str, chunk_size: int, c) -> dict:
    return finish(start_measurement(case, chunk_size, c))


def compare(c) -> list[dict]:
    """-> for each case: old (logits_chunk=0) and new (logits_chunk=chunk) measurements."""
    rows = []
    for case in c["cases"].split(","):
        if case not in ("rl", "midtrain"):
            raise ValueError(f"cases: unknown case {case!r}; expected a comma-separated subset of rl,midtrain")
        rows.append({"case": case, "old": run_measurement(case, 0, c), "new": run_measurement(case, c["chunk"], c)})
    return rows


def fmt_budget(tokens: int) -> str:
    return "any" if tokens >= 1 << 23 else f"{tokens:,}"  # a whole mini-batch fits at once


def preset_plan(path: str, world: int, gpu_gb: float, overrides=()) -> memory_model.Plan:
    """memory_model's plan of the run a config file describes (rl.py's knobs when its name starts with "rl", else
    midtrain.py's), on `world` GPUs of gpu_gb; the model from init_from (decay_init_from for a decay stage)."""
    import midtrain
    stage = "rl" if os.path.basename(path).startswith("rl") else "midtrain"
    ns = copy.deepcopy(rl.DEFAULTS if stage == "rl" else midtrain.DEFAULTS)
    if stage == "rl":
        ns["max_response_len"] = None  # as rl.main: an int or a {from_step: tokens} schedule
    k = SimpleNamespace(**configure(ns, [path, *overrides], verbose=False))
    if stage == "rl" and k.max_response_len is None:
        k.max_response_len = rl.DEFAULTS["max_response_len"]
    start = k.decay_init_from if stage == "midtrain" and k.stage == "decay" and k.decay_init_from else k.init_from
    cfg = memory_model.model_config_for(start)
    if cfg is None and stage == "rl" and start == rl.DEFAULTS["init_from"] and not os.path.isdir(start):
        # the built-in run's mid-trained model, before midtrain.py has written it: its scratch preset and BPE
        cfg = memory_model.model_config_for(midtrain.DEFAULTS["init_from"])
        cfg.vocab_size = midtrain.DEFAULTS["synth_vocab_size"]
    if cfg is None:
        raise UserError(f"{path}: cannot tell the model of {start!r} (no config.json there, no 1b / 3b in its name)")
    if stage == "rl":  # where the presets' micro_batch_tokens comes from
        print(f"largest micro_batch_tokens on a {gpu_gb:g} GB GPU: " + ", ".join(
            f"{fmt_budget(memory_model.largest_micro_batch_tokens(cfg, k, world, gpu_gb * memory_model.GB, ck))} {what}"
            for ck, what in ((False, "without checkpointing"), (True, "with it"))) +
            f" (this run: {k.micro_batch_tokens:,})")
    if k.grad_checkpointing == "auto":  # the decision the run makes at start on such a GPU
        print(memory_model.auto_checkpointing(stage, cfg, k, world, "cuda", gpu_gb * memory_model.GB,
                                              "the planned GPU")[1])
    plan = memory_model.plan_for_knobs(stage, cfg, k, world, "cuda", gpu_gb * memory_model.GB)
    print(memory_model.format_plan(plan, f"{os.path.basename(path)}: {stage}, "
                                         f"{memory_model.param_count(cfg) / 1e9:.2f}B params, {world} GPUs, "
                                         f"parallel={k.parallel}"))
    return plan


def main(argv=None):
    c = configure(globals(), argv)
    if c["plan"]:
        return preset_plan(c["plan"], c["world_size"], c["gpu_gb"])
    if c["threads"]:
        torch.set_num_threads(c["threads"])
    if c["measure"]:
        print(json.dumps(measure_one(c)))
        return None
    if not (isinstance(c["chunk"], int) and c["chunk"] > 0):
        raise ValueError(f"chunk must be a positive int (tokens per chunk of the new path), got {c['chunk']!r}")
    tokens = c["n_seqs"] * c["response_len"]
    print(f"{c['n_layers']} layers, d={c['dim']}, vocab {c['vocab_size']:,}; {c['n_seqs']} sequences x "
          f"({c['prompt_len']} prompt + {c['response_len']} response) tokens; new path: {c['chunk']} tokens a chunk; "
          f"fp32 logits of {tokens:,} tokens = {tokens * c['vocab_size'] * 4 / 2**20:,.0f} MiB")
    print(f"{'case':<10} {'path':<18} {'peak MiB':>9} {'process MiB':>12} {'seconds':>8}")
    rows = compare(c)
    for r in rows:
        for path, label in (("old", "all logits"), ("new", f"chunks of {c['chunk']}")):
            m = r[path]
            print(f"{r['case']:<10} {label:<18} {m['peak_mb']:9,.0f} {m['process_mb']:12,.0f} {m['seconds']:8.2f}")
        print(f"{r['case']:<10} {'old / new':<18} {r['old']['peak_mb'] / r['new']['peak_mb']:8.1f}x "
              f"{r['old']['process_mb'] / r['new']['process_mb']:11.1f}x "
              f"{r['old']['seconds'] / r['new']['seconds']:7.2f}x")
    return rows


if __name__ == "__main__":
    run_cli(main)
