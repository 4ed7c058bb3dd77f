"""
The RL update's micro-batching, timed on the same rollouts: forward (log-probs of the response tokens) + clipped
loss + backward over every micro-batch of a step, three ways:

  fixed    micro_batch sequences per micro-batch, right-padded to the longest (rl.py with micro_batch_tokens=0)
  padded   length-sorted sequences up to micro_batch_tokens tokens, padding included (policy_update.micro_batches: what
           rl.py runs with micro_batch_tokens > 0)
  packed   length-sorted sequences up to micro_batch_tokens real tokens, concatenated into one row with no padding:
           positions restart per sequence and attention is block-diagonal causal (a boolean mask through SDPA,
           patched in here only; model.py has no packed path)

    python bench/rl_update.py                                   # CPU, a random "micro" model, 128 rollouts
    python bench/rl_update.py --device=cuda --dtype=bfloat16 --preset=llama3.2-1b --vocab_size=128256 \
        --n_seqs=128 --prompt_len=150 --max_response=1024 --micro_batch=2 --micro_batch_tokens=27648 \
        --modes=fixed,padded                      # the 1B RL preset's update on a GPU (packed: a dense N x N mask)

Rollouts are synthetic: prompts of prompt_len +- 25% tokens, response lengths uniform in [max_response / 8,
max_response] (short and long answers mixed, as in RL), advantages +-1. First every mode's loss and gradient are
checked against the fixed one; then `rounds` rounds run the modes in turn (alternating, so drift in the machine's
speed hits all alike) and the best round of each counts. tok/s counts real positions (prompt + response - 1 per
sequence), the same numerator for every mode. On CPU the seconds are the process's CPU time (time.process_time),
so a machine shared with other processes still compares the modes fairly (use --threads=1 there).
"""
from __future__ import annotations

import contextlib
import copy
import os
import sys
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpo  # noqa: E402
import model as model_lib  # noqa: E402
import policy_update  # noqa: E402
import rl  # noqa: E402
import runtime  # noqa: E402
from configurator import configure, run_cli  # noqa: E402

preset = "micro"  # model.PRESETS name
vocab_size = 1024
n_seqs = 128  # rollouts in the step
prompt_len = 60
max_response = 384
micro_batch = 8  # fixed: sequences per micro-batch
micro_batch_tokens = 4096  # padded / packed: tokens per micro-batch
modes = "fixed,padded,packed"
rounds = 3
device = "cpu"
dtype = "float32"  # "float32" | "bfloat16" (autocast, as rl.py)
grad_checkpointing = False  # recompute each block in backward (model.gradient_checkpointing)
threads = 0  # torch threads; 0 = torch's default
seed = 0


