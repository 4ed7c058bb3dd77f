"""midtrain.py: LR schedule, config errors, resume, DDP equivalence, NaN stop, checkpoints, the built-in chain."""
from __future__ import annotations

import functools
import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import midtrain
import model as model_lib
from conftest import ROOT
from data.shards import write_shard
from data.tokenizer import Tokenizer

SEQ, MICRO, BATCH = 32, 2, 128  # 128 tokens per step = 1 process x 2 micro-batches x 2 accum, or 2 ranks x 1


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 300-token BPE and two shard sources of structured random tokens (so the loss can fall)."""
    root = tmp_path_factory.mktemp("mt_data")
    letters = np.random.default_rng(1).integers(97, 123, size=(400, 5))
    words = " ".join(bytes(w.tolist()).decode() for w in letters)
    tok = Tokenizer.train([words, "Question: what is 3 + 4? Answer: 7."], 300)
    tok.save(str(root / "tok"))
    rng = np.random.default_rng(0)
    for name, period in (("a", 7), ("b", 11)):
        base = rng.integers(0, 256, size=period)
        for split, n in (("train", 20_000), ("val", 1_000)):
            noise = rng.integers(0, 256, size=n)
            toks = np.where(rng.random(n) < 0.7, np.tile(base, n // period + 1)[:n], noise)
            write_shard(str(root / name / f"{split}_000000.bin"), toks, tok.vocab_size)
    return root


def args(data, out, *extra, steps=6):
    return [f"--tokenizer={data / 'tok'}", f"--data_root={data}", "--synth_dir=", "--init_from=scratch:test",
            "--stage=stable", f"--stable_out_dir={out}", "--stable_mixture={'a': 0.6, 'b': 0.4}",
            f"--seq_len={SEQ}", f"--micro_batch={MICRO}", f"--total_batch_tokens={BATCH}", "--warmup_tokens=256",
            f"--stable_tokens={steps * BATCH - 256}", "--lr=0.01", "--eval_interval=0", "--log_interval=0",
            "--ckpt_interval=0", "--eval_batches=2", "--eval_sources=[]", *extra]


def decay_args(data, out, *extra, steps=6):
    """A decay run (cosine LR changes every step) straight from scratch weights."""
    return args(data, out, "--stage=decay", f"--decay_out_dir={out}", "--decay_init_from=scratch:test",
                "--decay_mixture={'a': 0.5, 'b': 0.5}", f"--decay_tokens={steps * BATCH}", "--ckpt_interval=1",
                "--keep_last_n=2", *extra)


def losses(out) -> dict:
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    train = [r for r in rows if r["kind"] == "train"]
    assert len({r["step"] for r in train}) == len(train), "a step was logged twice"
    return {r["step"]: r["loss"] for r in train}


def ckpts(out) -> list[str]:
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "ckpt-*")))


# ---- the schedule -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", midtrain.DECAY_SHAPES)
def test_get_lr_boundaries(shape):
    lr, w, s, d, r = 1e-3, 100, 300, 200, 0.1
    f = lambda t: midtrain.get_lr(t, lr, w, s, d, r, shape)  # noqa: E731
    assert f(0) == 0.0 and f(50) == pytest.approx(lr / 2) and f(w) == pytest.approx(lr)  # warmup
    assert f(w + 1) == f(w + s) == lr  # stable
    assert f(w + s + d) == pytest.approx(lr * r) and f(w + s + d + 10_000) == pytest.approx(lr * r)  # min reached
    decay = [f(w + s + i) for i in range(0, d + 1, 10)]
    assert all(a > b for a, b in zip(decay, decay[1:])), "the decay must fall strictly"
    mid = {"cosine": 0.5, "linear": 0.5, "1-sqrt": 1 - math.sqrt(0.5)}[shape]
    assert f(w + s + d / 2) == pytest.approx(lr * r + (lr - lr * r) * mid)
    # a stable-only run stays at lr; a decay-only run starts at lr
    assert midtrain.get_lr(10**12, lr, 0, 500, 0, r, shape) == lr
    assert midtrain.get_lr(0, lr, 0, 0, d, r, shape) == pytest.approx(lr)
    with pytest.raises(ValueError, match="decay_shape"):
        midtrain.get_lr(0, lr, 0, 0, d, r, "exp")


def test_decay_warmup_ramps_the_decay_in():
    lr, d, w, r = 1e-3, 1000, 100, 0.1
    plain = lambda t: midtrain.get_lr(t, lr, 0, 0, d, r, "cosine")  # noqa: E731
    ramped = lambda t: midtrain.get_lr(t, lr, 0, 0, d, r, "cosine", decay_warmup=w)  # noqa: E731
    assert ramped(0) == 0.0 and ramped(25) == pytest.approx(plain(25) / 4) and ramped(w) == pytest.approx(plain(w))
    assert all(ramped(t) == plain(t) for t in (w + 1, d // 2, d, 2 * d))  # the decay is unchanged after the ramp
    # it belongs to the decay: a stable run's warmup and constant phase are untouched
    assert midtrain.get_lr(50, lr, 100, 300, 0, r, "cosine", decay_warmup=w) == pytest.approx(lr / 2)
    assert midtrain.get_lr(399, lr, 100, 300, d, r, "cosine", decay_warmup=w) == lr
    assert midtrain.get_lr(450, lr, 100, 300, d, r, "cosine", decay_warmup=w) == pytest.approx(plain(50) / 2)


# ---- config errors ------------------------------------------------------------------------------------------------

def test_bad_config_errors_early(data, tmp_path):
    synth = tmp_path / "synth_should_not_appear"
    with pytest.raises(ValueError, match="unknown config key 'stable_tokenz'"):
        midtrain.main(args(data, tmp_path / "o") + ["--stable_tokenz=5"])
    with pytest.raises(ValueError, match="total_batch_tokens=100 does not split into whole sequences"):
        midtrain.main(args(data, tmp_path / "o") + ["--total_batch_tokens=100", f"--synth_dir={synth}"])
    assert not synth.exists(), "the batch error must come before any data is built"
    with pytest.raises(ValueError, match="unknown model preset 'nope'"):
        midtrain.main(args(data, tmp_path / "o") + ["--init_from=scratch:nope"])
    with pytest.raises(ValueError, match="decay_shape"):
        midtrain.main(args(data, tmp_path / "o") + ["--decay_shape=exp"])
    with pytest.raises(ValueError, match="stable_mixture weights"):
        midtrain.main(args(data, tmp_path / "o") + ["--stable_mixture={'a': -1.0}"])
    with pytest.raises(ValueError, match="seq_len=4096 exceeds"):
        midtrain.main(args(data, tmp_path / "o") + ["--seq_len=4096", "--total_batch_tokens=8192"])
    with pytest.raises(ValueError, match="eval_batches must be >= 1 when eval_interval > 0"):
        midtrain.main(args(data, tmp_path / "o") + ["--eval_interval=2", "--eval_batches=0"])
    with pytest.raises(ValueError, match="decay_warmup_tokens=1000 exceeds decay_tokens=768"):
        midtrain.main(decay_args(data, tmp_path / "o") + ["--decay_warmup_tokens=1000"])
    assert not (tmp_path / "o").exists()


def test_out_dir_holds_both_runs_and_per_stage_knobs_win(tmp_path):
    from configurator import configure
    from types import SimpleNamespace

    def dirs(*flags):
        c = SimpleNamespace(**configure(dict(midtrain.DEFAULTS), list(flags), verbose=False))
        midtrain.check_config(c, world_size=1)
        return [midtrain.stage_plan(c, s).out_dir for s in ("stable", "decay")] + [midtrain.stage_plan(c, "decay")
                                                                                   .init_from]

    assert [midtrain.stage_plan(SimpleNamespace(**midtrain.DEFAULTS), s).out_dir for s in ("stable", "decay")] == [
        os.path.join("out", "midtrain", "stable"), "out/midtrain"]  # rl.py / eval / sample read out/midtrain
    run = str(tmp_path / "run")
    assert dirs(f"--out_dir={run}") == [os.path.join(run, "stable"), run, os.path.join(run, "stable")]
    other = str(tmp_path / "elsewhere")
    assert dirs(f"--out_dir={run}", f"--stable_out_dir={other}") == [other, run, other]
    with pytest.raises(ValueError, match="out_dir is empty"):
        dirs("--out_dir=")
    with pytest.raises(ValueError, match="would both write"):
        dirs(f"--out_dir={run}", f"--stable_out_dir={run}")


def test_batch_adapts_to_the_world_size():
    """The default batch (16 sequences of 256 per step, micro_batch 16) runs on 1, 2, 4 and 8 ranks with the same
    global batch; a share that micro_batch does not divide, or tokens that do not split, is a UserError."""
    c = midtrain.DEFAULTS
    got = {w: midtrain.resolve_batch(c["total_batch_tokens"], c["seq_len"], c["micro_batch"], w) for w in (1, 2, 4, 8)}
    assert got == {1: (16, 1), 2: (8, 1), 4: (4, 1), 8: (2, 1)}
    assert all(w * m * a * c["seq_len"] == c["total_batch_tokens"] for w, (m, a) in got.items())
    assert midtrain.resolve_batch(512 * 8192, 8192, 2, 8) == (2, 32)  # the paper presets, as before
    assert midtrain.resolve_batch(512 * 8192, 8192, 2, 2) == (2, 128)
    with pytest.raises(ValueError, match=r"micro_batch=3 does not divide a rank's 16 sequences.*--micro_batch=2"):
        midtrain.resolve_batch(4096, 256, 3, 1)
    with pytest.raises(ValueError, match=r"total_batch_tokens=4096 .* seq_len \* world_size = 256 \* 32 = 8192"):
        midtrain.resolve_batch(4096, 256, 16, 32)


# ---- resume -------------------------------------------------------------------------------------------------------

def test_resume_continues_the_same_trajectory(data, tmp_path):
    decay = functools.partial(decay_args, data)
    full, parts = tmp_path / "full", tmp_path / "parts"
    midtrain.main(decay(full))
    midtrain.main(decay(parts) + ["--stop_at_step=3"])
    assert ckpts(parts) == ["ckpt-000002", "ckpt-000003"] and len(losses(parts)) == 3
    with pytest.raises(ValueError, match="already holds a run"):
        midtrain.main(decay(parts))  # no silent overwrite
    midtrain.main(decay(parts) + ["--resume=True"])
    a, b = losses(full), losses(parts)
    assert list(a) == list(b) == [1, 2, 3, 4, 5, 6]
    assert a == b, f"resumed trajectory differs: {a} vs {b}"
    assert a[6] < a[1]
    assert ckpts(full) == ckpts(parts) == ["ckpt-000005", "ckpt-000006"]  # keep_last_n pruned the rest
    sd_full = model_lib.load_checkpoint(str(full))[0].state_dict()
    sd_parts = model_lib.load_checkpoint(str(parts))[0].state_dict()
    assert all(torch.equal(sd_full[k], sd_parts[k]) for k in sd_full)
    # resuming a finished run does nothing
    midtrain.main(decay(parts) + ["--resume=True"])
    assert losses(parts) == b


def test_resume_with_new_batch_size_and_optimizer_knobs(data, tmp_path):
    """A resume takes the rest of the token budget in steps of the new size along the same token-keyed LR curve,
    and the loaded AdamW moments run under the new betas / weight decay."""
    out = tmp_path / "run"
    ramp = "--decay_warmup_tokens=256"  # 2 steps of 128 tokens
    midtrain.main(decay_args(data, out, ramp, "--stop_at_step=2"))
    # a save killed between its two renames: the checkpoint `latest` names was moved aside; and a half-written one
    os.rename(out / "ckpt-000002", out / "ckpt-000002.old-424242")
    (out / "ckpt-000003.tmp-424242").mkdir()
    (out / "ckpt-000003.tmp-424242" / "model.safetensors").write_bytes(b"")
    midtrain.main(decay_args(data, out, ramp, "--resume=True", f"--total_batch_tokens={2 * BATCH}",
                             "--weight_decay=0.05", "--beta1=0.8", "--beta2=0.5"))
    rows = [json.loads(line) for line in open(out / "metrics.jsonl") if '"train"' in line]
    assert [(r["step"], r["tokens"]) for r in rows] == [(1, 128), (2, 256), (3, 512), (4, 768)]
    for r in rows:  # the LR of a step is the schedule's value at the tokens seen once it is done
        assert r["lr"] == pytest.approx(midtrain.get_lr(r["tokens"], 0.01, 0, 0, 6 * BATCH, decay_warmup=256))
    assert rows[0]["lr"] < rows[1]["lr"] and rows[-1]["lr"] == pytest.approx(0.001)
    assert ckpts(out) == ["ckpt-000003", "ckpt-000004"]  # the stale temp folder is gone; keep_last_n pruned 2
    _, _, state = model_lib.load_checkpoint(str(out), load_state=True)
    assert (state["step"], state["tokens"]) == (4, 6 * BATCH)
    groups = [(g["weight_decay"], g["betas"]) for g in state["optimizer"]["param_groups"]]
    assert groups == [(0.05, (0.8, 0.5)), (0.0, (0.8, 0.5))]  # decay on the matrices' group only, as configured
    assert all(s["step"] == 4 for s in state["optimizer"]["state"].values())  # the moments were continued


# ---- the gradient of a step ----------------------------------------------------------------------------------------

def test_accumulated_gradient_is_the_mean_over_the_step(data, tmp_path):
    """One step of 2 accumulated micro-batches of 2 sequences has the gradient of one micro-batch of 4 (the same
    sequences: the loader's stream is global). AdamW is scale-invariant, so only the gradient itself shows a
    missing / grad_accum: the logged pre-clip grad_norm would double."""
    accum, whole = tmp_path / "accum", tmp_path / "whole"
    midtrain.main(args(data, accum, "--stop_at_step=1", steps=3))
    midtrain.main(args(data, whole, "--stop_at_step=1", f"--micro_batch={2 * MICRO}", steps=3))
    a, b = (next(json.loads(line) for line in open(o / "metrics.jsonl") if '"train"' in line) for o in (accum, whole))
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4), (a["grad_norm"], b["grad_norm"])


# ---- DDP ----------------------------------------------------------------------------------------------------------

def test_two_ranks_compiled_match_one_process_with_accumulation(data, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    # 3 eval batches per source in all: 3 on one process, 2 + 1 on two ranks (a rank's second is padding)
    extra = ("--eval_interval=2", "--eval_batches=3", "--sample_tokens=4", "--sample_prompt=Question: 3 + 4?")
    midtrain.main(args(data, one, *extra, steps=4))  # 1 process: 2 micro-steps of 2 sequences
    # the 2 ranks also compile (per block, through aot_eager: no C++ build) and checkpoint activations: the same
    # math as the eager process (the eval's sample decodes eagerly)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NANOOCTO_COMPILE_BACKEND": "aot_eager"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "midtrain.py",
           *args(data, two, *extra, "--compile=True", "--grad_checkpointing=True", steps=4)]  # 1 micro-step each
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(2 x 2 x 32 x 1 accum, ddp)" in proc.stderr + proc.stdout
    a, b = losses(one), losses(two)
    assert list(a) == list(b) == [1, 2, 3, 4]
    for step in a:
        assert abs(a[step] - b[step]) < 1e-5, (step, a[step], b[step])
    evals = [json.loads(line) for line in open(two / "metrics.jsonl") if '"eval"' in line]
    assert [e["step"] for e in evals] == [0, 2, 4] and all(set(e["val"]) == {"a", "b"} for e in evals)
    assert all(isinstance(e["sample"], str) for e in evals)
    # the validation loss is over the same eval_batches whatever the number of ranks
    evals_one = [json.loads(line) for line in open(one / "metrics.jsonl") if '"eval"' in line]
    for e1, e2 in zip(evals_one, evals):
        assert all(abs(e1["val"][k] - e2["val"][k]) < 1e-5 for k in e1["val"]), (e1["val"], e2["val"])
    w1 = model_lib.load_checkpoint(str(one))[0].state_dict()
    w2 = model_lib.load_checkpoint(str(two))[0].state_dict()
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)


# ---- NaN ----------------------------------------------------------------------------------------------------------

def test_nan_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path, monkeypatch):
    forward, calls = model_lib.Llama.forward, [0]

    def poisoned(self, idx, targets=None, **kw):
        out = forward(self, idx, targets=targets, **kw)
        if targets is None or not self.training:
            return out
        calls[0] += 1
        return (out[0], out[1] * float("nan")) if calls[0] > 6 else out  # micro-steps 7, 8 = step 4

    monkeypatch.setattr(model_lib.Llama, "forward", poisoned)
    out = tmp_path / "nan"
    # a one-rank group stands in for torchrun's: main must leave none behind on this exit either (issue 28)
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    with pytest.raises(SystemExit, match=r"step 4: loss nan is not finite.*last good checkpoint is .*ckpt-000003"):
        midtrain.main(args(data, out, "--ckpt_interval=1", "--keep_last_n=0"))
    assert not torch.distributed.is_initialized()
    assert ckpts(out) == ["ckpt-000001", "ckpt-000002", "ckpt-000003"]
    assert model_lib.resolve_checkpoint(str(out)).endswith("ckpt-000003")
    monkeypatch.setattr(model_lib.Llama, "forward", forward)
    m, _, state = model_lib.load_checkpoint(str(out), load_state=True)
    assert state["step"] == 3 and all(torch.isfinite(p).all() for p in m.parameters())


def test_mfu_against_the_datasheet_and_the_measured_matmul_peak(data, tmp_path, monkeypatch, capsys):
    """On a GPU with a datasheet peak, MFU is printed and logged against it and against a matmul measured at start
    (runtime.matmul_peak_flops). A datasheet 4x the measured peak stands in for the GPU here."""
    matmul = midtrain.matmul_peak_flops(torch.device("cpu"), torch.float32)
    monkeypatch.setattr(midtrain, "peak_flops", lambda dev, dtype: (4 * matmul, "a datasheet"))
    out = tmp_path / "mfu"
    midtrain.main(args(data, out, "--log_interval=1", steps=3))
    printed = capsys.readouterr().out
    assert "matmul peak:" in printed and "(25% of the datasheet's" in printed and "of the matmul peak)" in printed
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    train = [r for r in rows if r["kind"] == "train"]
    assert len(train) == 3 and all(r["mfu_matmul"] == pytest.approx(4 * r["mfu"], abs=3e-4) for r in train)


# ---- checkpoint format ---------------------------------------------------------------------------------------------

def test_checkpoint_loads_with_model_and_transformers(data, tmp_path):
    from bench.hf_peer import load_llama

    out = tmp_path / "ck"
    midtrain.main(args(data, out, steps=2))
    path = model_lib.resolve_checkpoint(str(out))
    ours, tok, state = model_lib.load_checkpoint(path, load_state=True)
    assert tok.vocab_size == ours.config.vocab_size == 300
    assert state["step"] == 2 and state["tokens"] == 2 * BATCH and state["stage"] == "stable"
    assert {"optimizer", "loader", "rng"} <= set(state) and state["loader"]["sequences"] == 2 * BATCH // SEQ
    run_config = json.load(open(os.path.join(path, "run_config.json")))
    assert run_config["lr"] == 0.01 and run_config["run"]["grad_accum"] == 2
    hf = load_llama(path)
    idx = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        assert torch.allclose(ours.eval()(idx), hf(idx).logits, atol=1e-4)


# ---- the built-in chain --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fresh", [False, True])
def test_default_chain_on_a_tiny_synthetic_world(tmp_path, fresh):
    synth, stable, final = tmp_path / "synth", tmp_path / "stable", tmp_path / "midtrain"
    argv = [f"--synth_dir={synth}", "--synth_scale=0.02", "--synth_vocab_size=300", f"--tokenizer={synth / 'tok'}",
            f"--data_root={synth / 'shards'}", "--init_from=scratch:test", f"--stable_out_dir={stable}",
            f"--decay_out_dir={final}", "--seq_len=32", "--micro_batch=2", f"--total_batch_tokens={BATCH}",
            "--warmup_tokens=128", "--stable_tokens=384", "--decay_tokens=384", "--eval_interval=100",
            "--eval_batches=1", "--sample_tokens=4", "--log_interval=0", "--lr=0.01", f"--fresh_optimizer={fresh}"]
    midtrain.main(argv)
    assert sorted(os.listdir(synth / "shards")) == sorted([*midtrain.SYNTH_SOURCES, "synth_build.json"])
    s_ckpt, d_ckpt = model_lib.resolve_checkpoint(str(stable)), model_lib.resolve_checkpoint(str(final))
    assert s_ckpt.endswith("ckpt-000004") and d_ckpt.endswith("ckpt-000003")
    run = json.load(open(os.path.join(d_ckpt, "run_config.json")))["run"]
    assert run["stage"] == "decay" and run["init_from"] == str(stable)
    assert set(run["mixture"]) == set(midtrain.DEFAULTS["decay_mixture"])
    d_state = torch.load(os.path.join(d_ckpt, "state.pt"), weights_only=False)
    # by default the decay continues the stable run's AdamW moments (4 stable + 3 decay updates); fresh: 3 only
    assert all(s["step"] == (3 if fresh else 4 + 3) for s in d_state["optimizer"]["state"].values())
    rows = [json.loads(line) for line in open(final / "metrics.jsonl")]
    assert [r["lr"] for r in rows if r["kind"] == "train"][-1] == pytest.approx(0.001)  # cosine down to 10%
    first_eval = [r for r in rows if r["kind"] == "eval"][0]
    last_stable_eval = [json.loads(line) for line in open(stable / "metrics.jsonl") if '"eval"' in line][-1]
    assert first_eval["val"] == last_stable_eval["val"], "the decay run must start from the stable weights"
    # a second run with resume=True finds both stages complete and the data already built
    midtrain.main(argv + ["--resume=True"])
    assert model_lib.resolve_checkpoint(str(final)) == d_ckpt


# ---- the paper presets --------------------------------------------------------------------------------------------

PRESETS = sorted(glob.glob(os.path.join(ROOT, "config", "octothinker_*.py")))


def test_paper_presets_parse_and_fit_8_gpus(monkeypatch):
    assert len(PRESETS) == 8, PRESETS
    monkeypatch.setattr(midtrain, "check_init_from", lambda *a: None)  # the HF snapshot is not on this machine
    monkeypatch.setattr(midtrain, "has_checkpoint", lambda *a: False)
    from configurator import configure
    from types import SimpleNamespace
    for path in PRESETS:
        c = SimpleNamespace(**configure(dict(midtrain.DEFAULTS), [path], verbose=False))
        midtrain.check_config(c, world_size=8)
        assert c.total_batch_tokens == 512 * 8192 and c.seq_len == 8192 and c.synth_dir == ""
        plan = midtrain.stage_plan(c, c.stage)
        assert sum(plan.mixture.values()) == pytest.approx(1.0)
        if c.stage == "stable":
            assert c.stable_tokens == 200 * 10**9 and c.warmup_tokens == 0
        else:
            assert c.decay_tokens == 20 * 10**9 and c.min_lr_ratio == 0.1 and c.decay_shape == "cosine"
            # new AdamW moments must not start at the full LR: a ramp of ~1% of the decay, in whole steps
            assert c.fresh_optimizer and c.decay_warmup_tokens % c.total_batch_tokens == 0
            assert 0.005 <= c.decay_warmup_tokens / c.decay_tokens <= 0.02
            first = midtrain.get_lr(c.total_batch_tokens, c.lr, *plan.budgets, c.min_lr_ratio, c.decay_shape,
                                    plan.decay_warmup)
            assert first < c.lr / 40
            assert plan.mixture["dclm_baseline"] == 0.05 and plan.mixture["instruction"] == 0.10
            assert plan.mixture["megamath_web_pro"] == 0.55
        assert c.lr == (5e-5 if "_1b_" in path else 2e-5)
