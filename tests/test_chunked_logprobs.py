"""Chunked log-probs and loss (lm_head.chunked_logprobs, forward(chunk_size=, logprobs=)): the same values and
gradients as the whole-logits path, for RL (temperature, padded vocabulary rows cut, entropy bonus) and for the
mid-training cross-entropy, and a measured drop in the RL update's peak memory at Llama 3's vocabulary."""
from __future__ import annotations

import importlib.util
import os
from types import SimpleNamespace

import pytest
import torch

from conftest import ROOT  # noqa: F401  first: it puts the repo root on sys.path
import midtrain  # noqa: E402
import policy_update  # noqa: E402
import rl  # noqa: E402
from lm_head import chunked_logprobs  # noqa: E402
from model import Llama, LlamaConfig  # noqa: E402

SOLO = SimpleNamespace(ddp=False, rank=0, world_size=1)
USED_VOCAB = 219  # the model has 256 rows: 37 padded ones, left out of the softmax


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    m = Llama(LlamaConfig.from_preset("test"))
    with torch.no_grad():
        m.norm.weight.mul_(6.0)  # peaked distributions: entropy and its gradient far from the uniform case
    return m


@pytest.fixture(scope="module")
def batch():
    """Right-padded rows as policy_update.pack makes them: prompt and padding positions are -100."""
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, USED_VOCAB, (3, 21), generator=g)
    targets = torch.randint(0, USED_VOCAB, (3, 21), generator=g)
    targets[:, :4] = -100
    targets[1, 15:] = -100
    targets[2, 9:] = -100
    return idx, targets


def run(net, idx, targets, chunk_size, loss_of, **kw):
    """-> (logp, entropy or None, grads of every parameter) after backward of loss_of(logp, entropy)."""
    net.zero_grad(set_to_none=True)
    logp, ent = net(idx, targets=targets, logprobs=True, chunk_size=chunk_size, **kw)
    loss_of(logp, ent).backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in net.parameters()]
    return logp.detach(), None if ent is None else ent.detach(), grads


def assert_same(a, b, tol=1e-5):
    """Values to tol; gradients to tol of each tensor's scale (the embedding's reach ~100 here, where fp32's own
    rounding is ~1e-5: both paths are ~1e-4 off a float64 run there)."""
    assert (a[0] - b[0]).abs().max() < tol
    if a[1] is None:
        assert b[1] is None
    else:
        assert (a[1] - b[1]).abs().max() < tol
    for ga, gb in zip(a[2], b[2]):
        assert (ga - gb).abs().max() <= tol * max(1.0, ga.abs().max().item())


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_logprobs_and_entropy_bonus_match_the_whole_logits(net, batch, chunk):
    """Temperature, the vocab_size cut and a loss on both log-probs and entropy (the bonus): values and gradients
    equal the whole-logits path's to 1e-5 in fp32, whatever the chunk (one token, a non-divisor, all in one)."""
    idx, targets = batch
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(idx.shape, generator=g), torch.randn(idx.shape, generator=g)
    kw = dict(temperature=0.7, vocab_size=USED_VOCAB, need_entropy=True, entropy_grad=True)
    loss = lambda logp, ent: (a * logp).sum() + (b * ent).sum()  # noqa: E731
    full, chunked = run(net, idx, targets, 0, loss, **kw), run(net, idx, targets, chunk, loss, **kw)
    assert_same(full, chunked)
    mask = targets != -100
    assert (chunked[0][~mask] == 0).all() and (chunked[1][~mask] == 0).all()
    assert (chunked[0][mask] < 0).all() and (chunked[1][mask] > 0).all()
    assert max(g.abs().max() for g in chunked[2]) > 0.1  # gradients that could have differed


def test_entropy_for_logging_only_and_entropy_only_losses(net, batch):
    """Without entropy_grad the entropy carries no gradient (logging); a loss of the entropy alone (log-probs
    unused) still gets the entropy's gradient; without need_entropy there is none."""
    idx, targets = batch
    log_only = dict(temperature=1.3, vocab_size=USED_VOCAB, need_entropy=True)
    logp_loss = lambda logp, ent: logp.sum()  # noqa: E731
    assert_same(run(net, idx, targets, 0, logp_loss, **log_only), run(net, idx, targets, 5, logp_loss, **log_only))
    _, ent = net(idx, targets=targets, logprobs=True, chunk_size=5, **log_only)
    assert not ent.requires_grad
    ent_only = dict(log_only, entropy_grad=True)
    ent_loss = lambda logp, ent: ent.sum()  # noqa: E731
    assert_same(run(net, idx, targets, 0, ent_loss, **ent_only), run(net, idx, targets, 5, ent_loss, **ent_only))
    assert net(idx, targets=targets, logprobs=True, chunk_size=5)[1] is None


