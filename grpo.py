"""
The GRPO objective, as small pure functions: group-relative advantages, DAPO's soft overlong penalty, PPO's clipped
surrogate (with verl's dual clip and a clamped log-ratio), the k3 KL to a reference, and the loss aggregations of
GRPO, DAPO and Dr. GRPO. Per-token tensors are [B, T] with a response mask [B, T] (True = a response token); rl.py
runs them inside its update loop, tests/test_grpo.py pins each sign and normaliser.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

LOSS_AGGS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def compute_advantages(rewards: torch.Tensor, norm_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """rewards [G, n] (n responses to each of G prompts) -> advantages [G, n]: reward minus its group's mean,
    divided by the group's (unbiased) std + eps unless norm_by_std is False (Dr. GRPO). A group whose rewards are
    all equal gets advantage 0: it carries no signal."""
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [groups, n >= 2], got shape {tuple(rewards.shape)}")
    rewards = rewards.double()
    adv = rewards - rewards.mean(dim=1, keepdim=True)
    if norm_by_std:
        adv = adv / (rewards.std(dim=1, keepdim=True) + eps)
    return adv.float()


def overlong_penalty(n_tokens: int, max_len: int, buffer: int, penalty: float = 1.0) -> float:
    """DAPO's soft overlong punishment: 0 up to max_len - buffer tokens, then falling linearly to -penalty at
    max_len (where a response is cut). buffer 0 = off. A buffer longer than max_len starts at 0 tokens."""
    if buffer <= 0:
        return 0.0
    return -penalty * min(max(n_tokens - (max_len - buffer), 0) / buffer, 1.0)


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                clip_low: float = 0.2, clip_high: float = 0.2, dual_clip: float = 0.0, max_log_ratio: float = 20.0):
    """PPO's clipped surrogate per token. logp, old_logp [B, T]; adv [B] (one advantage per sequence).
    -> (loss [B, T] (0 outside the mask), clipped_high [B, T] bool, clipped_low [B, T] bool, ratio [B, T]).
    A token is "clipped" when its gradient is cut: ratio > 1 + clip_high with a positive advantage, ratio < 1 -
    clip_low with a negative one, or (dual_clip c > 1) ratio > c with a negative one, whose loss the dual clip caps
    at -A * c (counted as clipped_high). The log-ratio is clamped to +-max_log_ratio first, so a ratio that ran away
    over several epochs gives a large but finite loss (with no gradient: it is clipped anyway)."""
    log_ratio = torch.where(mask, logp - old_logp, 0.0)  # 0 on padding: ratio 1, no inf * 0
    ratio = log_ratio.clamp(-max_log_ratio, max_log_ratio).exp()
    a = adv[:, None]  # [B, 1] broadcast over tokens
    unclipped = -a * ratio
    clipped = -a * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    cut = clipped > unclipped
    if dual_clip > 0:
        cap = -a * dual_clip  # > 0 where A < 0
        dual = (a < 0) & (loss > cap)
        loss = torch.where(dual, cap.expand_as(loss), loss)
        cut = cut | dual
    loss = torch.where(mask, loss, 0.0)
    cut = mask & cut
    return loss, cut & (ratio > 1.0), cut & (ratio < 1.0), ratio


def token_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, c,
               ref_logp: torch.Tensor | None = None, entropy: torch.Tensor | None = None,
               sampler_logp: torch.Tensor | None = None) -> SimpleNamespace:
    """policy_update.update_policy's per-token loss [B, T]: the clipped surrogate (knobs clip_low, clip_high, dual_clip,
    max_log_ratio of c), times the truncated importance weight when c.tis_cap > 0 and sampler_logp is given, plus
    kl_coef x the k3 KL to the reference (when ref_logp is given; minimising it pulls logp toward ref_logp), minus
    entropy_coef x the entropy (minimising it raises the entropy).
    -> namespace(loss, clipped_high, clipped_low, ratio, kl (None without ref_logp), tis (the weight or None))."""
    loss, hi, lo, ratio = policy_loss(logp, old_logp, adv, mask, c.clip_low, c.clip_high, c.dual_clip,
                                      c.max_log_ratio)
    tis = None
    if c.tis_cap > 0 and sampler_logp is not None:
        tis = tis_weight(old_logp, sampler_logp, mask, c.tis_cap)
        loss = loss * tis  # the policy-gradient term only: the KL and entropy terms are the trainer's own
    kl = None
    if ref_logp is not None:
        kl = torch.where(mask, kl_k3(logp, ref_logp), 0.0)
        loss = loss + c.kl_coef * kl
    if c.entropy_coef > 0:
        loss = loss - c.entropy_coef * torch.where(mask, entropy, 0.0)
    return SimpleNamespace(loss=loss, clipped_high=hi, clipped_low=lo, ratio=ratio, kl=kl, tis=tis)


def tis_weight(old_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance sampling for the rollout/trainer mismatch: the responses were sampled by the sampler's
    numerics (KV-cache decode, bf16) but the surrogate is the trainer's, so each token's policy-gradient term is
    weighted by min(p_trainer_old / p_sampler, cap) [B, T], detached (a constant per token; 1 outside the mask).
    Equal log-probs give exactly 1: the loss is unchanged when sampler and trainer agree."""
    log_w = torch.where(mask, old_logp.detach() - sampler_logp, 0.0)  # 0 on padding: no inf * 0
    return log_w.exp().clamp(max=cap)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(policy || reference) estimate k3 = exp(ref - logp) - (ref - logp) - 1 (>= 0, unbiased)."""
    d = ref_logp - logp
    return d.exp() - d - 1.0


def aggregate(x: torch.Tensor, mask: torch.Tensor, mode: str, n_tokens=None, n_seqs=None, max_len=None):
    """Reduce per-token losses x [B, T] over the response mask to one scalar.
      token-mean               sum of all tokens / n_tokens (DAPO; n_tokens: of the whole batch)
      seq-mean-token-mean      mean over sequences of each one's token mean (GRPO); divided by n_seqs
      seq-mean-token-sum-norm  each sequence's token sum / max_len (a constant), mean over n_seqs (Dr. GRPO)
    n_tokens / n_seqs default to this x's own counts; a micro-batch passes the counts of the whole (global)
    mini-batch, so the micro-batch losses add up to the mini-batch loss and ranks add up to one process."""
    if mode not in LOSS_AGGS:
        raise ValueError(f"loss aggregation must be one of {LOSS_AGGS}, got {mode!r}")
    x = torch.where(mask, x, 0.0)
    n_seqs = x.shape[0] if n_seqs is None else n_seqs
    if mode == "token-mean":
        return x.sum() / (mask.sum() if n_tokens is None else n_tokens)
    if mode == "seq-mean-token-mean":
        return (x.sum(1) / mask.sum(1).clamp(min=1)).sum() / n_seqs
    if max_len is None or max_len <= 0:
        raise ValueError("seq-mean-token-sum-norm needs max_len > 0 (the constant response length)")
    return x.sum() / (max_len * n_seqs)
