"""memory_model: its arithmetic against the real model's parameter count, its prediction against peak memory
measured on CPU (fresh processes, as bench/memory.py measures), and its plan printed for every preset."""
import contextlib
import glob
import importlib.util
import io
import os
from types import SimpleNamespace

import pytest
import torch

import memory_model
import model as model_lib
import runtime
from conftest import ROOT

spec = importlib.util.spec_from_file_location("bench_memory_plan", os.path.join(ROOT, "bench", "memory.py"))
bench_memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_memory)

# Llama 3's vocabulary and a 1K-token response, the rest of the model shrunk: the terms that scale with V and T
# (embedding, its gradient and moments, the logits chunk) dominate, as they do at 1B / 3B.
SHAPES = dict(vocab_size=128256, dim=256, n_layers=2, n_seqs=2, prompt_len=64, response_len=1024, threads=1)
TOLERANCE = 0.25  # |predicted - measured| / measured: allocator slack, torch's own temporaries, AdamW's foreach buffers


@pytest.fixture(scope="module")
def measured():
    """Both cases in parallel fresh processes (each one thread): {case: measurement}."""
    procs = {case: bench_memory.start_measurement(case, 256, SHAPES) for case in ("rl", "midtrain")}
    return {case: bench_memory.finish(p) for case, p in procs.items()}


@pytest.mark.parametrize("case", ["rl", "midtrain"])
def test_prediction_matches_measured_peak(measured, case):
    m = measured[case]
    predicted = bench_memory.predicted_mb(case, 256, SHAPES)
    got = m["above_imports_mb"]  # the process's high-water mark above its RSS after the imports
    assert abs(predicted - got) <= TOLERANCE * got, f"{case}: predicted {predicted:.0f} MiB, measured {got:.0f} MiB"


@pytest.mark.parametrize("preset", ["llama3.2-1b", "llama3.2-3b", "micro"])
def test_param_count_is_the_models(preset):
    cfg = model_lib.LlamaConfig.from_preset(preset)
    with torch.device("meta"):  # shapes only: no memory for 3B
        net = model_lib.Llama(cfg)
    assert memory_model.param_count(cfg) == sum(p.numel() for p in net.parameters())


def test_kv_bytes_are_the_caches():
    cfg = model_lib.LlamaConfig.from_preset("test")
    cache = model_lib.KVCache(cfg.n_layers, 3, cfg.n_kv_heads, 10, cfg.head_dim, torch.bfloat16)
    held = sum(t.numel() * t.element_size() for t in cache.k + cache.v)
    assert memory_model.kv_bytes_per_token(cfg, bf16=True) * 3 * 10 == held


def test_terms_follow_the_knobs():
    cfg = model_lib.LlamaConfig.from_preset("llama3.2-3b")
    kw = dict(micro_batch=1, prompt_len=400, response_len=8192, rollout_rows=8, bf16=True, checkpointing=True,
              logits_chunk=256)
    ddp, fsdp = memory_model.rl_plan(cfg, **kw), memory_model.rl_plan(cfg, parallel="fsdp", world_size=8, **kw)
    assert fsdp.phases["update"]["optimizer"] * 8 == pytest.approx(ddp.phases["update"]["optimizer"])
    full = memory_model.rl_plan(cfg, **{**kw, "logits_chunk": 0, "checkpointing": False})
    assert full.phases["update"]["logits"] > 5 * ddp.phases["update"]["logits"]
    assert full.phases["update"]["activations"] > 5 * ddp.phases["update"]["activations"]
    pool = memory_model.rl_plan(cfg, **kw, kv_pool_bytes=20e9)  # the paged engine's hook: the budget sets in-flight
    assert pool.phases["rollout"]["KV cache"] == 20e9 and pool.rows_in_flight == int(20e9 // (112 * 1024 * 8592))


@pytest.mark.parametrize("param_dtype, autocast", [(torch.float32, False), (torch.float32, True),
                                                   (torch.bfloat16, False)])
def test_the_rollout_plan_counts_the_decode_weights(param_dtype, autocast):
    """The decode path's fused matrices (Llama.decode_weights: q/k/v and gate/up concatenated, every matrix cast to
    the compute dtype) are memory the rollout phase holds beside the parameters: the plan's terms equal what
    decode_weights allocates, for fp32 weights (ddp on CPU), fp32 under bf16 autocast (ddp on a GPU) and a bf16
    copy (FSDP's rollout copy)."""
    cfg = model_lib.LlamaConfig.from_preset("test", tie_embeddings=False)
    net = model_lib.Llama(cfg).to(param_dtype)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with ctx:
        blocks, lm_head = net.decode_weights()
    params = {p.data_ptr() for p in net.parameters()}
    made = sum(t.numel() * t.element_size() for t in [*(m for b in blocks for m in b), lm_head]
               if t.data_ptr() not in params)
    fsdp = param_dtype == torch.bfloat16  # the rollout copy is in the compute dtype
    plan = memory_model.rl_plan(cfg, micro_batch=1, prompt_len=8, response_len=8, rollout_rows=1,
                                bf16=autocast or fsdp, checkpointing=False, logits_chunk=0,
                                parallel="fsdp" if fsdp else "ddp", world_size=8 if fsdp else 1)
    held = plan.phases["rollout"]
    assert held.get("decode weights", 0) == made
    if fsdp:
        assert held["inference copy"] == 2 * memory_model.param_count(cfg)  # the copy itself, beside them


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "config", "*.py"))), ids=os.path.basename)
def test_every_preset_prints_a_plan_that_fits(path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        plan = bench_memory.preset_plan(path, 8, 80.0)
    text = out.getvalue()
    assert "memory per GPU" in text and "total" in text
    assert 0 < plan.peak() < 80 * memory_model.GB
    if plan.stage == "rl":
        assert "rows in flight" in text and plan.kv_capacity() >= plan.rows_in_flight


def test_stages_table_on_cpu():
    cfg = model_lib.LlamaConfig.from_preset("nano")
    c = SimpleNamespace(**{k: v for k, v in __import__("rl").DEFAULTS.items()})
    d = SimpleNamespace(device=torch.device("cpu"), world_size=1)
    text = runtime.memory_table("rl", cfg, c, d)
    assert "fp32" in text and "KV cache" in text and "256 rows in flight" in text


def test_bench_rl_case_eos_schedule():
    """bench/sample.py --rl: P(EOS) is 1/typical inside the zone and 0 after, whatever the other logits."""
    spec = importlib.util.spec_from_file_location("bench_sample_rl", os.path.join(ROOT, "bench", "sample.py"))
    bench_sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_sample)
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3
    t = torch.tensor([0, 47, 48, 100])
    bench_sample.eos_schedule(logits, t, eos=1, typical=16, zone=3.0)
    p_eos = logits.softmax(-1)[:, 1]
    assert torch.allclose(p_eos, torch.tensor([1 / 16, 1 / 16, 0.0, 0.0]), atol=1e-6)


