"""The GRPO objective (grpo.py) by hand, and rl.py's update around it where a wrong sign or count still trains: the
KL term pulls toward the reference, the entropy bonus raises entropy, token-mean divides by every token of the
mini-batch (uniform groups included), and the knobs for long responses and stale ratios (overlong punishment,
truncation masking, dual-clip, log-ratio clamp)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from conftest import ROOT  # noqa: F401  first: it puts the repo root on sys.path
import grpo  # noqa: E402
import policy_update  # noqa: E402
import rl  # noqa: E402
from model import Llama, LlamaConfig  # noqa: E402

SOLO = SimpleNamespace(ddp=False, rank=0, world_size=1)


def make_rollouts(vocab: int, lens: list[int], advs: list[float], seed: int = 3, truncated=()) -> list:
    g = torch.Generator().manual_seed(seed)
    return [policy_update.Rollout(torch.randint(0, vocab, (4,), generator=g).tolist(),
                       torch.randint(0, vocab, (n,), generator=g).tolist(), torch.zeros(n), "",
                       "length" if i in truncated else "eos", 0.0, i // 2, a)
            for i, (n, a) in enumerate(zip(lens, advs))]


def knobs(**kw):
    # every loss knob pinned here (not rl's defaults, which are tuned for the built-in run)
    return SimpleNamespace(**{**rl.DEFAULTS, "ppo_epochs": 1, "mini_batches": 1, "micro_batch": 64, "temperature": 1.0,
                              "kl_coef": 0.0, "entropy_coef": 0.0, "dual_clip": 0.0, "max_log_ratio": 20.0,
                              "loss_agg": "token-mean", "mask_truncated": False, "overlong_buffer": 0, **kw})


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    policy = Llama(LlamaConfig.from_preset("test"))
    with torch.no_grad():
        policy.norm.weight.mul_(8.0)  # peaked next-token distributions, far from the reference and from uniform
    torch.manual_seed(1)
    ref = Llama(LlamaConfig.from_preset("test")).requires_grad_(False)
    return policy, ref


def fresh(policy):
    net = Llama(policy.config)
    net.load_state_dict(policy.state_dict())
    return net


def seq_stats(net, ref, rollouts):
    """-> (mean k3 KL to ref over the response tokens, mean entropy of the policy there)."""
    idx, targets = policy_update.pack(rollouts, "cpu")
    with torch.no_grad():
        logp, ent, mask = policy_update.response_logprobs(net, idx, targets, 1.0, need_entropy=True)
        ref_logp, _, _ = policy_update.response_logprobs(ref, idx, targets, 1.0)
    return grpo.kl_k3(logp, ref_logp)[mask].mean().item(), ent[mask].mean().item()


def sgd_update(net, ref, rollouts, **kw):
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    return policy_update.update_policy(net, opt, rollouts, knobs(**kw), SOLO, ref_model=ref, loss_max_len=8)


# ---- the regularisers point the right way --------------------------------------------------------------------


def test_kl_term_pulls_the_policy_toward_the_reference(nets):
    """Zero advantages: the only force is the KL term, and one step of it must lower the KL to the reference
    (a flipped sign pushes away and raises it)."""
    policy, ref = nets
    rs = make_rollouts(policy.config.vocab_size, [5, 3, 6, 2], [0.0] * 4)
    net = fresh(policy)
    kl0, _ = seq_stats(net, ref, rs)
    stats = sgd_update(net, ref, rs, kl_coef=1.0)
    kl1, _ = seq_stats(net, ref, rs)
    assert stats["ref_kl"] == pytest.approx(kl0, rel=1e-4)  # the logged KL is the one measured before the step
    assert kl1 < kl0 - 1e-3, (kl0, kl1)


def test_entropy_bonus_raises_entropy(nets):
    policy, ref = nets
    rs = make_rollouts(policy.config.vocab_size, [5, 3, 6, 2], [0.0] * 4)
    net = fresh(policy)
    _, h0 = seq_stats(net, ref, rs)
    sgd_update(net, None, rs, entropy_coef=1.0)
    _, h1 = seq_stats(net, ref, rs)
    assert h1 > h0 + 1e-3, (h0, h1)


def test_one_token_toy_gradients():
    """One token, three-way softmax: the combined per-token loss's gradient moves logits toward the reference
    (KL) and toward uniform (entropy bonus), whatever the advantage is (0 here)."""
    z = torch.tensor([2.0, 0.0, -1.0], requires_grad=True)
    ref_logp = torch.log_softmax(torch.tensor([0.0, 0.0, 0.0]), -1)[0].view(1, 1)
    logp = torch.log_softmax(z, -1)[0].view(1, 1)
    ent = -(torch.softmax(z, -1) * torch.log_softmax(z, -1)).sum().view(1, 1)
    mask = torch.ones(1, 1, dtype=torch.bool)
    c = knobs(kl_coef=1.0, entropy_coef=0.0)
    out = grpo.token_loss(logp, logp.detach(), torch.zeros(1), mask, c, ref_logp=ref_logp, entropy=ent)
    out.loss.sum().backward()
    assert z.grad[0] > 0  # descent lowers the sampled token's logit: its prob is above the reference's 1/3
    z.grad = None
    logp = torch.log_softmax(z, -1)[0].view(1, 1)
    ent = -(torch.softmax(z, -1) * torch.log_softmax(z, -1)).sum().view(1, 1)
    c = knobs(kl_coef=0.0, entropy_coef=1.0)
    grpo.token_loss(logp, logp.detach(), torch.zeros(1), mask, c, entropy=ent).loss.sum().backward()
    assert z.grad[0] > 0 and z.grad[2] < 0  # descent flattens the distribution


# ---- normalisers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("agg,expected", [
    # group 0: advantages +1 (3 tokens) and -0.5 (1 token); group 1 is uniform (advantage 0, 2 + 2 tokens).
    # At ratio 1 the per-token loss is -advantage: token-mean divides by all 8 tokens, seq-mean by all 4 sequences
    ("token-mean", -(3 * 1.0 - 0.5) / 8),
    ("seq-mean-token-mean", -(1.0 - 0.5) / 4),
    ("seq-mean-token-sum-norm", -(3 * 1.0 - 0.5) / (8 * 4)),
])
def test_uniform_groups_count_in_the_denominator(nets, agg, expected):
    policy, _ = nets
    rs = make_rollouts(policy.config.vocab_size, [3, 1, 2, 2], [1.0, -0.5, 0.0, 0.0])
    stats = sgd_update(fresh(policy), None, rs, loss_agg=agg)
    assert stats["loss"] == pytest.approx(expected, rel=1e-5)


# ---- long responses and stale ratios -----------------------------------------------------------------------------


def test_overlong_penalty_is_linear_over_the_buffer():
    # max_len 100, buffer 20: free up to 80 tokens, then -1/20 per token, -1 (x penalty) at the cap
    got = [grpo.overlong_penalty(n, 100, 20, 0.5) for n in (10, 80, 81, 90, 100)]
    assert got == pytest.approx([0.0, 0.0, -0.5 / 20, -0.25, -0.5])
    assert grpo.overlong_penalty(100, 100, 0) == 0.0  # off


def test_rollout_rewards_carry_the_overlong_penalty(nets):
    """Through rollout(): the penalty is added to the grader's reward before the group advantages."""
    from data.tokenizer import Tokenizer
    policy, _ = nets
    tok = Tokenizer.train(["Question: 1 + 1 = 2. Answer: \\boxed{2}"] * 3, vocab_size=280)
    net = Llama(LlamaConfig.from_preset("test", vocab_size=tok.vocab_size, bos_id=tok.bos_id, eos_id=tok.eos_id))
    ex = [{"prompt_ids": tok.encode("Question:", bos=True), "answer": "2", "question": "q"}]
    c = knobs(group_size=4, stop=[], overlong_buffer=4, overlong_penalty=0.5)
    outs = rl.rollout(net, tok, ex, c, seed=0, max_new_tokens=6, reward_fn=lambda comp, e: 1.0)
    for r in outs:  # a random model rarely stops early: most responses hit the cap
        assert r.reward == pytest.approx(1.0 + grpo.overlong_penalty(len(r.tokens), 6, 4, 0.5))
    assert any(r.reward == pytest.approx(0.5) for r in outs)


