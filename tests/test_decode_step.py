"""
The static decode step (decode_step.py): preallocated buffers, rows padded to a bucket, no host sync inside. On CPU
it runs eagerly; these tests hold it to the engine's plain path (same tokens, same log-probs) in every mode the
engine has, check that its compute traces whole under torch.compile(fullgraph=True) (what CUDA graph capture
needs), and run it through the Triton kernels under the interpreter. bench/gpu_check.py checks graph replay
against eager on a GPU.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import octo_kernels
import sample
from decode_step import DecodeStep, bucket
from kvcache import PagedKVCache
from model import Llama, LlamaConfig
from test_sample import PROMPTS, random_model, tok  # noqa: F401 - tok is a fixture


@pytest.fixture(scope="module")
def model(tok):  # noqa: F811
    return random_model(tok, std=0.1)


def test_buckets():
    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9, 16, 17, 64, 100)] == [1, 2, 4, 8, 8, 16, 16, 32, 64, 128]


@pytest.mark.parametrize("kw", [
    dict(max_new_tokens=12),  # greedy, ragged prompts
    dict(max_new_tokens=12, n=3, temperature=1.0, seed=7),  # seeded sampling, n samples sharing a prefill
    dict(max_new_tokens=10, n=2, temperature=0.8, top_p=0.9, top_k=20, seed=2, stop=["e", "9"]),  # stop strings
    dict(max_new_tokens=12, n=2, temperature=1.0, seed=3, batch_size=5, block_size=4, kv_blocks=10),  # preemption
])
def test_static_step_gives_the_engine_tokens_and_logprobs(tok, model, kw):  # noqa: F811
    plain = sample.generate(model, tok, PROMPTS, static_step=False, **kw)
    stats = dict(sample.last_stats)
    static = sample.generate(model, tok, PROMPTS, static_step=True, **kw)
    assert sample.last_stats["static_step"] and not stats["static_step"]
    if "kv_blocks" in kw:
        assert stats["preemptions"] > 0 and sample.last_stats["preemptions"] > 0
    for a, b in zip(plain, static):
        assert (a.tokens, a.text, a.finish_reason) == (b.tokens, b.text, b.finish_reason)
        assert (a.logprobs - b.logprobs).abs().max().item() < 1e-4


class Row:
    """An owner of a step's slot (the engine's Seq in sample.py)."""
    slot = -1


def test_static_step_traces_whole_under_torch_compile():
    """fullgraph=True fails on any graph break (a host sync, data-dependent Python): the step is one graph, the
    property a CUDA graph capture needs; and the traced step computes what the eager one does."""
    torch.manual_seed(0)
    net = Llama(LlamaConfig.from_preset("test", n_layers=1)).eval()
    outs = []
    with torch.inference_mode():
        for compiled in (False, True):
            cache = PagedKVCache.for_model(net, 8, 4)  # block 0 is the step's scratch block
            step = DecodeStep(net, cache, 3, 4, graphs=False)
            step.begin(sample.make_sampler(1.0, 0, 1.0, False), "torch", torch.float32, torch.arange(256) >= 250)
            for k, (tok, n, blocks) in enumerate([(3, 5, [1, 2]), (4, 2, [3]), (5, 9, [4, 5, 6])]):
                step.add(Row(), tok, n, blocks, k, 0)
            B = step.upload(lambda rid, t: np.array([0.1, 0.5, 0.9, 0.3], dtype=np.float32))
            fn = torch.compile(step.compute, fullgraph=True, backend="eager") if compiled else step.compute
            fn(B, 4)
            outs.append(step.out[:3].clone())
    assert torch.equal(outs[0][:, 0], outs[1][:, 0]) and torch.allclose(outs[0][:, 1], outs[1][:, 1], atol=1e-6)
    assert (outs[0][:, 0] < 250).all()  # the vocab mask is inside the step


def test_static_step_on_the_kernel_path(tok, model, monkeypatch):  # noqa: F811
    """Through the Triton kernels (interpreter), the default there: the static step gives the plain kernel
    path's tokens (the kernel sampler, seeded) and log-probs."""
    if not (octo_kernels.HAVE_TRITON and octo_kernels.INTERPRET):
        pytest.skip("needs triton and TRITON_INTERPRET=1 (set by conftest)")
    monkeypatch.setenv(octo_kernels.ENV_VAR, "triton")
    kw = dict(n=2, max_new_tokens=4, temperature=1.0, seed=5)
    static = sample.generate(model, tok, PROMPTS[:2], **kw)
    assert sample.last_stats["static_step"]
    plain = sample.generate(model, tok, PROMPTS[:2], static_step=False, **kw)
    for a, b in zip(plain, static):
        assert a.tokens == b.tokens and (a.logprobs - b.logprobs).abs().max().item() < 1e-4


