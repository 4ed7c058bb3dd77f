"""
Training-step speed: our Llama vs Hugging Face transformers' LlamaForCausalLM, same shapes, dtype, batch and weights,
in one run on this machine; plus MFU against the matmul peak measured in the same run.

    python bench/train.py [--preset=nano] [--seq_len=256] [--micro_batch=16] [--steps=8] [--rounds=3]

A step is what midtrain.py does per micro-batch without accumulation: forward, mean cross-entropy (computed the same
way for both: fp32 logits, every position), backward, grad-norm clipping to 1.0, AdamW step (weight decay on
matrices only), zero_grad. Both models train from the same weights on the same batch; their first losses must agree.
Timing: warm-up steps, then `rounds` alternating rounds of `steps` steps per model (so drift in the machine's speed
hits both alike); the best round counts. FLOPs per token come from model.flops_per_token (6 x matmul weights + the
attention scores, PaLM's count), the peak from runtime.peak_flops (bf16 datasheet on known GPUs, else a matmul
measured here); on a GPU with a datasheet entry a second MFU column is against the matmul peak measured here
(runtime.matmul_peak_flops).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import runtime  # noqa: E402
from configurator import UserError, configure, run_cli  # noqa: E402
from model import Llama, LlamaConfig  # noqa: E402

preset = "nano"  # model.PRESETS name
vocab_size = 1024  # the built-in tokenizer's size (the presets' own vocab for llama3.2-*)
seq_len = 256
micro_batch = 16
steps = 8  # timed steps per round and model
rounds = 3
warmup = 2  # untimed steps per model first
device = "cpu"
dtype = "float32"  # "float32" | "bfloat16" (autocast, as midtrain.py)
compile = False  # torch.compile both models
seed = 0


def make_optimizer(model, lr=1e-4, weight_decay=0.1, device_type="cpu"):
    """The same two AdamW groups as Llama.configure_optimizer: decay matrices, not gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=device_type == "cuda")


def train_step(logits_fn, params, optimizer, x, y, autocast) -> float:
    with autocast():
        logits = logits_fn(x)  # [B, T, V]
    loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()  # a sync point, as midtrain's logging is


def timed_round(fn, n: int, dev: torch.device) -> float:
    """Seconds per step over n steps."""
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def main(argv=None):
    c = configure(globals(), argv)
    from bench.hf_peer import load_llama

    dev = torch.device(c["device"])
    train_dtype, autocast = runtime.autocast_for(c["dtype"], dev)
    torch.manual_seed(c["seed"])
    overrides = {"vocab_size": c["vocab_size"]} if not c["preset"].startswith("llama") else {}
    cfg = LlamaConfig.from_preset(c["preset"], **overrides)
    if c["seq_len"] > cfg.max_seq_len:
        raise UserError(f"seq_len={c['seq_len']} exceeds preset {c['preset']!r}'s max_seq_len={cfg.max_seq_len}")
    ours = Llama(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp)  # the same weights for both, through the HF format
        hf = load_llama(tmp, attn_implementation="sdpa")
    ours.to(dev).train()
    hf.to(dev).train()
    x = torch.randint(0, cfg.vocab_size, (c["micro_batch"], c["seq_len"]), device=dev)
    y = torch.randint(0, cfg.vocab_size, (c["micro_batch"], c["seq_len"]), device=dev)

    ours_fn = torch.compile(ours) if c["compile"] else ours
    hf_fn = torch.compile(hf) if c["compile"] else hf
    sides = {
        "nanoOcto": (lambda t: ours_fn(t), list(ours.parameters()), make_optimizer(ours, device_type=dev.type)),
        "transformers": (lambda t: hf_fn(input_ids=t).logits, list(hf.parameters()),
                         make_optimizer(hf, device_type=dev.type)),
    }
    first = {name: train_step(fn, p, opt, x, y, autocast) for name, (fn, p, opt) in sides.items()}
    if abs(first["nanoOcto"] - first["transformers"]) > 1e-3:
        raise RuntimeError(f"the two models disagree on the first loss: {first} (not the same weights?)")
    for name, (fn, p, opt) in sides.items():
        for _ in range(c["warmup"]):
            train_step(fn, p, opt, x, y, autocast)

    peak, source = runtime.peak_flops(dev, train_dtype)
    best = {name: float("inf") for name in sides}
    for _ in range(c["rounds"]):
        for name, (fn, p, opt) in sides.items():
            best[name] = min(best[name], timed_round(lambda: train_step(fn, p, opt, x, y, autocast), c["steps"], dev))

    tokens = c["micro_batch"] * c["seq_len"]
    flops_per_token = ours.flops_per_token(c["seq_len"])
    print(f"\n{c['preset']}: {ours.num_params() / 1e6:.2f}M params, batch {c['micro_batch']} x {c['seq_len']}, "
          f"{str(train_dtype).removeprefix('torch.')} on {dev}, {torch.get_num_threads()} threads, "
          f"{flops_per_token / 1e6:.2f} MFLOP/token (fwd+bwd)")
    print(f"first loss: nanoOcto {first['nanoOcto']:.6f}  transformers {first['transformers']:.6f}")
    matmul = runtime.matmul_peak_flops(dev, train_dtype)  # the same number as peak without a datasheet entry
    print(f"peak: {peak / 1e9:.1f} GFLOP/s ({source})" + (f"; measured matmul peak {matmul / 1e9:.1f} GFLOP/s"
                                                          if matmul != peak else ""))
    print(f"{'':>14} {'ms/step':>9} {'tok/s':>10} {'GFLOP/s':>9} {'MFU':>7}" + (f" {'matmul':>7}" if matmul != peak
                                                                             else ""))
    for name in sides:
        tok_s = tokens / best[name]
        print(f"{name:>14} {best[name] * 1e3:9.1f} {tok_s:10,.0f} {tok_s * flops_per_token / 1e9:9.1f} "
              f"{tok_s * flops_per_token / peak:7.1%}" + (f" {tok_s * flops_per_token / matmul:7.1%}"
                                                          if matmul != peak else ""))
    print(f"nanoOcto / transformers speed: {best['transformers'] / best['nanoOcto']:.2f}x")
    return best


if __name__ == "__main__":
    run_cli(main)