def test_auto_checkpointing_decides_by_the_plan_without_it():
    """grad_checkpointing="auto": on exactly when the no-checkpointing plan's peak exceeds FIT_FRACTION of the
    device; the 1B RL preset's knobs (8 GPUs, fsdp, 2 + 8K tokens) fit an 80 GB card without it, not a 40 GB one."""
    import rl
    cfg = model_lib.LlamaConfig.from_preset("llama3.2-1b")
    c = SimpleNamespace(**{**rl.DEFAULTS, "dtype": "bfloat16", "parallel": "fsdp", "micro_batch": 2, "group_size": 16,
                           "prompts_per_step": 64, "max_response_len": 8192, "max_prompt_len": 400,
                           "rollout_batch_size": 32, "kl_coef": 0.0, "grad_checkpointing": "auto"})
    kw = dict(micro_batch=2, prompt_len=400, response_len=8192, rollout_rows=32, bf16=True, logits_chunk=256,
              parallel="fsdp", world_size=8)
    need = memory_model.rl_plan(cfg, checkpointing=False, **kw).peak()  # the same plan, built by hand
    with_ = memory_model.rl_plan(cfg, checkpointing=True, **kw).peak()
    assert with_ < need
    for gb, want in ((80, False), (40, True), (need / memory_model.FIT_FRACTION / 1e9 * 1.001, False),
                     (need / memory_model.FIT_FRACTION / 1e9 * 0.999, True)):
        on, line = memory_model.auto_checkpointing("rl", cfg, c, 8, "cuda", gb * memory_model.GB, "GPU x")
        assert on == want, (gb, line)
        assert f"{need / 1e9:.2f} GB without" in line and f"{with_ / 1e9:.2f} GB with" in line and "GPU x" in line
        # the plan printed at start is the decided one
        plan = memory_model.plan_for_knobs("rl", cfg, c, 8, "cuda", gb * memory_model.GB)
        assert plan.peak() == pytest.approx(with_ if want else need)


def test_rl_plans_the_kv_pool_rl_py_will_allocate():
    """kv_budget bounds the rollout engine's pool (GB, or a fraction of the card): the plan counts that pool, not
    every row at full length, and says how many rows of the longest stair it holds."""
    import rl
    cfg = model_lib.LlamaConfig.from_preset("llama3.2-1b")
    base = {**rl.DEFAULTS, "dtype": "bfloat16", "parallel": "fsdp", "group_size": 16, "prompts_per_step": 128,
            "max_response_len": 8192, "max_prompt_len": 400, "rollout_batch_size": 0}
    GB = memory_model.GB
    for kv, pool in ((0.0, None), (20, 20 * GB), (0.25, 0.25 * 80 * GB)):
        plan = memory_model.plan_for_knobs("rl", cfg, SimpleNamespace(**{**base, "kv_budget": kv}), 8, "cuda", 80 * GB,
                                           checkpointing=True)
        rows = plan.phases["rollout"]["KV cache"] / (32 * 1024 * (400 + 8192))  # 32 KiB a token
        if pool is None:
            assert rows == pytest.approx(128 * 16 / 8)  # every row of the rank's share at full length
        else:
            assert plan.phases["rollout"]["KV cache"] == pytest.approx(pool) and plan.rows_in_flight == int(rows)