def test_chunked_loss_matches_cross_entropy(net, batch):
    """midtrain's loss: (None, loss) with chunk_size, the same mean cross-entropy over targets != -100 and the same
    gradients as F.cross_entropy over the whole logits (its gradient is made in forward and scaled in backward: a
    scaled loss, as in gradient accumulation, must scale it), and the same loss under no_grad (evaluation)."""
    idx, targets = batch
    full, chunked = [], []
    for chunk, out in ((0, full), (4, chunked)):
        net.zero_grad(set_to_none=True)
        logits, loss = net(idx, targets=targets, chunk_size=chunk)
        (loss * 0.37).backward()
        out += [logits, loss.detach(), [p.grad.clone() for p in net.parameters()]]
    assert full[0].shape == (3, 21, 256) and chunked[0] is None
    assert abs(full[1] - chunked[1]) < 1e-5
    for a, b in zip(full[2], chunked[2]):
        assert (a - b).abs().max() <= 1e-5 * max(1.0, a.abs().max().item())
    with torch.no_grad():
        assert abs(net(idx, targets=targets, chunk_size=5)[1] - full[1]) < 1e-5


def test_autocast_matmul_in_bf16_softmax_in_fp32(net, batch):
    """Under autocast the chunked lm_head runs in bf16 like the whole-logits path (both far from fp32's numbers,
    close to each other), and log-probs come out in fp32."""
    idx, targets = batch
    mask = targets != -100
    kw = dict(targets=targets, logprobs=True, vocab_size=USED_VOCAB)
    with torch.no_grad():
        fp32 = net(idx, chunk_size=0, **kw)[0][mask]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            full, chunked = net(idx, chunk_size=0, **kw)[0][mask], net(idx, chunk_size=5, **kw)[0][mask]
    assert chunked.dtype == torch.float32
    assert (full - fp32).abs().max() > 1e-3 and (chunked - fp32).abs().max() > 1e-3
    assert (chunked - full).abs().max() < 0.1 * (full - fp32).abs().max()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # the loss path, the same way
        losses = [net(idx, targets=targets, chunk_size=chunk)[1] for chunk in (0, 5)]
    with torch.no_grad():
        loss32 = net(idx, targets=targets)[1]
    assert losses[1].dtype == torch.float32
    assert (losses[1] - losses[0]).abs() < 0.1 * (losses[0] - loss32).abs() and (losses[0] - loss32).abs() > 1e-4


def test_rl_update_same_step_with_any_logits_chunk(net):
    """policy_update.update_policy through the knob: with the old log-probs recomputed (2 epochs) and the entropy bonus on,
    logits_chunk=0 and a small chunk give the same parameters after the update."""
    g = torch.Generator().manual_seed(3)
    rollouts = [policy_update.Rollout(torch.randint(0, 200, (3,), generator=g).tolist(),
                           torch.randint(0, 200, (n,), generator=g).tolist(), torch.zeros(n), "", "eos", 0.0, i // 2,
                           1.0 if i % 2 else -1.0) for i, n in enumerate((6, 9, 4, 11))]
    after = []
    for chunk in (0, 3):
        m = Llama(net.config)
        m.load_state_dict(net.state_dict())
        c = SimpleNamespace(**{**rl.DEFAULTS, "ppo_epochs": 2, "entropy_coef": 0.05, "logits_chunk": chunk})
        stats = policy_update.update_policy(m, torch.optim.SGD(m.parameters(), lr=0.1), rollouts, c, SOLO, loss_max_len=12,
                                 vocab_size=USED_VOCAB)
        after.append((stats, [p.detach().clone() for p in m.parameters()]))
    (s0, p0), (s1, p1) = after
    assert abs(s0["loss"] - s1["loss"]) < 1e-5 and abs(s0["entropy"] - s1["entropy"]) < 1e-5
    assert max((a - b).abs().max() for a, b in zip(p0, p1)) < 1e-5
    assert max((a - b).abs().max() for a, b in zip(p0, net.parameters())) > 1e-3  # the step did move them


def test_mistakes_are_named(net, batch):
    idx, targets = batch
    with pytest.raises(ValueError, match="pass targets"):
        net(idx, logprobs=True)
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        chunked_logprobs(torch.zeros(2, 64), net.lm_head.weight, torch.zeros(2, dtype=torch.long), chunk=0)
    with pytest.raises(ValueError, match="logits_chunk must be >= 0"):
        rl.check_config(SimpleNamespace(**{**rl.DEFAULTS, "logits_chunk": -1}), 1)
    with pytest.raises(ValueError, match="logits_chunk must be >= 0"):
        midtrain.check_config(SimpleNamespace(**{**midtrain.DEFAULTS, "logits_chunk": -1}), 1)


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_memory", os.path.join(ROOT, "bench", "memory.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="reads Linux's peak-RSS counter")
def test_rl_update_peak_memory_drops_4x_at_llama3_vocab():
    """One RL update (2 x 256 response tokens, V = 128,256, 2 layers, d = 64), each path in its own fresh process
    (the two side by side: only memory is compared): the memory the update needs over its starting RSS drops >= 4x
    with chunks of 32 tokens (the kernel's peak-RSS counter; the whole logits are 251 MiB per fp32 copy here)."""
    bench = load_bench()
    c = {**{k: getattr(bench, k) for k in ("vocab_size", "n_layers", "threads")},
         "dim": 64, "n_seqs": 2, "prompt_len": 16, "response_len": 256}
    assert c["vocab_size"] == 128256
    procs = [bench.start_measurement("rl", chunk, c) for chunk in (0, 32)]
    old, new = [bench.finish(p) for p in procs]
    assert old["peak_mb"] > 4 * new["peak_mb"], (old, new)