def test_bad_knobs(tok, model):  # noqa: F811
    with pytest.raises(sample.UserError, match="static_step"):
        sample.generate(model, tok, PROMPTS, static_step="yes")
    with pytest.raises(sample.UserError, match="cuda_graphs"):
        sample.generate(model, tok, PROMPTS, cuda_graphs=None)


def test_rows_keep_their_slots_and_compact_when_the_batch_drops_a_bucket():
    net = Llama(LlamaConfig.from_preset("test", n_layers=1)).eval()
    with torch.inference_mode():
        step = DecodeStep(net, PagedKVCache.for_model(net, 16, 4), 8, 3, graphs=False)
        rows = [Row() for _ in range(5)]
        for k, r in enumerate(rows):
            step.add(r, 10 + k, 4 + k, [1 + k, 6 + k], k, k)
        assert [r.slot for r in rows] == [0, 1, 2, 3, 4] and step.compact() == 8
        step.set_block(rows[4].slot, 2, 15)
        for r in rows[:3]:
            step.remove(r.slot)
        assert step.compact() == 2  # 2 rows live: slots 3 and 4 move to 0 and 1, with everything they hold
        assert [r.slot for r in rows] == [-1, -1, -1, 0, 1]
        assert step.h[:2].tolist() == [[13, 7, 4, 9, 0], [14, 8, 5, 10, 15]]
        assert step.rid[:2].tolist() == [3, 4] and step.t[:2].tolist() == [3, 4]
        assert (step.h[2:, 2:] == DecodeStep.SCRATCH).all() and not step.used[2:].any()
        step.advance(np.array([1]), np.array([99]))
        assert step.h[1, :2].tolist() == [99, 9] and step.t[1] == 5


def test_kernel_keys_fold_the_step_in_mod_2_63():
    """The vectorized keys (uint64 arithmetic) are the per-row formula (seed + t * STEP_KEY) mod 2**63."""
    g = np.random.default_rng(0)
    seeds = g.integers(0, 2**63, 50, dtype=np.uint64)
    rid, t = g.integers(0, 50, 200), g.integers(0, 5000, 200)
    keys = sample.row_states(1.0, True, seeds, None)(rid, t)
    assert keys.dtype == np.int64
    assert keys.tolist() == [(int(seeds[r]) + int(s) * sample.STEP_KEY) % 2**63 for r, s in zip(rid, t)]


def test_the_engine_is_kept_across_calls_and_changes_nothing(tok, model):  # noqa: F811
    """generate keeps the static step's KV pool and step on the model (captured graphs stay valid across calls);
    a kept engine gives a fresh one's tokens, also with a smaller pool that preempts (the pool is sized per call)."""
    sample.release_engine(model)
    kw = dict(n=2, max_new_tokens=10, temperature=1.0, seed=3, static_step=True, block_size=4)
    first = sample.generate(model, tok, PROMPTS, **kw)
    cache, step = model.__dict__["_decode_engine"]
    again = sample.generate(model, tok, PROMPTS, **kw)
    assert model.__dict__["_decode_engine"] == (cache, step)  # the same objects: nothing re-made
    small = sample.generate(model, tok, PROMPTS, batch_size=5, kv_blocks=10, **kw)
    assert sample.last_stats["preemptions"] > 0 and model.__dict__["_decode_engine"][0] is cache
    sample.release_engine(model)
    fresh_small = sample.generate(model, tok, PROMPTS, batch_size=5, kv_blocks=10, **kw)
    for a, b, c, d in zip(first, again, small, fresh_small):
        assert a.tokens == b.tokens == c.tokens == d.tokens
        assert torch.equal(a.logprobs, b.logprobs) and torch.equal(c.logprobs, d.logprobs)


def test_a_call_that_fails_part_way_leaves_no_kept_engine(tok, model):  # noqa: F811
    def boom(index, token):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample.generate(model, tok, PROMPTS, max_new_tokens=5, static_step=True, on_token=boom)
    assert "_decode_engine" not in model.__dict__
    out = sample.generate(model, tok, PROMPTS, max_new_tokens=5, static_step=True)
    assert [c.tokens for c in out] == [c.tokens for c in sample.generate(model, tok, PROMPTS, max_new_tokens=5)]


def test_a_kept_engine_keeps_the_vocab_mask_its_graphs_read(tok):  # noqa: F811
    """A captured graph reads its tensors at fixed addresses: a later call with the same sampler must hand the step
    the mask those graphs were captured with, not a new tensor (the old one freed, its memory reused)."""
    padded = random_model(tok, vocab_size=tok.vocab_size + 8)  # rows past the tokenizer's ids: masked
    kw = dict(max_new_tokens=3, temperature=1.0, seed=1, static_step=True)
    first = sample.generate(padded, tok, PROMPTS, **kw)
    step = padded.__dict__["_decode_engine"][1]
    mask = step.vocab_mask
    assert mask is not None and mask.sum() == 8
    again = sample.generate(padded, tok, PROMPTS, **kw)
    assert step.vocab_mask is mask and [c.tokens for c in first] == [c.tokens for c in again]
