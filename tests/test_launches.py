"""
Kernel launches per decode step, counted on CPU: a TorchDispatchMode records every aten op the step dispatches
(ops that only make views or allocate launch nothing and are not counted), and every Triton launch is counted once
(octo_kernels.launch.run; the interpreter's own tensor traffic inside it is not). On a GPU each counted op is one
kernel launch (a matmul is one cuBLAS call), which is what bounds a small-batch decode step: the issue measured
16 per layer + 12 per step on an H200 against this count's 16 per layer before the fused projections.
"""
from __future__ import annotations

import importlib
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import octo_kernels
import sample
from decode_step import DecodeStep
from kvcache import PagedKVCache
from model import Llama, LlamaConfig
from test_decode_step import Row

pytestmark = pytest.mark.skipif(not octo_kernels.HAVE_TRITON or not octo_kernels.INTERPRET,
                                reason="needs triton and TRITON_INTERPRET=1 (set by conftest) to run kernels on CPU")

# aten ops that make views, allocate or answer a question about dtypes: no kernel runs
NO_LAUNCH = {"view", "_unsafe_view", "reshape", "_reshape_alias", "transpose", "t", "permute", "expand", "slice",
             "select", "as_strided", "unsqueeze", "squeeze", "detach", "alias", "split", "split_with_sizes",
             "split_with_sizes_copy", "chunk", "unbind", "lift_fresh", "empty", "empty_strided", "empty_like",
             "new_empty", "promote_types", "result_type"}
KERNEL_MODULES = ("rms_norm", "rope", "decode_attention", "sampling", "swiglu")
MAX_PER_LAYER = 10  # issue 24's bound (16 before the fused projections, the fused SwiGLU and the step's context lens)


class LaunchCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops, self.paused = Counter(), False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not self.paused and name not in NO_LAUNCH:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def counter(monkeypatch):
    """A LaunchCounter whose Triton launches count once each (the interpreter's work inside is not counted)."""
    monkeypatch.setenv(octo_kernels.ENV_VAR, "triton")
    c = LaunchCounter()
    for mod in KERNEL_MODULES:
        m = importlib.import_module(f"octo_kernels.{mod}")

        def run(launch, _orig=m.run):
            c.ops[f"triton:{launch.kernel.__name__}"] += 1
            c.paused = True
            try:
                _orig(launch)
            finally:
                c.paused = False
        monkeypatch.setattr(m, "run", run)
    return c


def step_launches(counter, n_layers: int, autocast: bool) -> Counter:
    """Launches of one static decode step (decode_step.DecodeStep.compute: rotary angles, slot mapping, the
    layers, lm_head, on-device greedy sampling, the output copies) of a micro-preset model with n_layers blocks,
    after a first step (which builds the fused weights once)."""
    torch.manual_seed(0)
    net = Llama(LlamaConfig.from_preset("micro", n_layers=n_layers)).eval()
    cache = PagedKVCache.for_model(net, 8, 16)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), ctx:
        step = DecodeStep(net, cache, 2, 2, graphs=False)
        step.begin(sample.make_sampler(0.0, 0, 1.0, True), "greedy", None, None)
        rows = [Row(), Row()]
        for k, (tok, n, blocks) in enumerate([(3, 5, [1, 2]), (4, 7, [3, 4])]):
            step.add(rows[k], tok, n, blocks, k, 0)
        for t in range(2):
            step.upload()
            counter.ops.clear()
            with counter:
                step.compute(2, 2)
            step.advance(np.array([r.slot for r in rows]), np.array([3, 4]))
    return Counter(counter.ops)


@pytest.mark.parametrize("autocast", [False, True])
def test_decode_step_launches_per_layer(counter, autocast):
    one, two = step_launches(counter, 1, autocast), step_launches(counter, 2, autocast)
    per_layer = sum(two.values()) - sum(one.values())
    assert per_layer <= MAX_PER_LAYER, f"{per_layer} launches per layer: {two - one}"
    layer = two - one
    assert layer["linear"] == 4 and layer["triton:_silu_mul_kernel"] == 1  # qkv, o, gate_up, down; SwiGLU fused
    # the step's own work (embedding, rotary angles, slot mapping, lm_head, final norm, sampling) stays bounded
    assert sum(one.values()) - per_layer <= 20, one


def test_decode_weights_follow_parameter_updates(monkeypatch):
    """The fused decode matrices are refreshed in place when a parameter changes (an optimizer step, a load), keep
    their addresses (a captured graph keeps reading them), and the kernel path then equals the torch path."""
    torch.manual_seed(0)
    net = Llama(LlamaConfig.from_preset("test")).eval()
    idx = torch.tensor([[5, 6, 7]])

    def last_logits(impl):
        monkeypatch.setenv(octo_kernels.ENV_VAR, impl)
        cache = PagedKVCache.for_model(net, 4, 16)
        cache.set_batch([[0]], [0], 1)
        with torch.no_grad():
            net(idx[:, :2], cache=cache)
            cache.advance(2)
            return net(idx[:, 2:], cache=cache)[0, -1]

    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = net.decode_weights()
        qkv = first[0][0][0]
        assert qkv.dtype == torch.bfloat16 and qkv.shape == (64 + 2 * 32, 64)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net(idx, targets=idx)[1].backward()
    opt.step()  # every parameter moves in place
    with torch.autocast("cpu", dtype=torch.bfloat16):
        again = net.decode_weights()
    assert again[0][0][0].data_ptr() == qkv.data_ptr()
    a = net.layers[0].self_attn
    assert torch.equal(again[0][0][0], torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).bfloat16())
    assert (last_logits("triton") - last_logits("torch")).abs().max().item() < 1e-4  # fp32: the fused ones