def test_mask_truncated_leaves_cut_responses_out_of_the_loss(nets):
    policy, _ = nets
    # group 0: a truncated response (+1, 3 tokens) and a finished one (-0.5, 1 token); group 1 finished (0, 2 + 2)
    rs = make_rollouts(policy.config.vocab_size, [3, 1, 2, 2], [1.0, -0.5, 0.0, 0.0], truncated={0})
    assert sgd_update(fresh(policy), None, rs)["loss"] == pytest.approx(-(3 - 0.5) / 8, rel=1e-5)
    # masked: only the finished 5 tokens remain, in the numerator and the denominator
    assert sgd_update(fresh(policy), None, rs, mask_truncated=True)["loss"] == pytest.approx(0.5 / 5, rel=1e-5)
    net = fresh(policy)
    only_cut = make_rollouts(policy.config.vocab_size, [3, 2], [1.0, -1.0], truncated={0, 1})
    stats = sgd_update(net, None, only_cut, mask_truncated=True)
    assert stats["optimizer_steps"] == 0  # nothing left to learn from: the weights stay put
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), policy.state_dict().values()))


def test_dual_clip_caps_negative_advantage_losses():
    # A = -1 and ratios 0.5, 2, 5: the PPO max gives 0.8 (clipped low), 2, 5; dual-clip c = 3 caps the last at 3
    logp = torch.tensor([[0.5, 2.0, 5.0]]).log().requires_grad_(True)
    mask = torch.ones(1, 3, dtype=torch.bool)
    old = torch.zeros(1, 3)
    plain, hi0, _, _ = grpo.policy_loss(logp, old, torch.tensor([-1.0]), mask, 0.2, 0.2)
    loss, hi, lo, _ = grpo.policy_loss(logp, old, torch.tensor([-1.0]), mask, 0.2, 0.2, dual_clip=3.0)
    assert torch.allclose(plain, torch.tensor([[0.8, 2.0, 5.0]]))
    assert torch.allclose(loss, torch.tensor([[0.8, 2.0, 3.0]]))
    assert hi.tolist() == [[False, False, True]] and not hi0.any() and lo.tolist() == [[True, False, False]]
    loss.sum().backward()
    assert logp.grad.tolist()[0] == pytest.approx([0.0, 2.0, 0.0])  # capped: no gradient, like any clipped token
    # a positive advantage is never touched by the dual clip
    pos, _, _, _ = grpo.policy_loss(logp, old, torch.tensor([1.0]), mask, 0.2, 0.2, dual_clip=3.0)
    assert torch.allclose(pos, torch.tensor([[-0.5, -1.2, -1.2]]))