def make_rollouts(n, prompt_len, max_response, vocab, seed) -> list[policy_update.Rollout]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        p = int(prompt_len * (0.75 + 0.5 * torch.rand(1, generator=g).item()))
        r = int(torch.randint(max(1, max_response // 8), max_response + 1, (1,), generator=g).item())
        out.append(policy_update.Rollout(torch.randint(0, vocab, (p,), generator=g).tolist(),
                              torch.randint(0, vocab, (r,), generator=g).tolist(), torch.zeros(r), "", "eos", 0.0,
                              i // 8, 1.0 if i % 2 else -1.0))
    return out


def pack_flat(rollouts, dev):
    """-> idx [1, N], targets [1, N], pos [1, N], attention mask [1, 1, N, N]: the sequences one after another."""
    idx, targets, pos, seg = [], [], [], []
    for s, r in enumerate(rollouts):
        full = r.prompt_tokens + r.tokens
        n, P = len(full) - 1, len(r.prompt_tokens)
        idx += full[:-1]
        targets += [-100] * (P - 1) + r.tokens
        pos += range(n)
        seg += [s] * n
    seg = torch.tensor(seg, device=dev)
    N = len(idx)
    causal = torch.ones(N, N, dtype=torch.bool, device=dev).tril()
    mask = (causal & (seg[:, None] == seg[None, :]))[None, None]  # [1, 1, N, N] block-diagonal causal
    as_row = lambda v: torch.tensor(v, device=dev)[None]  # noqa: E731
    return as_row(idx), as_row(targets), as_row(pos), mask


@contextlib.contextmanager
def attention_mask(mask):
    """Every SDPA call in the model uses `mask` instead of is_causal (the packed mode's block-diagonal mask)."""
    sdpa = F.scaled_dot_product_attention

    def masked(q, k, v, attn_mask=None, is_causal=False, **kw):
        return sdpa(q, k, v, attn_mask=mask, **kw)

    F.scaled_dot_product_attention = masked
    try:
        yield
    finally:
        F.scaled_dot_product_attention = sdpa


def fwd_bwd(net, rollouts, micro, packed: bool, c, counts, autocast, dev) -> float:
    """One micro-batch: log-probs, GRPO's per-token loss on the global counts, backward -> its loss."""
    rs = [rollouts[i] for i in micro]
    idx, targets = policy_update.pack(rs, dev)  # the padded layout: where the loss is computed in every mode
    if packed:
        f_idx, f_tgt, f_pos, mask = pack_flat(rs, dev)
        ctx = attention_mask(mask)  # through backward too: checkpointing recomputes the blocks there
    else:
        ctx = contextlib.nullcontext()
    with ctx:
        if packed:
            with autocast():
                f_logp, _ = net(f_idx, targets=f_tgt, pos=f_pos, logprobs=True, temperature=1.0,
                                chunk_size=c.logits_chunk)
            resp = targets != -100
            logp = torch.zeros(resp.shape, device=dev).masked_scatter(resp, f_logp[f_tgt != -100])  # -> [B, L]
        else:
            logp, _, resp = policy_update.response_logprobs(net, idx, targets, 1.0, autocast=autocast,
                                                 chunk_size=c.logits_chunk)
        adv = torch.tensor([r.advantage for r in rs], device=dev)
        tl = grpo.token_loss(logp, logp.detach(), adv, resp, c)
        loss = grpo.aggregate(tl.loss, resp, c.loss_agg, n_tokens=counts[0], n_seqs=counts[1])
        loss.backward()
    return loss.item()


def split(rollouts, mode: str, c) -> list[list[int]]:
    seq_len = lambda i: len(rollouts[i].prompt_tokens) + len(rollouts[i].tokens) - 1  # noqa: E731
    ids = sorted(range(len(rollouts)), key=seq_len)
    if mode == "fixed":
        return policy_update.micro_batches(ids, seq_len, c.micro_batch)
    if mode == "padded":
        return policy_update.micro_batches(ids, seq_len, c.micro_batch, c.micro_batch_tokens)
    out: list[list[int]] = []  # packed: real tokens up to the budget
    for i in ids:
        if out and sum(map(seq_len, out[-1])) + seq_len(i) <= c.micro_batch_tokens:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def step(net, rollouts, mode, c, autocast, dev) -> tuple[float, float, int]:
    """-> (loss, seconds, micro-batches); gradients left in net. Seconds: wall clock on a GPU; on CPU this
    process's CPU time (all its threads), which other processes on a shared machine do not inflate."""
    counts = (sum(len(r.tokens) for r in rollouts), len(rollouts))
    micros = split(rollouts, mode, c)
    clock = time.perf_counter if dev.type == "cuda" else time.process_time
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = clock()
    loss = sum(fwd_bwd(net, rollouts, m, mode == "packed", c, counts, autocast, dev) for m in micros)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return loss, clock() - t0, len(micros)


def main(argv=None):
    c = SimpleNamespace(**configure(globals(), argv))
    if c.threads:
        torch.set_num_threads(c.threads)
    dev = torch.device(c.device)
    _, autocast = runtime.autocast_for(c.dtype, dev)
    c = SimpleNamespace(**{**copy.deepcopy(rl.DEFAULTS), "kl_coef": 0.0, **vars(c)})
    over = {"vocab_size": c.vocab_size, "max_seq_len": max(2 * (c.prompt_len + c.max_response), 256)}
    cfg = model_lib.LlamaConfig.from_preset(c.preset, **over)
    torch.manual_seed(c.seed)
    net = model_lib.Llama(cfg).to(dev).train()
    net.gradient_checkpointing = c.grad_checkpointing
    rollouts = make_rollouts(c.n_seqs, c.prompt_len, c.max_response, c.vocab_size, c.seed)
    positions = sum(len(r.prompt_tokens) + len(r.tokens) - 1 for r in rollouts)
    names = c.modes.split(",")

    grads, losses = {}, {}
    for mode in names:  # the same loss and gradient whichever way the step is cut
        losses[mode] = step(net, rollouts, mode, c, autocast, dev)[0]
        grads[mode] = torch.cat([p.grad.flatten().float() for p in net.parameters()])
        net.zero_grad(set_to_none=True)
    ref = names[0]
    for mode in names[1:]:
        err = (grads[mode] - grads[ref]).abs().max().item() / grads[ref].abs().max().item()
        print(f"{mode} vs {ref}: loss {losses[mode]:.6f} vs {losses[ref]:.6f}, max |grad diff| / max |grad| "
              f"{err:.1e}")

    best = {m: float("inf") for m in names}
    n_micro = {}
    for _ in range(c.rounds):
        for mode in names:
            _, dt, n_micro[mode] = step(net, rollouts, mode, c, autocast, dev)
            net.zero_grad(set_to_none=True)
            best[mode] = min(best[mode], dt)
    padded = {m: sum(max(len(rollouts[i].prompt_tokens) + len(rollouts[i].tokens) - 1 for i in mb) * len(mb)
                     for mb in split(rollouts, m, c)) for m in names if m != "packed"}
    print(f"\n{c.preset}: {net.num_params() / 1e6:.2f}M params, {c.n_seqs} rollouts, {positions:,} positions "
          f"(prompts ~{c.prompt_len}, responses {max(1, c.max_response // 8)}-{c.max_response}), {c.dtype} on "
          f"{dev}, {torch.get_num_threads()} threads, checkpointing {'on' if c.grad_checkpointing else 'off'}; best "
          f"of {c.rounds} alternating rounds"
          + ("" if dev.type == "cuda" else ", CPU seconds"))
    for mode in names:
        what = (f"micro_batch {c.micro_batch}" if mode == "fixed" else f"micro_batch_tokens {c.micro_batch_tokens}")
        pad = f"{padded[mode] / positions - 1:6.1%} padding" if mode in padded else "  no padding"
        print(f"  {mode:<7} {what:<25} {n_micro[mode]:4d} micro-batches  {pad}  {best[mode]:8.3f} s  "
              f"{positions / best[mode]:10,.0f} tok/s")
    return best


if __name__ == "__main__":
    run_cli(main)
