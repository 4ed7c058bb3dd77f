"""
The first command to run on a GPU machine: does the GPU path work here?

    python bench/gpu_check.py                 # kernels, a tiny mid-training + RL run, generation
    python bench/gpu_check.py --quick=True    # kernels only
    python bench/gpu_check.py --scale=1b      # + bench/sample.py's table and RL-shaped case at Llama-3.2-1B, bf16

1. Every Triton kernel against its torch reference at the presets' shapes (Llama-3.2-1B: 32 x 64 / 8 kv heads,
   dim 2048; 3B: 24 x 128 / 8, dim 3072; vocab 128256) and the dtypes the pipeline runs them with (bf16 activations
   over an fp32 residual stream with a bf16 or fp32 cache; bf16 weights; fp32).
2. A tiny model (the 0.9M-parameter "nano" preset) end to end on this GPU, with bf16 autocast as the presets use:
   a few mid-training steps on throwaway data (including midtrain's greedy sample), one GRPO step with
   its rollouts and evals, then greedy generation with the decode kernels on and off: the tokens must agree (fp32),
   and both speeds are shown; then the static decode step replayed as CUDA graphs against the same step run
   eagerly (greedy and sampled: identical tokens and log-probs), with both speeds.

Prints one PASS / FAIL line per item, tokens/s and peak memory; exits 1 if anything failed. Without a CUDA device it
says so and exits 0.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from configurator import configure  # noqa: E402

PRESET_SHAPES = {"1B": dict(dim=2048, H=32, Hkv=8, D=64), "3B": dict(dim=3072, H=24, Hkv=8, D=128)}
VOCAB = 128256
# device "cpu" runs every check on the CPU under the Triton interpreter (TRITON_INTERPRET=1 in the environment):
# slow, and for working on this script without a GPU; the speeds it prints mean nothing
DEFAULTS = {"quick": False, "batch": 8, "cache_len": 2048, "gen_tokens": 64, "seed": 0, "device": "cuda", "scale": "",
            "tokenizer": "", "benches": True, "presets": True, "preset_timeout": 300}
# --scale: the benchmarks (SCALE_BENCHES) unless benches=False, then the presets (run_presets) unless presets=False;
# tokenizer: a folder with Meta's Llama 3 tokenizer.model for them ("" = a stand-in of the same size);
# preset_timeout: seconds for each preset's run
# --scale=1b: the generation benchmarks at the 1B preset on this GPU (issue 24's measurements: decode step wall vs GPU
# kernel time vs memory floor at batch 1 / 16 / 64; the RL-shaped case, 32 prompts x 8 samples, EOS after ~64
# tokens, cap 512, against transformers); then the RL update at the 1B RL preset's settings (issue 25: 128 rollouts
# of up to 1,174 tokens, fixed micro-batches of 2 vs the preset's token budget)
SCALE_BENCHES = {"1b": [("sample.py", ["--preset=llama3.2-1b", "--batch_sizes=1,16,64", "--repeats=2"]),
                        ("sample.py", ["--preset=llama3.2-1b", "--rl", "--prompts=32", "--samples=8", "--typical=64",
                                       "--cap_factor=8"]),
                        ("rl_update.py", ["--dtype=bfloat16", "--preset=llama3.2-1b", "--vocab_size=128256",
                                          "--n_seqs=128", "--prompt_len=150", "--max_response=1024", "--micro_batch=2",
                                          "--micro_batch_tokens=27648", "--modes=fixed,padded"])]}
DEV = torch.device("cuda")

results: list[tuple[str, bool, str]] = []


def report(name: str, ok: bool, detail: str = "") -> None:
    results.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'}  {name:<58} {detail}", flush=True)


def check(name: str, fn) -> None:
    """Run one check; an exception is a FAIL with its message (the other checks still run)."""
    try:
        ok, detail = fn()
    except Exception as e:  # noqa: BLE001 - reported, not raised: the user wants the whole list
        ok, detail = False, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    report(name, ok, detail)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def tol(dtype) -> float:
    """Allowed max abs error against the reference for O(1) values: a few units in the last place."""
    return {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 4e-3}[dtype]


# -----------------------------------------------------------------------------------------------------------------
# 1. kernels vs their torch references


def check_kernels(B: int, S: int) -> None:
    import octo_kernels
    dev = DEV
    f32, bf16 = torch.float32, torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(0)
    def rnd(*shape, dtype=f32, scale=1.0):
        return (torch.randn(*shape, generator=g, device=dev) * scale).to(dtype)
    for preset, s in PRESET_SHAPES.items():
        dim, H, Hkv, D = s["dim"], s["H"], s["Hkv"], s["D"]
        for x_dt, r_dt, w_dt in ((bf16, f32, f32), (bf16, bf16, bf16), (f32, f32, f32)):
            def norm(x_dt=x_dt, r_dt=r_dt, w_dt=w_dt):
                x, r, w = rnd(B, 1, dim, dtype=x_dt), rnd(B, 1, dim, dtype=r_dt, scale=8.0), rnd(dim, dtype=w_dt) + 1
                y, h = octo_kernels.rms_norm(x, w, 1e-5, residual=r, impl="triton")
                y_ref, h_ref = octo_kernels.rms_norm(x, w, 1e-5, residual=r, impl="torch")
                err = max(max_err(y, y_ref), max_err(h, h_ref) / 8)
                return y.dtype == y_ref.dtype and err <= tol(y.dtype), f"max err {err:.2e}"
            check(f"rms_norm {preset} x={x_dt} stream={r_dt} w={w_dt}".replace("torch.", ""), norm)

        def swiglu(dt):
            gu = rnd(B, 1, 2 * 8192, dtype=dt, scale=3.0)
            err = max_err(octo_kernels.silu_mul(gu, impl="triton"), octo_kernels.silu_mul(gu, impl="torch"))
            return err <= tol(dt) * 4, f"max err {err:.2e}"  # values up to ~10: a few ulp of them
        for dt in (bf16, f32):
            check(f"silu_mul {preset} ffn=8192 {dt}".replace("torch.", ""), lambda dt=dt: swiglu(dt))
        for act, cache_dt in ((bf16, bf16), (bf16, f32), (f32, f32)):
            tag = f"{preset} D={D} H={H}/{Hkv} act={act} cache={cache_dt}".replace("torch.", "")

            def rope(act=act, cache_dt=cache_dt):
                q, k, v = rnd(B, 1, H, D, dtype=act), rnd(B, 1, Hkv, D, dtype=act), rnd(B, 1, Hkv, D, dtype=act)
                ang = torch.rand(B, 1, D // 2, device=dev, generator=g) * 100
                caches = [torch.zeros(B, Hkv, 16, D, dtype=cache_dt, device=dev) for _ in range(4)]
                q1 = octo_kernels.rope_cache_update(q, k, v, ang.cos(), ang.sin(), caches[0], caches[1], 5, impl="triton")
                q2 = octo_kernels.rope_cache_update(q, k, v, ang.cos(), ang.sin(), caches[2], caches[3], 5, impl="torch")
                err = max(max_err(q1, q2), max_err(caches[0], caches[2]), max_err(caches[1], caches[3]))
                return err <= tol(act), f"max err {err:.2e}"

            def attention(act=act, cache_dt=cache_dt):
                q = rnd(B, H, D, dtype=act)
                kc, vc = rnd(B, Hkv, S, D, dtype=cache_dt), rnd(B, Hkv, S, D, dtype=cache_dt)
                start = torch.randint(0, S // 2, (B,), device=dev, generator=g)
                ref = octo_kernels.decode_attention(q, kc, vc, start, S, impl="torch")
                errs = [max_err(octo_kernels.decode_attention(q, kc, vc, start, S, impl="triton", num_splits=n), ref)
                        for n in (None, 1)]  # the split heuristic, and one split
                return max(errs) <= tol(act), f"max err {max(errs):.2e} (split, unsplit)"
            check(f"rope + cache write {tag}", rope)
            check(f"decode_attention {tag}", attention)
    for dt in (f32, bf16):
        def sampling(dt=dt):
            logits = rnd(B, VOCAB, dtype=dt, scale=3.0)
            tok_g, lp_g = octo_kernels.sample_logits(logits, 0.0, 0, 0, impl="triton")
            ref_g = logits.float().argmax(-1)
            tok_t, lp_t = octo_kernels.sample_logits(logits, 0.8, 7, 3, impl="triton")
            tok_r, _ = octo_kernels.sample_logits(logits, 0.8, 7, 3, impl="torch")
            want = torch.log_softmax(logits.float() / 0.8, -1).gather(-1, tok_t[:, None])[:, 0]
            same = (tok_t == tok_r).float().mean().item()
            ok = torch.equal(tok_g, ref_g) and max_err(lp_t, want) < 1e-3 and same >= 0.99
            return ok, f"greedy exact, sampled {same:.0%} equal to the reference draws"
        check(f"sample_logits V={VOCAB} logits={dt}".replace("torch.", ""), sampling)


# -----------------------------------------------------------------------------------------------------------------
# 2. a tiny model end to end


def quiet():
    return contextlib.redirect_stdout(io.StringIO())


def problems(n: int, offset: int = 0) -> list[tuple[str, int]]:
    return [(f"Mia has {i % 10} apples and buys {i // 10 % 10} more. How many apples does she have?",
             i % 10 + i // 10 % 10) for i in range(offset, offset + n)]


def write_tiny_data(work: str) -> tuple[str, str]:
    """A 300-token BPE, one shard source of solved problems, RL prompts and a held-out set (eval_math's "synth"
    file layout) -> (tokenizer folder, data root). Self-made, so the check does not depend on the synthetic
    world's knobs."""
    import json

    from data.shards import write_shard
    from data.tokenizer import Tokenizer
    texts = [f"Question: {q}\nAnswer: The answer is \\boxed{{{a}}}." for q, a in problems(100)]
    tok = Tokenizer.train(texts, vocab_size=300)
    tok_dir, data_root = os.path.join(work, "tok"), os.path.join(work, "shards")
    tok.save(tok_dir)
    ids = [t for text in texts for t in tok.encode(text, bos=True, eos=True)]
    for split, reps in (("train", 20), ("val", 2)):
        write_shard(os.path.join(data_root, "qa", f"{split}_000000.bin"), ids * reps, tok.vocab_size)
    with open(os.path.join(work, "rl_train.jsonl"), "w") as f:
        f.writelines(json.dumps({"question": q, "answer": str(a)}) + "\n" for q, a in problems(32))
    with open(os.path.join(work, "heldout.jsonl"), "w") as f:
        f.writelines(json.dumps({"question": q, "answer": str(a)}) + "\n" for q, a in problems(8, offset=100))
    return tok_dir, data_root


