"""
The CUDA code path, emulated on CPU end to end: NANOOCTO_KERNELS=triton runs every decode step through the Triton
kernels (under the interpreter, TRITON_INTERPRET=1 from conftest) with the dtypes a GPU run has: fp32 master weights
under bf16 autocast (midtrain's eval sample, RL's rollouts and its eval) and bf16 / fp16 weights (sample.py,
eval_math.py). A dtype mismatch or a shape error anywhere fails; a spy records the dtypes each kernel saw, so every
test also checks it ran the kernels with the GPU's dtypes (what tests/test_gpu_compile.py compiles).

The interpreter is slow (~50 kernel programs a second): a 2-layer model, a few tokens.
"""
from __future__ import annotations

import copy
import importlib
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import eval_math
import octo_kernels
import midtrain
import rl
import sample
from conftest import ROOT
from data.tokenizer import Tokenizer
from kvcache import PagedKVCache
import model as model_lib
from model import KVCache, Llama, LlamaConfig, save_checkpoint

pytestmark = pytest.mark.skipif(not octo_kernels.HAVE_TRITON or not octo_kernels.INTERPRET,
                                reason="needs triton and TRITON_INTERPRET=1 (set by conftest) to run kernels on CPU")

BF16, F32 = torch.bfloat16, torch.float32
WORDS = "Question: Mia has 3 apples and buys 4 more. How many apples? Answer: 3 + 4 = 7. The answer is \\boxed{7}."


def gpu_autocast():  # what runtime.autocast_for gives a CUDA run, on the CPU
    return torch.autocast("cpu", dtype=BF16)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda_path")
    tok = Tokenizer.train([WORDS] * 3, vocab_size=290)
    cfg = LlamaConfig.from_preset("test", vocab_size=tok.vocab_size, bos_id=tok.bos_id, eos_id=tok.eos_id,
                                  max_seq_len=1024)  # the few-shot eval prompt is a few hundred tokens
    torch.manual_seed(0)
    net = Llama(cfg).eval()
    with torch.no_grad():  # peakier distributions than the init's, so log-prob gaps are visible
        for p in net.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.15)
    save_checkpoint(str(root / "base" / "ckpt-000000"), net, tokenizer=tok)
    with open(root / "prompts.jsonl", "w") as f:
        for i in range(8):
            f.write(json.dumps({"problem": f"Mia has {i} apples and buys 2 more. How many apples?",
                                "solution": f"#### {i + 2}"}) + "\n")
    with open(root / "heldout.jsonl", "w") as f:  # eval_math's "synth" benchmark file
        for i in range(2):
            f.write(json.dumps({"question": f"Mia has {i} apples and buys 1 more. How many?", "answer": str(i + 1)})
                    + "\n")
    return root, tok, net


@pytest.fixture
def seen(monkeypatch):
    """Force the kernel path and record, per kernel call, the dtypes it was given (and the residual stream's dtype
    that fused norms returned)."""
    monkeypatch.setenv(octo_kernels.ENV_VAR, "triton")
    calls = set()

    def spy(name, fn, describe):
        def wrapped(*a, **kw):
            out = fn(*a, **kw)
            calls.add((name, *describe(a, out)))
            return out
        monkeypatch.setattr(octo_kernels, name, wrapped)
        for mod in ("octo_kernels.rope", "octo_kernels.decode_attention"):  # the paged cache's entry points call these
            if hasattr(importlib.import_module(mod), name):
                monkeypatch.setattr(importlib.import_module(mod), name, wrapped)

    spy("rms_norm_triton", octo_kernels.rms_norm_triton,
        lambda a, out: (a[0].dtype, a[1].dtype, a[3].dtype if a[3] is not None else None,
                        out[1].dtype if isinstance(out, tuple) else None))
    spy("rope_cache_update_triton", octo_kernels.rope_cache_update_triton, lambda a, out: (a[0].dtype, a[5].dtype))
    spy("decode_attention_triton", octo_kernels.decode_attention_triton, lambda a, out: (a[0].dtype, a[1].dtype))
    spy("sample_logits_triton", octo_kernels.sample_logits_triton, lambda a, out: (a[0].dtype,))
    return calls