def test_checkpointing_for_passes_a_decision_and_decides_auto_against_host_memory():
    cfg = model_lib.LlamaConfig.from_preset("nano")
    c = SimpleNamespace(**{k: v for k, v in __import__("rl").DEFAULTS.items()})
    d = SimpleNamespace(device=torch.device("cpu"), world_size=1)
    lines = []
    for given in (True, False):
        assert runtime.checkpointing_for("rl", cfg, SimpleNamespace(**{**vars(c), "grad_checkpointing": given}), d,
                                         lines.append) is given
    assert not lines  # a given decision prints nothing
    assert c.grad_checkpointing == "auto"  # the stages' default
    assert runtime.checkpointing_for("rl", cfg, c, d, lines.append) is False  # a ~1M model fits any host
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert lines[0].startswith("grad_checkpointing auto -> off") and f"{host / 1e9:.1f} GB of host memory" in lines[0]


@pytest.mark.parametrize("name", ["rl_octothinker_1b.py", "rl_octothinker_3b.py"])
def test_rl_presets_budget_is_the_largest_that_fits_80gb_without_checkpointing(name):
    """The presets' micro_batch_tokens: memory_model's largest for an 80 GB card (8 GPUs) without checkpointing, so
    grad_checkpointing="auto" stays off there; one more 1K tokens would not fit."""
    import copy

    import rl
    from configurator import configure
    ns = {**copy.deepcopy(rl.DEFAULTS), "max_response_len": None}
    c = SimpleNamespace(**configure(ns, [os.path.join(ROOT, "config", name)], verbose=False))
    cfg = memory_model.model_config_for(c.init_from)
    gpu = 80 * memory_model.GB
    assert c.micro_batch_tokens == memory_model.largest_micro_batch_tokens(cfg, c, 8, gpu)
    assert memory_model.auto_checkpointing("rl", cfg, c, 8, "cuda", gpu)[0] is False
    more = SimpleNamespace(**{**vars(c), "micro_batch_tokens": c.micro_batch_tokens + 1024})
    assert memory_model.auto_checkpointing("rl", cfg, more, 8, "cuda", gpu)[0] is True
    assert c.micro_batch_tokens >= c.max_prompt_len + max(c.max_response_len.values())  # a whole longest sequence


@pytest.mark.parametrize("name", ["rl_octothinker_1b.py", "rl_octothinker_3b.py"])
def test_keep_engine_auto_keeps_it_only_where_the_update_fits_beside_it(name):
    """keep_engine="auto": the RL preset's update (8 GPUs, fsdp) plus the kept engine (its 20 GB KV pool, the decode
    weights, the full-weight copy fsdp decodes from) does not fit an 80 GB card (the presets' micro-batch budgets
    are the largest that fit there alone), so rl.py frees the engine there as before; it fits 141 GB. The boundary
    is the update's peak plus exactly those three terms; unsharded (one GPU) there is no full-weight copy."""
    import copy

    import rl
    from configurator import configure
    ns = {**copy.deepcopy(rl.DEFAULTS), "max_response_len": None}
    c = SimpleNamespace(**configure(ns, [os.path.join(ROOT, "config", name)], verbose=False))
    cfg = memory_model.model_config_for(c.init_from)
    GB = memory_model.GB
    for world, copy_term in ((8, True), (1, False)):
        plan = memory_model.plan_for_knobs("rl", cfg, c, world, "cuda", 80 * GB, checkpointing=False)
        r = plan.phases["rollout"]
        kept = r["KV cache"] + r["decode weights"] + (r["inference copy"] if copy_term else 0)
        assert r["KV cache"] == pytest.approx(20 * GB)
        need = plan.total("update") + kept
        for gb, want in ((need / memory_model.FIT_FRACTION / GB * 1.001, True),
                         (need / memory_model.FIT_FRACTION / GB * 0.999, False)):
            keep, line = memory_model.auto_keep_engine(cfg, c, world, "cuda", gb * GB, False, "GPU x")
            assert keep is want, (world, gb, line)
            assert f"{need / GB:.2f} GB beside" in line and ("full-weight copy" in line) is copy_term
    assert memory_model.auto_keep_engine(cfg, c, 8, "cuda", 80 * GB, False)[0] is False
    assert memory_model.auto_keep_engine(cfg, c, 8, "cuda", 141 * GB, False)[0] is True


def test_keep_engine_for_passes_a_decision_and_decides_auto_against_host_memory():
    cfg = model_lib.LlamaConfig.from_preset("nano")
    c = SimpleNamespace(**{k: v for k, v in __import__("rl").DEFAULTS.items()})
    d = SimpleNamespace(device=torch.device("cpu"), world_size=1)
    lines = []
    for given in (True, False):
        assert runtime.keep_engine_for(cfg, SimpleNamespace(**{**vars(c), "keep_engine": given}), d, False,
                                       lines.append) is given
    assert not lines and c.keep_engine == "auto"
    assert runtime.keep_engine_for(cfg, c, d, False, lines.append) is True  # a ~1M model's engine fits any host
    assert lines[0].startswith("keep_engine auto -> on") and "host memory" in lines[0]