def run_tiny_pipeline(work: str) -> str | None:
    """A few mid-training steps (stable + decay, bf16 autocast) on self-made data, then one GRPO step with evals.
    Returns the final mid-training folder (None if it failed)."""
    import midtrain
    import rl
    tok_dir, data_root = write_tiny_data(work)
    stable, final = os.path.join(work, "stable"), os.path.join(work, "midtrain")
    argv = ["--synth_dir=", f"--tokenizer={tok_dir}", f"--data_root={data_root}", "--stable_mixture={'qa': 1.0}",
            "--decay_mixture={'qa': 1.0}", "--eval_sources=[]", "--init_from=scratch:nano",
            f"--stable_out_dir={stable}", f"--decay_out_dir={final}", "--seq_len=64", "--micro_batch=8",
            "--total_batch_tokens=1024", "--warmup_tokens=1024", "--stable_tokens=4096", "--decay_tokens=2048",
            "--eval_interval=4", "--eval_batches=1", "--sample_tokens=8", "--log_interval=0", "--lr=0.01",
            f"--device={DEV.type}", "--dtype=bfloat16"]

    def midtrain_run():
        t0 = time.time()
        with quiet():
            midtrain.main(argv)
        steps = [sum('"train"' in line for line in open(os.path.join(out, "metrics.jsonl"))) for out in (stable, final)]
        return steps[0] > 0 and steps[1] > 0, (f"stable {steps[0]} + decay {steps[1]} steps, greedy sample included, "
                                              f"{time.time() - t0:.1f} s")
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars between the result lines
    check("midtrain: a few steps, bf16 autocast, kernels in its greedy sample", midtrain_run)
    if not results[-1][1]:
        return None

    def rl_run():
        t0 = time.time()
        with quiet():
            res = rl.main([f"--init_from={final}", f"--out_dir={os.path.join(work, 'rl')}",
                           f"--prompt_file={os.path.join(work, 'rl_train.jsonl')}", "--max_steps=1",
                           "--group_size=4", "--prompts_per_step=4", "--max_response_len=16", "--eval_interval=1",
                           "--eval_benchmarks=synth", f"--eval_data_dir={work}", "--eval_limit=8",
                           "--eval_max_new_tokens=16", "--log_interval=0", "--ckpt_interval=0", f"--device={DEV.type}",
                           "--dtype=bfloat16"])
        return res["steps"] == 1, f"1 GRPO step, 16 rollouts, 2 evals, {time.time() - t0:.1f} s"
    check("rl: one GRPO step with rollouts and evals, bf16 autocast", rl_run)
    return final


