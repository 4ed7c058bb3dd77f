"""compile=True (runtime.compile_model): each block compiled on its own, in place, and the chunked loss / log-probs'
per-chunk math. One graph serves every block (the count does not grow with depth, nor with gradient checkpointing),
losses and gradients are eager's, sampling with a KV cache runs the blocks eagerly (no graph, no recompile), RL's
update is eager's, and a compiled model saves the usual HF checkpoint. The tests compile with aot_eager (dynamo's
graphs and AOT autograd, without inductor's C++ build) or count graphs over dynamo's eager backend; the stages'
default is inductor (runtime.compile_backend). Whole runs: test_midtrain's 2 ranks (DDP, compiled, checkpointing)
against an eager process."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open

import conftest  # noqa: F401  first: it puts the repo root on sys.path
import model as model_lib  # noqa: E402
import runtime  # noqa: E402
import sample  # noqa: E402
import test_rl  # noqa: E402
from test_rl import tiny  # noqa: E402,F401  (a module fixture: tokenizer, random model)


class GraphCount:
    """A torch.compile backend that counts the graphs dynamo hands it (one per compile or recompile), then runs
    them through `then` (a registered backend)."""

    def __init__(self, then: str = "aot_eager"):
        self.n, self.then = 0, then

    def __call__(self, gm, example_inputs):
        self.n += 1
        return torch._dynamo.backends.registry.lookup_backend(self.then)(gm, example_inputs)


@pytest.fixture(autouse=True)
def fresh_dynamo(monkeypatch):
    """Every test starts from empty compile caches (dynamo keys them by code object, shared by every module and
    run in this process), with aot_eager as compile=True's backend."""
    monkeypatch.setenv("NANOOCTO_COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def twin_models(n_layers: int, checkpointing: bool = False):
    """(eager, compiled-to-be) with the same weights."""
    torch.manual_seed(0)
    cfg = model_lib.LlamaConfig.from_preset("test", n_layers=n_layers)
    eager, compiled = model_lib.Llama(cfg), model_lib.Llama(cfg)
    compiled.load_state_dict(eager.state_dict())
    eager.gradient_checkpointing = compiled.gradient_checkpointing = checkpointing
    return eager, compiled


def batch(T: int = 16):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 256, (2, T), generator=g), torch.randint(0, 256, (2, T), generator=g)
    y[:, :3] = -100  # prompt positions: 2 x (T - 3) log-prob targets
    return x, y


def train_step(net, x, y, ce_chunk: int, lp_chunk: int) -> tuple[float, list[torch.Tensor]]:
    """The mid-training loss and the RL log-probs (temperature, entropy with its gradient), both chunked, one
    backward -> (the loss, every parameter's gradient)."""
    net.zero_grad(set_to_none=True)
    _, loss = net(x, targets=y, chunk_size=ce_chunk)
    logp, ent = net(x, targets=y, logprobs=True, temperature=0.7, need_entropy=True, entropy_grad=True,
                    chunk_size=lp_chunk)
    (loss + logp.sum() * 0.1 + ent.sum() * 0.01).backward()
    return loss.item(), [p.grad.clone() for p in net.parameters()]


def test_one_graph_for_all_blocks_eager_gradients_and_hf_checkpoints(tmp_path):
    """From empty caches, a training step makes 4 graphs at any depth and with gradient checkpointing: one for all
    the blocks, one for each of lm_head's chunk functions (chunks of equal size here). The compiled model's loss
    and gradients are eager's (fp32 on CPU), and its checkpoint has the eager model's HF names and loads back."""
    x, y = batch()
    one_layer = twin_models(1)[1]
    count = GraphCount("eager")  # dynamo's graphs run as they are: the count without AOT autograd's cost
    runtime.compile_model(one_layer, count)
    train_step(one_layer, x, y, ce_chunk=8, lp_chunk=13)  # 32 and 26 tokens
    assert count.n == 4
    torch._dynamo.reset()
    eager, compiled = twin_models(3, checkpointing=True)
    count = GraphCount()
    runtime.compile_model(compiled, count)
    assert compiled.compile_backend is count
    (l_e, g_e), (l_c, g_c) = (train_step(m, x, y, ce_chunk=8, lp_chunk=13) for m in (eager, compiled))
    assert count.n == 4
    assert abs(l_e - l_c) < 1e-6
    assert max((a - b).abs().max().item() for a, b in zip(g_e, g_c)) < 1e-6
    for name, m in (("eager", eager), ("compiled", compiled)):
        model_lib.save_checkpoint(str(tmp_path / name / "ckpt-1"), m)
    keys = []
    for name in ("eager", "compiled"):
        with safe_open(str(tmp_path / name / "ckpt-1" / "model.safetensors"), "pt") as f:
            keys.append(sorted(f.keys()))
    assert keys[0] == keys[1] and all(k.startswith("model.") for k in keys[1])
    back = model_lib.Llama.from_pretrained(str(tmp_path / "compiled"))
    assert all(torch.equal(v, compiled.state_dict()[k]) for k, v in back.state_dict().items())


