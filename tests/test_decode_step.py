"""
The static decode step (decode_step.py): preallocated buffers, rows padded to a bucket, no host sync inside. On CPU
it runs eagerly; these tests hold it to the engine's plain path (same tokens, same log-probs) in every mode the
engine has, check that its compute traces whole under torch.compile(fullgraph=True) (what CUDA graph capture
needs), and run it through the Triton kernels under the interpreter. bench/gpu_check.py checks graph replay
against eager on a GPU.
"""
from __future__ import annotations

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


def test_static_step_traces_whole_under_torch_compile():
    """fullgraph=True fails on any graph break (a host sync, data-dependent Python): the step is one graph, the
    property a CUDA graph capture needs; and the traced step computes what the eager one does."""
    torch.manual_seed(0)
    net = Llama(LlamaConfig.from_preset("test", n_layers=1)).eval()
    outs = []
    with torch.inference_mode():
        for compiled in (False, True):
            cache = PagedKVCache.for_model(net, 8, 4)  # block 0 becomes the step's scratch block
            step = DecodeStep(net, cache, 3, 4, sampler=sample.make_sampler(1.0, 0, 1.0, False),
                              per_row_dtype=torch.float32, vocab_mask=torch.arange(256) >= 250, graphs=False)
            step.weights = net.decode_weights()
            step.load([3, 4, 5], [5, 2, 9], [[1, 2], [3], [4, 5, 6]], torch.tensor([0.1, 0.5, 0.9]))
            fn = torch.compile(step.compute, fullgraph=True, backend="eager") if compiled else step.compute
            fn(bucket(3), 4)
            outs.append((step.out_tok.clone(), step.out_lp.clone()))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.allclose(outs[0][1], outs[1][1], atol=1e-6)
    assert (outs[0][0] < 250).all()  # the vocab mask is inside the step


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