NEAR_TIE = 1e-3  # top-2 logit gap under which fp32 kernels and torch may legitimately pick different tokens


def first_divergence_gap(net, prompt: list[int], a: list[int], b: list[int]) -> float:
    """Top-2 logit gap (plain torch forward) where greedy completions a and b first differ: ~0 means a near-tie,
    which a last-bit difference in attention may break either way; a real gap means a kernel is wrong."""
    t = next(i for i, (x, y) in enumerate(zip(a + [None], b + [None])) if x != y)
    with torch.no_grad():
        logits = net(torch.tensor([prompt + a[:t]], device=DEV))[0, -1].float()
    top2 = logits.topk(2).values
    return (top2[0] - top2[1]).item()


def generate_on_off(ckpt: str, n_prompts: int, max_new: int) -> None:
    """Greedy tokens with the decode kernels on and off (fp32: must agree but for near-ties; bf16 autocast:
    agreement shown), and the speed of each."""
    import model as model_lib
    import sample
    net, tok, _ = model_lib.load_checkpoint(ckpt, device=DEV)
    net.eval()
    prompts = [f"Question: Mia has {i} apples and buys {i + 2} more. How many apples does she have?\nAnswer:"
               for i in range(n_prompts)]
    runs = {}
    bf16_autocast = lambda: torch.autocast(DEV.type, torch.bfloat16)  # noqa: E731
    tf32 = torch.backends.cuda.matmul.allow_tf32  # midtrain turned it on; fp32 must mean fp32 for the comparison
    for precision, ctx in (("fp32", contextlib.nullcontext), ("bf16", bf16_autocast)):
        torch.backends.cuda.matmul.allow_tf32 = tf32 if precision == "bf16" else False
        for impl in ("triton", "torch"):
            os.environ["NANOOCTO_KERNELS"] = impl
            with ctx():
                sample.generate(net, tok, prompts[:2], max_new_tokens=4)  # warm-up: compile, allocator
                sync()
                if DEV.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                outs = sample.generate(net, tok, prompts, max_new_tokens=max_new)
                sync()
                dt = time.perf_counter() - t0
            n_tok = sum(len(o.tokens) for o in outs)
            runs[precision, impl] = (outs, n_tok / dt, peak_memory())
    torch.backends.cuda.matmul.allow_tf32 = tf32
    os.environ.pop("NANOOCTO_KERNELS", None)
    for precision in ("fp32", "bf16"):
        (a, tps_k, mem_k), (b, tps_t, mem_t) = runs[precision, "triton"], runs[precision, "torch"]
        differ = [(x, y) for x, y in zip(a, b) if x.tokens != y.tokens]
        gaps = [first_divergence_gap(net, x.prompt_tokens, x.tokens, y.tokens) for x, y in differ]
        detail = (f"{len(a) - len(differ)} of {len(a)} greedy completions identical"
                  + (f" (top-2 logit gap where they part: max {max(gaps):.1e})" if gaps else "")
                  + f"; kernels {tps_k:,.0f} tok/s, torch {tps_t:,.0f} tok/s; "
                  f"peak {mem_k / 2**20:,.0f} / {mem_t / 2**20:,.0f} MiB")
        # fp32: the same math, so the same tokens unless two were tied to the last bits; bf16: kernels and torch
        # round at different points, so near-ties flip more often (shown, not judged)
        ok = all(g < NEAR_TIE for g in gaps) if precision == "fp32" else True
        report(f"generate {precision}: decode kernels on vs off", ok, detail)