def test_log_ratio_clamp_keeps_a_runaway_ratio_finite():
    """A token whose new log-prob ran 200 nats above the old one (several epochs on a stale batch): exp overflows
    to inf in float32 without the clamp; with it the loss and every gradient stay finite."""
    logp = torch.tensor([[0.0, -1.0]], requires_grad=True)
    old = torch.tensor([[-200.0, -1.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    raw, _, _, _ = grpo.policy_loss(logp, old, torch.tensor([-1.0]), mask, max_log_ratio=1e9)
    assert math.isinf(raw[0, 0].item())
    loss, _, _, ratio = grpo.policy_loss(logp, old, torch.tensor([-1.0]), mask, max_log_ratio=20.0)
    assert ratio[0, 0].item() == pytest.approx(math.exp(20.0), rel=1e-5)
    grpo.aggregate(loss, mask, "token-mean").backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logp.grad).all()


def test_tis_weight_by_hand():
    """Truncated importance sampling: w = min(exp(old - sampler), cap), detached, multiplies the clipped surrogate
    and not the KL. Tokens: the trainer above the sampler by log 1.5 (w 1.5), by log 3 (capped at 2), below by
    log 2 (w 0.5); a padding position with a wild sampler value stays out."""
    old = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    sampler = torch.tensor([[-math.log(1.5), -math.log(3.0), math.log(2.0), -50.0]])
    mask = torch.tensor([[True, True, True, False]])
    w = grpo.tis_weight(old, sampler, mask, cap=2.0)
    assert torch.allclose(w, torch.tensor([[1.5, 2.0, 0.5, 1.0]]))
    logp = torch.tensor([[0.0, 0.1, -0.1, 0.0]], requires_grad=True)
    ref = torch.tensor([[-0.5, -0.5, -0.5, -0.5]])
    adv = torch.tensor([1.0])
    c = knobs(kl_coef=0.3, tis_cap=2.0)
    out = grpo.token_loss(logp, old, adv, mask, c, ref_logp=ref, sampler_logp=sampler)
    pg, _, _, _ = grpo.policy_loss(logp, old, adv, mask)
    kl = torch.where(mask, grpo.kl_k3(logp, ref), 0.0)
    assert torch.allclose(out.loss, pg * w + 0.3 * kl)
    out.loss.sum().backward()  # the weight is a constant: d/dlogp = w * d(pg) + 0.3 * d(kl)
    g_tis = logp.grad.clone()
    logp.grad = None
    (pg * w.detach() + 0.3 * kl).sum().backward()
    assert torch.allclose(g_tis, logp.grad)
    # off (tis_cap 0), or no sampler log-probs: the plain loss
    plain = grpo.token_loss(logp, old, adv, mask, knobs(kl_coef=0.3), ref_logp=ref, sampler_logp=sampler)
    assert plain.tis is None and torch.allclose(plain.loss, pg + 0.3 * kl)


def test_tis_is_a_no_op_when_sampler_and_trainer_agree(nets):
    """Rollouts whose sampler log-probs are the trainer's own: weight 1, the same loss and the same weights after
    the step as without TIS; with log-probs that disagree the loss moves."""
    policy, ref = nets
    rs = make_rollouts(policy.config.vocab_size, [5, 3, 6, 2], [1.0, -1.0, 0.5, -0.5])
    idx, targets = policy_update.pack(rs, "cpu")
    with torch.no_grad():
        logp, _, mask = policy_update.response_logprobs(policy, idx, targets, 1.0)
    for r, lp in zip(rs, logp[mask].split([len(r.tokens) for r in rs])):
        r.logprobs = lp.clone()
    a, b = fresh(policy), fresh(policy)
    off = sgd_update(a, ref, rs, kl_coef=0.1)
    on = sgd_update(b, ref, rs, kl_coef=0.1, tis_cap=2.0)
    assert on["tis_weight"] == pytest.approx(1.0, abs=1e-6) and on["loss"] == pytest.approx(off["loss"], rel=1e-6)
    assert all(torch.allclose(x, y, atol=1e-7) for x, y in zip(a.parameters(), b.parameters()))
    for r in rs:
        r.logprobs = r.logprobs - 0.2  # the sampler 0.2 nats below the trainer: weight e^0.2 on every token
    moved = sgd_update(fresh(policy), None, rs, tis_cap=2.0)
    assert moved["tis_weight"] == pytest.approx(math.exp(0.2), rel=1e-5)
    assert moved["loss"] == pytest.approx(math.exp(0.2) * sgd_update(fresh(policy), None, rs)["loss"], rel=1e-5)


def test_new_knob_errors():
    for bad, msg in [({"dual_clip": 0.5}, "dual_clip"), ({"max_log_ratio": 0.0}, "max_log_ratio"),
                     ({"overlong_buffer": -1}, "overlong_buffer"), ({"tis_cap": 0.5}, "tis_cap"),
                     ({"grad_checkpointing": "yes"}, "grad_checkpointing")]:
        with pytest.raises(ValueError, match=msg):
            rl.check_config(knobs(**bad, out_dir="/nonexistent/rl"), world_size=1)


def test_advantages_by_hand():
    r = torch.tensor([[1.0, -1.0, -1.0, -1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 0.0, 2.0]])
    adv = grpo.compute_advantages(r, norm_by_std=True, eps=0.0 + 1e-6)
    # group 0: mean -0.5, deviations (1.5, -0.5, -0.5, -0.5), unbiased variance (2.25 + 3 * 0.25) / 3 = 1
    assert torch.allclose(adv[0], torch.tensor([1.5, -0.5, -0.5, -0.5]), atol=1e-5)
    assert torch.equal(adv[1], torch.zeros(4))  # a uniform group carries no signal
    # group 2: mean 1, deviations +-1, unbiased std sqrt(4 / 3)
    assert torch.allclose(adv[2], torch.tensor([-1.0, 1.0, -1.0, 1.0]) / (4 / 3) ** 0.5, atol=1e-5)
    drgrpo = grpo.compute_advantages(r, norm_by_std=False)  # Dr. GRPO: only the mean is removed
    assert torch.allclose(drgrpo[0], torch.tensor([1.5, -0.5, -0.5, -0.5]))
    assert torch.allclose(drgrpo[2], torch.tensor([-1.0, 1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="groups"):
        grpo.compute_advantages(torch.ones(4))


# ---- the clipped surrogate ---------------------------------------------------------------------------------------


def test_policy_loss_clips_both_sides_and_cuts_gradients():
    # one token per sequence; ratios 1.5, 0.5, 1.5, 0.5, 1.1 with advantages +1, -1, -1, +1, +2 (clip 0.2 / 0.2)
    ratio = torch.tensor([1.5, 0.5, 1.5, 0.5, 1.1])
    old = torch.zeros(5, 1)
    logp = ratio.log()[:, None].clone().requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0, 2.0])
    mask = torch.ones(5, 1, dtype=torch.bool)
    loss, hi, lo, r = grpo.policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    # max(-A r, -A clip(r)): +A above 1+eps -> -1.2 (clipped); -A below 1-eps -> 0.8 (clipped);
    # -A above -> 1.5 (not clipped: the pessimistic term is the unclipped one); +A below -> -0.5; inside -> -2.2
    assert torch.allclose(loss[:, 0], torch.tensor([-1.2, 0.8, 1.5, -0.5, -2.2]), atol=1e-6)
    assert hi[:, 0].tolist() == [True, False, False, False, False]
    assert lo[:, 0].tolist() == [False, True, False, False, False]
    assert torch.allclose(r[:, 0], ratio)
    loss.sum().backward()
    # d(-A r)/dlogp = -A r where not clipped, 0 where clipped
    assert torch.allclose(logp.grad[:, 0], torch.tensor([0.0, 0.0, 1.5, -0.5, -2.2]), atol=1e-6)


def test_policy_loss_clip_higher_is_asymmetric_and_mask_zeroes():
    logp = torch.tensor([[1.25, 0.85, 9.0]]).log()  # the third token is padding with a wild value
    mask = torch.tensor([[True, True, False]])
    old = torch.zeros(1, 3)
    # clip-higher: [1 - 0.2, 1 + 0.28]: 1.25 with A > 0 is still inside
    loss, hi, lo, _ = grpo.policy_loss(logp, old, torch.tensor([1.0]), mask, clip_low=0.2, clip_high=0.28)
    assert not hi.any() and not lo.any()
    assert torch.allclose(loss, torch.tensor([[-1.25, -0.85, 0.0]]))
    # a tighter low clip: 0.85 < 1 - 0.1 with A < 0 is clipped, at 0.9
    loss, hi, lo, _ = grpo.policy_loss(logp, old, torch.tensor([-1.0]), mask, clip_low=0.1, clip_high=0.28)
    assert lo.tolist() == [[False, True, False]] and not hi.any()
    assert torch.allclose(loss, torch.tensor([[1.25, 0.9, 0.0]]))


def test_kl_k3():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.0, -1.0, -2.0])
    d = ref - logp
    assert torch.allclose(grpo.kl_k3(logp, ref), d.exp() - d - 1)
    assert grpo.kl_k3(logp, ref)[0] == 0 and (grpo.kl_k3(logp, ref) >= 0).all()