def kinds(calls, name):
    return {c[1:] for c in calls if c[0] == name}


def assert_autocast_dtypes(calls):
    """fp32 weights under bf16 autocast: bf16 q and a bf16 cache (KVCache.for_model's compute dtype), fp32 norm
    weights, and an fp32 residual stream out of every fused norm (as in training)."""
    assert kinds(calls, "rope_cache_update_triton") == {(BF16, BF16)}
    assert kinds(calls, "decode_attention_triton") == {(BF16, BF16)}
    norms = kinds(calls, "rms_norm_triton")
    fused = {c for c in norms if c[2] is not None}
    assert fused and all(w == F32 and stream == F32 for _, w, _, stream in fused), norms
    assert kinds(calls, "sample_logits_triton") == {(F32,)}  # sample.py upcasts the [B, V] logits once


def test_kv_cache_takes_the_compute_dtype(tiny):
    _, _, net = tiny
    assert KVCache.for_model(net, 1, 4).k[0].dtype == F32
    with gpu_autocast():
        assert KVCache.for_model(net, 1, 4).k[0].dtype == BF16
        assert KVCache.for_model(net, 1, 4, dtype=F32).k[0].dtype == F32  # an explicit dtype wins
        assert PagedKVCache.for_model(net, 2, 4).k[0].dtype == BF16  # sample.py's block pool: the same rule


def test_midtrain_greedy_sample_under_autocast(tiny, seen):
    _, tok, net = tiny
    c = type("C", (), {"sample_prompt": "Question: Mia has", "sample_tokens": 5})()
    text = midtrain.greedy_sample(net, tok, c, gpu_autocast)
    assert isinstance(text, str)
    assert_autocast_dtypes(seen)


def test_sampler_matches_trainer_under_autocast(tiny, seen, monkeypatch):
    """The sampler's log-probs (kernel decode path) against the trainer's forward over the same tokens, both
    under bf16 autocast over fp32 weights: within bf16 rounding of it on both decode paths. Measured max abs with
    the contiguous cache: kernels 0.015, torch 0.024 (0.032 for the kernels with the residual stream rounded to
    bf16 at every add and an fp32 cache). With the paged engine: kernels 0.023 (other tokens: the kernel
    sampler's key now folds in each row's step), torch 0.015 (prompts are prefilled one sequence at a time, the
    trainer's own shapes here, so no left padding); on greedy tokens, which both engines share, the kernel path is
    at 0.031 before and after. With the prompts prefilled together (right-padded) and the kernel path through the
    static decode step over the fused projections (issue 24): kernels 0.024, torch 0.017."""
    _, tok, net = tiny
    prompts = [tok.encode(p, bos=True) for p in ("Mia has", "Question: How many apples", "Answer:")]

    def gap(impl):
        monkeypatch.setenv(octo_kernels.ENV_VAR, impl)
        with torch.no_grad(), gpu_autocast():
            outs = sample.generate(net, tok, prompts, max_new_tokens=8, temperature=1.0, seed=4)
            worst = 0.0
            for o in outs:
                ids = torch.tensor([o.prompt_tokens + o.tokens])
                logits = net(ids)[0, len(o.prompt_tokens) - 1:-1].float()
                lp = torch.log_softmax(logits[:, :tok.vocab_size], -1)[torch.arange(len(o.tokens)), o.tokens]
                worst = max(worst, (lp - o.logprobs).abs().max().item())
        return worst

    g_torch, g_kernels = gap("torch"), gap("triton")
    assert g_kernels < 0.03 and g_torch < 0.03, (g_kernels, g_torch)
    assert_autocast_dtypes(seen)