def test_sampling_runs_the_blocks_eagerly(tiny):
    """sample.generate (prefill and decode with a KV cache) on a compiled model: no graph is made (the compiled
    blocks would recompile at every call: 13 graphs for 12 tokens), and the samples are the eager model's."""
    eager = model_lib.Llama(tiny.net.config)
    eager.load_state_dict(tiny.net.state_dict())
    compiled = model_lib.Llama(tiny.net.config)
    compiled.load_state_dict(tiny.net.state_dict())
    count = GraphCount("eager")
    runtime.compile_model(compiled, count)
    x = torch.randint(0, tiny.net.config.vocab_size, (2, 12))
    compiled(x, targets=x, chunk_size=8)[1].backward()  # a training step first: its graphs exist
    made = count.n
    assert made > 0
    prompts = [tiny.tok.encode("Mia has", bos=True), tiny.tok.encode("Question: How many apples", bos=True)]
    kw = dict(n=2, max_new_tokens=12, temperature=1.0, seed=3)
    outs_c = sample.generate(compiled, tiny.tok, prompts, **kw)
    outs_e = sample.generate(eager, tiny.tok, prompts, **kw)
    assert count.n == made
    assert [o.tokens for o in outs_c] == [o.tokens for o in outs_e]
    assert all(torch.allclose(a.logprobs, b.logprobs, atol=1e-5) for a, b in zip(outs_c, outs_e))


def test_rl_update_compiled_matches_eager(monkeypatch):
    """policy_update.update_policy (old log-probs recomputed without grad, 2 epochs of the clipped loss, the reference
    model's KL, the entropy bonus; micro-batches of 1 and 2 sequences of varying lengths) with the policy and the
    reference compiled as rl.py compiles them == eager. The blocks' graphs: with grad, without (the recompute),
    the reference's, each also for a 1-sequence micro-batch; within dynamo's limit, so none ran eagerly."""
    monkeypatch.setattr(test_rl, "CONFIGS", test_rl.CONFIGS[-1:])  # token sums, KL and entropy: all the terms
    eager = test_rl.one_update(0, 1, SOLO)
    build, count = test_rl.Llama, GraphCount()
    blocks = set()

    def compiled_llama(cfg):
        net = build(cfg)
        runtime.compile_model(net, count, dynamic=True)
        blocks.add(type(net.layers[0]).forward.__code__)
        return net

    monkeypatch.setattr(test_rl, "Llama", compiled_llama)
    compiled = test_rl.one_update(0, 1, SOLO)
    for agg in eager:
        diff = max((eager[agg][k] - compiled[agg][k]).abs().max().item() for k in eager[agg])
        assert diff < 1e-6, (agg, diff)
    (code,) = blocks
    block_graphs = len(torch._dynamo.eval_frame._debug_get_cache_entry_list(code))
    assert 3 <= block_graphs < torch._dynamo.config.recompile_limit, block_graphs


SOLO = SimpleNamespace(ddp=False, rank=0, world_size=1)


def test_compile_backend_defaults_to_inductor(monkeypatch):
    monkeypatch.delenv("NANOOCTO_COMPILE_BACKEND")
    assert runtime.compile_backend() == "inductor"