def graphs_vs_eager(ckpt: str, n_prompts: int, max_new: int) -> None:
    """The static decode step replayed as CUDA graphs against the same step run eagerly (the same kernels in the
    same order: the same tokens and log-probs), greedy and sampled under bf16 autocast, and both speeds."""
    import model as model_lib
    import sample
    net, tok, _ = model_lib.load_checkpoint(ckpt, device=DEV)
    net.eval()
    prompts = [f"Question: Mia has {i} apples and buys {i + 1} more. How many?\nAnswer:" for i in range(n_prompts)]
    for name, kw in (("greedy", {}), ("sampled", dict(n=4, temperature=1.0, seed=3))):
        runs = {}
        for graphs in (True, False):
            with torch.autocast(DEV.type, torch.bfloat16):
                sample.generate(net, tok, prompts[:3], max_new_tokens=4, cuda_graphs=graphs, **kw)  # warm-up
                sync()
                t0 = time.perf_counter()
                outs = sample.generate(net, tok, prompts, max_new_tokens=max_new, cuda_graphs=graphs, **kw)
                sync()
                runs[graphs] = (outs, sum(len(o.tokens) for o in outs) / (time.perf_counter() - t0))
        (a, tps_g), (b, tps_e) = runs[True], runs[False]
        same = sum(x.tokens == y.tokens for x, y in zip(a, b))
        err = max((x.logprobs - y.logprobs).abs().max().item() for x, y in zip(a, b) if x.tokens == y.tokens)
        report(f"decode step {name}: CUDA graph replay vs eager", same == len(a) and err < 1e-5,
               f"{same} of {len(a)} completions identical, log-prob max diff {err:.1e}; graphs {tps_g:,.0f} tok/s, "
               f"eager {tps_e:,.0f} tok/s; static step: {sample.last_stats.get('static_step')}")