# ---- aggregation -------------------------------------------------------------------------------------------------

X = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 100.0, 100.0, 100.0]])  # 100 = padding / prompt: must not count
M = torch.tensor([[True, True, True, False], [True, False, False, False]])


def test_aggregate_by_hand():
    assert grpo.aggregate(X, M, "token-mean").item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert grpo.aggregate(X, M, "seq-mean-token-mean").item() == pytest.approx((6 / 3 + 4 / 1) / 2)
    assert grpo.aggregate(X, M, "seq-mean-token-sum-norm", max_len=4).item() == pytest.approx((6 / 4 + 4 / 4) / 2)
    with pytest.raises(ValueError, match="max_len"):
        grpo.aggregate(X, M, "seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="aggregation"):
        grpo.aggregate(X, M, "sum")


@pytest.mark.parametrize("mode", grpo.LOSS_AGGS)
def test_aggregate_micro_batches_add_up_with_global_counts(mode):
    """Split rows over micro-batches (or ranks), pass the whole batch's counts: the pieces sum to the whole."""
    whole = grpo.aggregate(X, M, mode, max_len=4)
    n_tok, n_seq = M.sum().item(), 2
    parts = sum(grpo.aggregate(X[i:i + 1], M[i:i + 1], mode, n_tokens=n_tok, n_seqs=n_seq, max_len=4)
                for i in range(2))
    assert parts.item() == pytest.approx(whole.item())


# ---- small pieces ------------------------------------------------------------------------------------------------