def test_rl_steps_with_rollouts_and_eval_under_autocast_keep_or_free_the_engine(tiny, tmp_path, seen, monkeypatch):
    """Two GRPO steps on the kernel path. keep_engine=False frees the rollouts' static-step engine for the update
    (once a step); keep_engine=True keeps it: step 2's rollouts and the last evaluation run on step 1's engine (its
    decode weights refreshed in place after the update; an evaluation then frees it), and the two runs' steps and
    weights are the same."""
    root, _, _ = tiny
    released, release = [], sample.release_engine
    monkeypatch.setattr(sample, "release_engine", lambda m: (released.append("_decode_engine" in m.__dict__),
                                                             release(m)))
    engines, generate = [], sample.generate  # (rows, the engine's step object) after each generate call

    def spy(model, tok, prompts, **kw):
        out = generate(model, tok, prompts, **kw)
        engines.append((len(prompts) * kw.get("n", 1), model.__dict__["_decode_engine"][1]))
        return out
    monkeypatch.setattr(sample, "generate", spy)
    runs = {}
    for keep in (False, True):
        released.clear(), engines.clear()
        args = [f"--init_from={root / 'base'}", f"--out_dir={tmp_path / str(keep)}",
                f"--prompt_file={root / 'prompts.jsonl'}", "--question_field=problem", "--answer_field=solution",
                "--template=Q: {question}\nA:", "--max_prompt_len=64", "--max_response_len=3", "--group_size=4",
                "--prompts_per_step=2", "--lr=1e-2", "--max_steps=2", "--log_interval=0", "--ckpt_interval=0",
                "--micro_batch=8", "--dtype=bfloat16", "--eval_benchmarks=synth", f"--eval_data_dir={root}",
                "--eval_limit=2", "--eval_max_new_tokens=3", f"--keep_engine={keep}",
                f"--eval_interval={2 if keep else 0}"]
        res = rl.main(args, reward_fn=lambda comp, ex: 1.0 if comp.tokens[0] % 2 == 0 else -1.0)
        assert res["steps"] == 2
        rows = [json.loads(line) for line in open(tmp_path / str(keep) / "metrics.jsonl")]
        runs[keep] = [{k: v for k, v in r.items() if not k.endswith("_s") and k != "elapsed"}
                      for r in rows if r["kind"] == "train"]
        assert all(math.isfinite(r["logprob_mismatch_mean"]) for r in runs[keep])
        if keep:
            # evaluations (before and after) free their engine, sized for their own rows: the rollouts keep theirs
            assert released == [True, True] and [r["kind"] for r in rows].count("eval") == 2
            rollouts = [e for rows_, e in engines if rows_ == 8]
            assert len(rollouts) == 2 and rollouts[0] is rollouts[1] is engines[-1][1]
        else:
            assert released == [True, True]
    assert runs[True] == runs[False] and runs[True][1]["grad_norm"] > 0
    w = [model_lib.load_checkpoint(str(tmp_path / str(k)))[0].state_dict() for k in (False, True)]
    assert all(torch.equal(w[0][k], w[1][k]) for k in w[0])
    assert_autocast_dtypes(seen)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_generate_and_evaluate_with_low_precision_weights(tiny, seen, dtype):
    root, tok, net = tiny
    low = copy.deepcopy(net).to(dtype)
    prompts = [tok.encode("Mia has", bos=True), tok.encode("Question: How many", bos=True)]
    greedy = sample.generate(low, tok, prompts, max_new_tokens=4, temperature=0.0)
    drawn = sample.generate(low, tok, prompts, n=2, max_new_tokens=4, temperature=0.8, seed=1)
    for o in greedy + drawn:
        assert o.logprobs.dtype == F32 and torch.isfinite(o.logprobs).all() and len(o.tokens) == len(o.logprobs)
    rep = eval_math.evaluate(low, tok, ["synth"], data_dir=str(root), limit=2, max_new_tokens=3, progress=False)
    assert rep["benchmarks"]["synth"]["count"] == 2
    assert kinds(seen, "rope_cache_update_triton") == {(dtype, dtype)}
    assert kinds(seen, "decode_attention_triton") == {(dtype, dtype)}
    assert {c[:2] for c in kinds(seen, "rms_norm_triton")} == {(dtype, dtype)}
    assert kinds(seen, "sample_logits_triton") == {(F32,)}


def test_gpu_check_without_cuda_says_so_and_exits_0():
    r = subprocess.run([sys.executable, "bench/gpu_check.py"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no CUDA device" in r.stdout and "PASS" not in r.stdout and "FAIL" not in r.stdout