def run_scale_benches(scale: str) -> None:
    """bench/sample.py at a real preset on this GPU, each in its own process (its output shown as it comes)."""
    import subprocess
    for script, args in SCALE_BENCHES[scale]:
        cmd = [sys.executable, os.path.join(ROOT, "bench", script), f"--device={DEV}", *args]
        print(f"\n$ {' '.join(cmd[1:])}", flush=True)
        t0 = time.time()
        r = subprocess.run(cmd, cwd=ROOT)
        report(f"bench/{script} {' '.join(args)}"[:58], r.returncode == 0, f"{time.time() - t0:.0f} s")


# -----------------------------------------------------------------------------------------------------------------
# 4. the 1B presets themselves, a few steps each under torchrun, on random shards in the Llama 3 vocabulary

# scale -> (mid-training preset, RL preset, the model it starts from, tokens a mid-training step: 4 micro-batches of
# 2 x 8192 a GPU, ~1.5 s on an H200)
PRESETS = {"1b": ("config/octothinker_1b_stable.py", "config/rl_octothinker_1b.py", "scratch:llama3.2-1b", 65536)}
LLAMA3_RANKS = 128000  # Meta's tokenizer.model: 128,000 ranks + 256 specials = the presets' vocab of 128,256


def llama3_sized_tokenizer(work: str, given: str) -> str:
    """A folder holding a Llama 3 tokenizer.model: `given` (a folder with Meta's file) if set, else a stand-in
    rank file of the same size (the 256 bytes + random multi-byte pieces) — random weights read random shards, so
    only the vocabulary's size matters to the speeds measured."""
    if given:
        if not os.path.isfile(os.path.join(given, "tokenizer.model")):
            raise SystemExit(f"error: tokenizer={given!r} holds no tokenizer.model (Meta's Llama 3 file)")
        return given
    import base64
    g = torch.Generator().manual_seed(0)
    pieces = [bytes([b]) for b in range(256)]
    seen = set(pieces)
    while len(pieces) < LLAMA3_RANKS:
        p = bytes(torch.randint(97, 123, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g).tolist())
        if p not in seen:
            seen.add(p)
            pieces.append(p)
    folder = os.path.join(work, "llama3_tok")
    os.makedirs(folder)
    with open(os.path.join(folder, "tokenizer.model"), "w") as f:
        f.writelines(f"{base64.b64encode(p).decode()} {r}\n" for r, p in enumerate(pieces))
    return folder


