"""
The RL policy update (rl.py's steps 4-5): a step's rollouts packed into right-padded rows, the response tokens'
log-probs by the training forward, length-sorted micro-batches, and update_policy: ppo_epochs x mini_batches
optimizer steps on grpo.py's clipped surrogate (with the k3 KL to a reference), gradients summed over DDP ranks by
hand or by FSDP's reduce-scatter, with every loss normalised by global counts so that N ranks make the update one
process holding all the rollouts would.

    rollouts = [Rollout(prompt_tokens, tokens, logprobs, text, finish_reason, reward, group, advantage), ...]
    stats = update_policy(model, optimizer, rollouts, c, d, ref_model)   # c: rl.py's knobs, d: runtime.distributed
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

import grpo
from runtime import all_reduce_, clip_grad_norm, dummy_pass, even_out, is_sharded


@dataclass
class Rollout:
    """One sampled response, graded: what the update trains on."""
    prompt_tokens: list[int]
    tokens: list[int]  # the response as sampled (EOS / stop-string tokens included): what the policy is trained on
    logprobs: torch.Tensor  # [len(tokens)] fp32, the sampler's, under softmax(logits / temperature)
    text: str
    finish_reason: str  # "eos" | "stop" | "length"
    reward: float
    group: int  # index of its prompt within this rank's step
    advantage: float = 0.0


# -----------------------------------------------------------------------------------------------------------------
# the training forward: prompt + response, right-padded, log-probs of the response tokens


def pack(rollouts: list[Rollout], device) -> tuple[torch.Tensor, torch.Tensor]:
    """-> idx [B, L], targets [B, L] (-100 outside the response). Sequences are right-padded, so every row's
    positions are 0.. and plain causal attention needs no mask (padding only comes after a row's real tokens).
    Input position t predicts token t + 1, so a response token k (after P prompt tokens) is a target at P - 1 + k."""
    L = max(len(r.prompt_tokens) + len(r.tokens) for r in rollouts) - 1
    idx = torch.zeros(len(rollouts), L, dtype=torch.long)
    targets = torch.full((len(rollouts), L), -100, dtype=torch.long)
    for b, r in enumerate(rollouts):
        full = r.prompt_tokens + r.tokens
        P = len(r.prompt_tokens)
        idx[b, :len(full) - 1] = torch.tensor(full[:-1])
        targets[b, P - 1:len(full) - 1] = torch.tensor(r.tokens)
    return idx.to(device), targets.to(device)


def response_logprobs(model, idx, targets, temperature: float, need_entropy: bool = False, autocast=None,
                      entropy_grad: bool = False, vocab_size: int | None = None, chunk_size: int = 256):
    """-> (logp [B, L] fp32, entropy [B, L] or None, mask [B, L]). Only the response positions go through the
    vocabulary-sized softmax (prompt and padding positions are dropped first), at the sampling temperature,
    chunk_size tokens at a time (0: all at once). The entropy carries a gradient only with entropy_grad (the
    bonus); otherwise it is for logging. vocab_size: the tokenizer's; logit rows past it (a padded embedding) are
    left out of the softmax, as the sampler leaves them out, so both normalise over the same ids.
    All of it runs inside model's forward, so a DDP/FSDP wrapper's hooks see the lm_head weight."""
    with (autocast or contextlib.nullcontext)():
        logp, entropy = model(idx, targets=targets, logprobs=True, temperature=temperature, vocab_size=vocab_size,
                              need_entropy=need_entropy, entropy_grad=entropy_grad, chunk_size=chunk_size)
    return logp, entropy, targets != -100


def per_token(rollouts: list[Rollout], values: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence 1-D tensors [len(tokens)] -> [B, L] laid on the response mask (row-major = response order)."""
    return torch.zeros(mask.shape, device=mask.device).masked_scatter(mask, torch.cat(values).to(mask.device))


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def micro_batches(ids: list[int], seq_len: Callable[[int], int], micro_batch: int, budget: int = 0) -> list[list]:
    """Sequence ids sorted by length (shortest first) -> micro-batches: micro_batch at a time, or with a token
    budget > 0 as many as fit it padded to their longest (the newest one, in this order); a sequence longer than the
    budget goes alone. The losses are normalised by global counts, so any split gives the same gradient."""
    if budget <= 0:
        return chunks(ids, micro_batch)
    out: list[list[int]] = []
    for i in ids:
        if out and (len(out[-1]) + 1) * seq_len(i) <= budget:
            out[-1].append(i)
        else:
            out.append([i])
    return out


# -----------------------------------------------------------------------------------------------------------------
# the policy update over one step's rollouts


def update_policy(model, optimizer, rollouts: list[Rollout], c, d, ref_model=None, loss_max_len: int = 0,
                  seed: int = 0, autocast=None, vocab_size: int | None = None, at_ref: bool = False) -> dict:
    """ppo_epochs x mini_batches optimizer steps on this rank's rollouts (advantages set); -> global stats.

    Gradients are accumulated locally over micro-batches and summed over ranks by hand (all_reduce per parameter):
    each micro-batch loss is already divided by the global token / sequence count of its mini-batch, so the sum
    is the mini-batch loss of all ranks' rollouts together. When entropy_coef is 0 and either kl_coef is 0 or the
    policy still has its reference's weights (at_ref: no optimizer step since the start), a sequence with advantage 0
    (a uniform group) has exactly zero gradient (the k3 KL's is 1 - exp(ref - logp) = 0): it is not run through the
    model at all, but still counts in the normalisers, so the update is the same as with it. A step of uniform
    groups only then costs no forward and makes no optimizer step."""
    dev = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    n_updates = c.ppo_epochs * c.mini_batches
    # FSDP: every forward all-gathers, so ranks pad their micro-batch lists to the same length with dummy passes,
    # and gradients are summed in backward (runtime.sum_gradients) instead of by the all-reduce below
    sharded = is_sharded(model)
    exact_zero = c.entropy_coef == 0 and (c.kl_coef == 0 or ref_model is None or at_ref)
    # mask_truncated: responses cut at the length limit get no gradient and do not count in the normalisers
    in_loss = {i for i, r in enumerate(rollouts) if not (c.mask_truncated and r.finish_reason == "length")}
    active = [i for i, r in enumerate(rollouts) if i in in_loss and (r.advantage != 0 or not exact_zero)]
    is_active = set(active)
    seq_len = lambda i: len(rollouts[i].prompt_tokens) + len(rollouts[i].tokens) - 1  # noqa: E731  positions run
    # ties by index: the recompute's micro-batches and the update's must be the same (the update visits a shuffled
    # order), so that a policy still at its reference gets bit-identical log-probs and a KL gradient of exactly 0
    by_len = lambda ids: sorted(ids, key=lambda i: (seq_len(i), i))  # noqa: E731
    split = lambda ids: micro_batches(ids, seq_len, c.micro_batch, c.micro_batch_tokens)  # noqa: E731
    # sums over this rank, all-reduced at the end:
    # [clip_hi, clip_lo, tokens, approx_kl, ent, ent_n, mis, mis_n, kl, tis weight]
    acc = torch.zeros(10, dtype=torch.float64)
    mis_max = torch.zeros(1, dtype=torch.float64)
    fwd_tokens = 0  # positions run through the model on this rank (recompute + update passes), for tokens/s

    def log_mismatch_entropy(micro, logp, ent, mask):
        # the sampler's log-probs (KV-cache decode) vs the trainer's (full forward): should agree to float noise
        sampler = per_token([rollouts[i] for i in micro], [rollouts[i].logprobs for i in micro], mask)
        diff = (logp.detach() - sampler).abs()[mask]
        acc[6] += diff.sum().item()
        acc[7] += diff.numel()
        mis_max[0] = max(mis_max[0].item(), diff.max().item() if diff.numel() else 0.0)
        acc[4] += ent[mask].sum().item()
        acc[5] += mask.sum().item()

    # --- old log-probs (and the reference's) by the training forward, before any update
    t0 = time.perf_counter()
    old: dict[int, torch.Tensor] = {}
    ref: dict[int, torch.Tensor] = {}
    if n_updates > 1 or ref_model is not None:
        with torch.no_grad():
            for micro in even_out(split(by_len(active)), d, sharded):
                if micro is None:
                    for m in (model if n_updates > 1 else None, ref_model):
                        if m is not None:
                            dummy_pass(m, backward=False)
                    continue
                idx, targets = pack([rollouts[i] for i in micro], dev)
                lens = [len(rollouts[i].tokens) for i in micro]
                fwd_tokens += sum(map(seq_len, micro)) * ((n_updates > 1) + (ref_model is not None))
                if n_updates > 1:
                    logp, ent, mask = response_logprobs(model, idx, targets, c.temperature, True, autocast,
                                                        vocab_size=vocab_size, chunk_size=c.logits_chunk)
                    old.update(zip(micro, logp[mask].cpu().split(lens)))
                    log_mismatch_entropy(micro, logp, ent, mask)
                if ref_model is not None:
                    logp, _, mask = response_logprobs(ref_model, idx, targets, c.temperature, False, autocast,
                                                        vocab_size=vocab_size, chunk_size=c.logits_chunk)
                    ref.update(zip(micro, logp[mask].cpu().split(lens)))
    t_recompute = time.perf_counter() - t0
    # With one optimizer step per rollout batch (on-policy), the old log-probs are the same numbers the update's
    # own forward computes before it changes anything: they are taken from there (detached), saving a forward.

    t0 = time.perf_counter()
    grad_norms, n_steps, loss_sum = [], 0, 0.0
    g = torch.Generator().manual_seed(seed)
    for epoch in range(c.ppo_epochs):
        order = torch.randperm(len(rollouts), generator=g).tolist()
        for part in np.array_split(np.array(order, dtype=np.int64), c.mini_batches):
            members = [i for i in part.tolist() if i in in_loss]
            counts = torch.tensor([sum(len(rollouts[i].tokens) for i in members), len(members),
                                   sum(1 for i in members if i in is_active)], dtype=torch.float64)
            all_reduce_(counts, d)
            n_tokens, n_seqs, n_active = counts.tolist()
            if n_active == 0:
                continue  # every rank's sequences here have zero gradient: no step (Adam would still move)
            mine = by_len([i for i in members if i in is_active])
            micros = even_out(split(mine), d, sharded)
            for k, micro in enumerate(micros):
                if sharded:
                    model.set_requires_gradient_sync(k == len(micros) - 1)  # reduce-scatter once, at the end
                if micro is None:
                    dummy_pass(model, backward=True)
                    continue
                rs = [rollouts[i] for i in micro]
                idx, targets = pack(rs, dev)
                fwd_tokens += sum(map(seq_len, micro))
                want_ent = c.entropy_coef > 0 or n_updates == 1  # for the bonus, or to log it (no grad then)
                logp, ent, mask = response_logprobs(model, idx, targets, c.temperature, want_ent, autocast,
                                                    entropy_grad=c.entropy_coef > 0, vocab_size=vocab_size,
                                                    chunk_size=c.logits_chunk)
                if n_updates == 1:
                    old_t = logp.detach()
                    log_mismatch_entropy(micro, logp, ent.detach(), mask)
                else:
                    old_t = per_token(rs, [old[i] for i in micro], mask)
                adv = torch.tensor([r.advantage for r in rs], device=dev)
                ref_t = per_token(rs, [ref[i] for i in micro], mask) if ref_model is not None else None
                sampler_t = per_token(rs, [r.logprobs for r in rs], mask) if c.tis_cap > 0 else None
                tl = grpo.token_loss(logp, old_t, adv, mask, c, ref_logp=ref_t, entropy=ent, sampler_logp=sampler_t)
                hi, lo, ratio = tl.clipped_high, tl.clipped_low, tl.ratio
                if tl.kl is not None:
                    acc[8] += tl.kl.detach()[mask].sum().item()
                if tl.tis is not None:
                    acc[9] += tl.tis[mask].sum().item()
                loss = grpo.aggregate(tl.loss, mask, c.loss_agg, n_tokens=n_tokens, n_seqs=n_seqs,
                                      max_len=loss_max_len)
                loss.backward()
                loss_sum += loss.item()
                with torch.no_grad():
                    r = ratio[mask].double()
                    acc[0] += hi.sum().item()
                    acc[1] += lo.sum().item()
                    acc[2] += mask.sum().item()
                    acc[3] += (r - 1 - r.log()).sum().item()  # k3 estimate of KL(old || new)
            for p in params if not sharded else []:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)  # this rank had nothing here: it still joins the sum
                all_reduce_(p.grad, d)
            gn = clip_grad_norm(params, c.grad_clip)
            if not math.isfinite(gn):
                raise FloatingPointError(f"gradient norm is {gn}: lower lr (the update was not applied)")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            grad_norms.append(gn)
            n_steps += 1
    t_update = time.perf_counter() - t0

    all_reduce_(acc, d)
    all_reduce_(mis_max, d, dist.ReduceOp.MAX if d.ddp else None)
    loss_t = all_reduce_(torch.tensor([loss_sum], dtype=torch.float64), d)
    fwd_t = all_reduce_(torch.tensor([fwd_tokens], dtype=torch.float64), d)
    tok = max(acc[2].item(), 1.0)
    return {
        "loss": loss_t.item() / max(n_steps, 1), "optimizer_steps": n_steps,
        "clip_frac_high": acc[0].item() / tok, "clip_frac_low": acc[1].item() / tok,
        "clip_frac": (acc[0] + acc[1]).item() / tok, "approx_kl": acc[3].item() / tok,
        "entropy": acc[4].item() / max(acc[5].item(), 1.0), "ref_kl": acc[8].item() / tok,
        "logprob_mismatch_mean": acc[6].item() / max(acc[7].item(), 1.0), "logprob_mismatch_max": mis_max.item(),
        "tis_weight": acc[9].item() / tok if c.tis_cap > 0 else 1.0,
        "grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else 0.0,
        "trained_seqs_per_rank": len(active), "forward_tokens": int(fwd_t.item()), "recompute_s": t_recompute,
        "update_s": t_update,
    }