def last_records(path: str) -> list[dict]:
    import json
    with open(path) as f:
        return [r for r in map(json.loads, f) if r.get("kind") == "train"]


def run_presets(scale: str, tokenizer: str, timeout: int) -> list[str]:
    """midtrain.py with the stable preset, then rl.py with the RL preset from its checkpoint, each a few steps under
    torchrun (one process per GPU here: on one GPU `parallel` has no second rank to shard over); -> table rows."""
    import json
    import subprocess

    import numpy as np

    from data.shards import write_shard
    stable, rl_cfg, init, batch = PRESETS[scale]
    rows = []
    with tempfile.TemporaryDirectory(prefix="nanoocto_presets_") as work:
        tok = llama3_sized_tokenizer(work, tokenizer)
        rng = np.random.default_rng(0)
        for split, n in (("train", 2**22), ("val", 2**18)):
            write_shard(os.path.join(work, "shards", "web", f"{split}_000000.bin"),
                        rng.integers(0, LLAMA3_RANKS, n), LLAMA3_RANKS + 256)
        with open(os.path.join(work, "prompts.jsonl"), "w") as f:
            f.writelines(json.dumps({"question": q, "answer": str(a)}) + "\n" for q, a in problems(64))
        n_gpu = torch.cuda.device_count() if DEV.type == "cuda" else 1
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_gpu}"]
        mt, rl_out = os.path.join(work, "mt"), os.path.join(work, "rl")
        steps, batch = 8, batch * n_gpu
        cmds = [("midtrain", mt, [*run, "midtrain.py", stable, f"--init_from={init}",
                                  f"--tokenizer={tok}", f"--data_root={os.path.join(work, 'shards')}",
                                  "--stable_mixture={'web': 1.0}", f"--stable_out_dir={mt}",
                                  f"--total_batch_tokens={batch}", f"--stable_tokens={steps * batch}",
                                  "--eval_interval=0", "--log_interval=1", "--ckpt_interval=0",
                                  f"--device={DEV.type}"]),
                # 16 prompts x 8 samples = 128 rows a GPU, responses up to 512 tokens (random weights rarely stop);
                # random weights get every reward wrong, so every advantage is 0 and the update would skip them
                # all: a tiny entropy bonus keeps every sequence in the update, which is what is timed
                # twice: keep_engine "auto" (the preset as users run it) and False (each step re-makes its engine
                # and re-captures the graphs, as before keep_engine), for the rollouts' speed side by side
                *(("rl", rl_out + tag, [*run, "rl.py", rl_cfg, f"--init_from={mt}",
                                        f"--prompt_file={os.path.join(work, 'prompts.jsonl')}",
                                        f"--out_dir={rl_out + tag}", "--max_steps=3",
                                        f"--prompts_per_step={16 * n_gpu}", "--group_size=8",
                                        "--max_response_len=512", "--entropy_coef=0.001", "--eval_interval=0",
                                        "--ckpt_interval=0", "--log_interval=1", f"--device={DEV.type}",
                                        f"--keep_engine={keep}"])
                  for tag, keep in (("", "auto"), ("_freed", False)))]
        for name, out, cmd in cmds:
            print(f"\n$ {' '.join(cmd[2:])}", flush=True)
            t0 = time.time()
            try:
                r = subprocess.run(cmd, cwd=ROOT, timeout=timeout, env={**os.environ, "TQDM_DISABLE": "1"})
                ok = r.returncode == 0
            except subprocess.TimeoutExpired:
                ok = False
            wall = time.time() - t0
            metrics = os.path.join(out, "metrics.jsonl")
            recs = last_records(metrics) if os.path.exists(metrics) else []
            preset = os.path.basename(stable if name == "midtrain" else rl_cfg)
            what = f" ({cmd[-1].lstrip('-')})" if name == "rl" else ""
            report(f"{name}: {preset} under torchrun{what}", ok and bool(recs), f"{len(recs)} steps, {wall:.0f} s")
            if not recs:
                return rows
            last = recs[-1]
            if name == "midtrain":
                rows.append(f"midtrain {stable}: first step {recs[0]['elapsed']:.1f} s after start of training, then "
                            f"{last['tok_s']:,.0f} tok/s, MFU {last['mfu']:.1%} of the datasheet, "
                            f"{last['mfu_matmul']:.1%} of the measured matmul peak (step {last['step']})")
            else:
                rows.append(f"rl {rl_cfg}{what}: steps 2-{last['step']}: rollouts "
                            + " / ".join(f"{r['gen_tok_s']:,.0f}" for r in recs[1:])
                            + f" tok/s ({last['rollout_s']:.1f} s), update {last['train_tok_s']:,.0f} tok/s; first "
                            f"step {recs[0]['step_s']:.1f} s")
    return rows


def sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def peak_memory() -> int:
    return torch.cuda.max_memory_allocated() if DEV.type == "cuda" else 0


def main(argv=None) -> int:
    global DEV
    c = configure(dict(DEFAULTS), argv if argv is not None else sys.argv[1:], verbose=False)
    DEV = torch.device(c["device"])
    if c["scale"] not in ("", *SCALE_BENCHES):
        print(f"error: scale must be one of {sorted(SCALE_BENCHES)} or empty (no benchmarks), got {c['scale']!r}")
        return 2
    if DEV.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible (torch.cuda.is_available() is False): nothing to check here. "
              "Run it on the GPU machine, after `pip install -r requirements.txt` with a CUDA build of torch.")
        return 0
    import triton
    if DEV.type == "cuda":
        props = torch.cuda.get_device_properties(DEV)
        print(f"gpu_check: {props.name}, sm_{props.major}{props.minor}, {props.multi_processor_count} SMs, "
              f"{props.total_memory / 2**30:.0f} GiB; torch {torch.__version__}, triton {triton.__version__}")
    else:
        print(f"gpu_check on {DEV.type} (the Triton interpreter: slow, speeds meaningless)")
        os.environ["NANOOCTO_KERNELS"] = "triton"  # the decode kernels on, as "auto" turns them on for CUDA
    torch.manual_seed(c["seed"])
    check_kernels(c["batch"], c["cache_len"])
    if not c["quick"]:
        with tempfile.TemporaryDirectory(prefix="nanoocto_gpu_check_") as work:
            ckpt = run_tiny_pipeline(work)
            if ckpt is not None:
                try:
                    generate_on_off(ckpt, 16, c["gen_tokens"])
                except Exception as e:  # noqa: BLE001 - reported like every other check
                    report("generate: decode kernels on vs off", False, f"{type(e).__name__}: {e}"[:200])
                try:
                    graphs_vs_eager(ckpt, 16, c["gen_tokens"])
                except Exception as e:  # noqa: BLE001
                    report("decode step: CUDA graph replay vs eager", False, f"{type(e).__name__}: {e}"[:200])
    table = []
    if c["scale"]:
        if c["benches"]:
            run_scale_benches(c["scale"])
        if c["presets"]:
            table = run_presets(c["scale"], c["tokenizer"], c["preset_timeout"])
    failed = [name for name, ok, _ in results if not ok]
    if table:
        print("\n" + "\n".join(table))
    print(f"\n{len(results) - len(failed)} / {len(results)} passed"
          + (f"; FAILED: {', '.join(failed)}" if failed else "") + f"; peak memory {peak_memory() / 2**30:.2f} GiB")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
