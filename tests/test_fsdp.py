"""parallel=fsdp (FSDP2 on CPU with gloo): 2 sharded ranks make the same updates as 1 process, checkpoints are the
usual HF folders with a gathered optimizer state (resumable across parallel modes and world sizes), and a run
killed with SIGKILL resumes bit-exactly. midtrain.py through torchrun; rl.py in 2 worker processes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from conftest import ROOT  # first: it puts the repo root on sys.path (also when run as a worker script)
import midtrain  # noqa: E402
import model as model_lib  # noqa: E402
from test_midtrain import data, decay_args  # noqa: E402,F401  (data: the module-scoped shard fixture)

STEPS, CKPT, KILL_AT = 24, 4, 9  # the killed run dies after step KILL_AT, so it resumes from ckpt-000008
EVAL = ("--eval_interval=8", "--eval_batches=3", "--sample_tokens=4", "--sample_prompt=Question: 3 + 4?")


def mt_args(data, out, *extra):
    # one sequence per micro-batch: 2 accumulated micro-steps per rank on 2 ranks (FSDP's reduce-scatter waits
    # for the last), 4 on one process; gradient checkpointing: each block's recompute gathers its weights again
    return decay_args(data, out, *EVAL, f"--ckpt_interval={CKPT}", "--keep_last_n=0", "--grad_checkpointing=True",
                      "--micro_batch=1", *extra, steps=STEPS)


def torchrun(argv: list[str], **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, **kw)


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out = proc.communicate(timeout=timeout)[0].decode()
    assert proc.returncode == 0, out[-4000:]
    return out


def descendants(pid: int) -> list[int]:
    """pid and every process below it (torchrun's workers), from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def rows(out, kind: str) -> list[dict]:
    """metrics.jsonl records of one kind without the wall-clock fields."""
    drop = {"tok_s", "mfu", "mfu_matmul", "elapsed", "seconds"}
    return [{k: v for k, v in r.items() if k not in drop}
            for r in map(json.loads, open(os.path.join(out, "metrics.jsonl"))) if r["kind"] == kind]


def weights(run) -> dict:
    return model_lib.load_checkpoint(str(run))[0].state_dict()


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_midtrain_fsdp_matches_one_process_and_resumes_bit_exactly_after_kill(data, tmp_path):
    full, killed, one, cross = (tmp_path / n for n in ("full", "killed", "one", "cross"))
    fsdp = ("--parallel=fsdp",)
    # two sharded runs side by side: one runs through, the other is SIGKILLed mid-run
    a = torchrun(["midtrain.py", *mt_args(data, full, *fsdp)])
    b = torchrun(["midtrain.py", *mt_args(data, killed, *fsdp)])
    deadline = time.time() + 240
    while time.time() < deadline and b.poll() is None:
        try:
            done = rows(killed, "train") if (killed / "metrics.jsonl").exists() else []
        except ValueError:  # read in the middle of a write
            done = []
        if done and done[-1]["step"] >= KILL_AT:
            break
        time.sleep(0.05)
    assert b.poll() is None, "the run ended before it could be killed:\n" + b.communicate()[0].decode()[-3000:]
    for pid in descendants(b.pid):
        os.kill(pid, signal.SIGKILL)
    b.communicate()
    midtrain.main(mt_args(data, one, "--stop_at_step=12"))  # meanwhile: 1 process, 4 accumulated micro-batches
    log = finish(a)
    assert "(2 x 1 x 32 x 2 accum, fsdp)" in log
    died_at = int(model_lib.resolve_checkpoint(str(killed)).rsplit("-", 1)[1])
    assert KILL_AT - 1 <= died_at < STEPS
    log = finish(torchrun(["midtrain.py", *mt_args(data, killed, *fsdp, "--resume=True")]))
    assert f"resumed from {killed / f'ckpt-{died_at:06d}'} at step {died_at}" in log

    # killed + resumed == uninterrupted, to the bit: every loss, eval and weight
    assert rows(killed, "train") == rows(full, "train") and len(rows(full, "train")) == STEPS
    assert rows(killed, "eval") == rows(full, "eval")
    w_full = weights(full)
    assert all(torch.equal(w_full[k], v) for k, v in weights(killed).items())

    # 2 sharded ranks == 1 process with accumulation, up to float summation order (Adam amplifies that noise
    # over the steps: measured max |dw| 1.9e-6 at step 4, 3.6e-6 at 8; 3e-4 at 40 in a longer run)
    for step, tol in ((4, 5e-6), (8, 1e-5)):
        diff = max_diff(weights(one / f"ckpt-{step:06d}"), weights(full / f"ckpt-{step:06d}"))
        print(f"fsdp 2 ranks vs 1 process after {step} steps: max |dw| = {diff:.2e}")
        assert diff < tol, (step, diff)
    for r1, r2 in zip(rows(one, "train"), rows(full, "train")):  # 12 steps
        assert abs(r1["loss"] - r2["loss"]) < 1e-5 and r1["step"] == r2["step"]
    for e1, e2 in zip(rows(one, "eval"), rows(full, "eval")):
        assert all(abs(e1["val"][k] - e2["val"][k]) < 1e-5 for k in e1["val"])

    # one checkpoint format: the optimizer state is keyed by parameter name under both modes, and an FSDP
    # checkpoint resumes in one process (here from step 8, 4 steps on)
    st_one, st_full = (torch.load(os.path.join(model_lib.resolve_checkpoint(str(r)), "state.pt"), weights_only=False)
                       for r in (one, full))
    assert st_one["optimizer"]["state"].keys() == st_full["optimizer"]["state"].keys()
    assert "embed_tokens.weight" in st_full["optimizer"]["state"]
    cross.mkdir()
    shutil.copytree(full / "ckpt-000008", cross / "ckpt-000008")
    (cross / "latest").write_text("ckpt-000008\n")
    midtrain.main(mt_args(data, cross, "--resume=True", "--stop_at_step=12"))
    diff = max_diff(weights(cross), weights(full / "ckpt-000012"))
    print(f"fsdp checkpoint of step 8 resumed in 1 process, at step 12: max |dw| = {diff:.2e}")
    assert diff < 1e-5

    # the sharded run's folder is an HF model folder
    from bench.hf_peer import load_llama

    ours = model_lib.load_checkpoint(str(full))[0].eval()
    hf = load_llama(model_lib.resolve_checkpoint(str(full)))
    x = torch.randint(0, ours.config.vocab_size, (2, 12))
    with torch.no_grad():
        assert torch.allclose(hf(x).logits, ours(x), atol=1e-4)


# ---- rl.py ---------------------------------------------------------------------------------------------------------

BUDGET = 10  # micro_batch_tokens of the token-budget runs: the ranks run 5 and 4 micro-batches (2 seqs: 3 and 3)


def test_rl_fsdp_two_ranks(tmp_path):
    """One launch of 2 gloo workers: update_policy on 2 ranks == 1 process holding all the rollouts, with rl.py's
    hand-written all-reduce (parallel=ddp) and on FSDP shards, with micro-batches of 2 sequences and of a token
    budget (the ranks then run different numbers of them; FSDP pads with dummy passes); rl.main with parallel=fsdp == parallel=ddp on 2 ranks
    (same rollouts, the rollout copy gathered from the shards); an FSDP run resumed from its step-2 checkpoint ==
    uninterrupted; a DDP run's step-2 checkpoint resumed under FSDP (with CPU offload, here a no-op but its code
    path) == the DDP run."""
    import test_rl

    make_tiny(tmp_path)
    ports = [test_rl.free_port() for _ in range(7)]
    procs = [subprocess.Popen([sys.executable, __file__, "--fsdp-worker", str(r), str(tmp_path), *map(str, ports)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}) for r in range(2)]
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=400)
        assert p.returncode == 0, out.decode()[-4000:]
        outs.append(out.decode())
    # keep_engine "auto" on CPU: the fsdp runs decode from one full-weight copy refreshed in place every step (a
    # stale copy would sample from the start weights and part from the ddp run below)
    assert "keep_engine auto -> on" in outs[0]

    single = test_rl.one_update(0, 1, SimpleNamespace(ddp=False, rank=0, world_size=1))
    start = (torch.manual_seed(0), model_lib.Llama(model_lib.LlamaConfig.from_preset("test")).state_dict())[1]
    for r in range(2):
        for mode in ("ddp", "fsdp", "ddp-tokens", "fsdp-tokens"):  # -tokens: micro_batch_tokens=BUDGET
            ranked = torch.load(tmp_path / f"{mode}{r}.pt")
            for agg in single:
                assert max_diff(single[agg], start) > 1e-3, "the update must move the weights"
                diff = max_diff(single[agg], ranked[agg])
                assert diff < 1e-6, (mode, agg, r, diff)

    ddp, fsdp, resumed = (str(tmp_path / n) for n in ("ddp", "fsdp", "resumed"))
    r_ddp, r_fsdp = test_rl.train_rows(ddp), test_rl.train_rows(fsdp)
    assert [r["step"] for r in r_fsdp] == [1, 2, 3, 4]
    for x, y in zip(r_ddp, r_fsdp):
        assert x["reward"] == y["reward"] and abs(x["loss"] - y["loss"]) < 1e-6
    diff = max_diff(weights(ddp), weights(fsdp))
    print(f"rl fsdp vs ddp, 2 ranks, 4 steps: max |dw| = {diff:.2e}")
    assert diff < 1e-5
    drop = ("rollout_s", "step_s", "gen_tok_s", "train_tok_s", "elapsed", "recompute_s", "update_s")
    clean = lambda rs: [{k: v for k, v in r.items() if k not in drop} for r in rs]  # noqa: E731
    assert clean(test_rl.train_rows(resumed)) == clean(r_fsdp)
    w = weights(fsdp)
    assert all(torch.equal(w[k], v) for k, v in weights(resumed).items())
    cross = str(tmp_path / "cross")
    assert [(x["reward"], x["step"]) for x in test_rl.train_rows(cross)] == [(x["reward"], x["step"]) for x in r_ddp]
    assert max_diff(weights(cross), weights(ddp)) < 1e-5


def make_tiny(root) -> SimpleNamespace:
    """test_rl's tiny world (tokenizer, random model, prompts), made here: module fixtures do not cross files."""
    from data.tokenizer import Tokenizer
    from test_rl import WORDS

    tok = Tokenizer.train([WORDS] * 3, vocab_size=290)
    cfg = model_lib.LlamaConfig.from_preset("test", vocab_size=tok.vocab_size, bos_id=tok.bos_id, eos_id=tok.eos_id)
    torch.manual_seed(0)
    model_lib.save_checkpoint(str(root / "base" / "ckpt-000000"), model_lib.Llama(cfg), tokenizer=tok)
    with open(root / "prompts.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"problem": f"Mia has {i} apples and buys {i % 7} more. How many apples?",
                                "solution": f"{i} + {i % 7} = {2 * i}\n#### {i + i % 7}"}) + "\n")
    return SimpleNamespace(root=root, base=str(root / "base"), prompts=str(root / "prompts.jsonl"))


def _fsdp_worker(rank: int, root: str, ports: list[int]):
    import torch.distributed as dist

    import rl
    import runtime
    import test_rl

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(ports[0])})
    # 1. update_policy: test_rl.one_update's models, optimizer and rollouts, plain (gradients all-reduced by hand),
    # then sharded; in runtime.distributed, as the stages (its exit destroys the group)
    with runtime.distributed("cpu"):
        d = SimpleNamespace(ddp=True, rank=rank, world_size=2)
        torch.save(test_rl.one_update(rank, 2, d), os.path.join(root, f"ddp{rank}.pt"))
        torch.save(test_rl.one_update(rank, 2, d, BUDGET), os.path.join(root, f"ddp-tokens{rank}.pt"))
        build = test_rl.Llama

        def sharded_llama(cfg):
            net = build(cfg)
            runtime.shard_model(net, torch.device("cpu"), torch.float32)
            runtime.sum_gradients(net)
            return net

        test_rl.Llama = sharded_llama
        try:
            for name, budget in (("fsdp", 0), ("fsdp-tokens", BUDGET)):
                res = test_rl.one_update(rank, 2, d, budget)
                res = {agg: {k: v.full_tensor() for k, v in sd.items()} for agg, sd in res.items()}
                torch.save(res, os.path.join(root, f"{name}{rank}.pt"))
        finally:
            test_rl.Llama = build
    assert not dist.is_initialized()
    # 2. rl.main end to end (each call sets up and tears down its own process group)
    tiny = SimpleNamespace(base=os.path.join(root, "base"), prompts=os.path.join(root, "prompts.jsonl"))
    runs = [("ddp", 4, ()), ("fsdp", 4, ("--parallel=fsdp",)), ("resumed", 2, ("--parallel=fsdp",)),
            ("resumed", 4, ("--parallel=fsdp", "--resume=True")), ("cross", 2, ()),
            ("cross", 4, ("--parallel=fsdp", "--fsdp_cpu_offload=True", "--resume=True"))]
    for port, (name, steps, extra) in zip(ports[1:], runs):
        os.environ["MASTER_PORT"] = str(port)
        rl.main(test_rl.toy_args(tiny, os.path.join(root, name), steps, "--kl_coef=0.05", *extra),
                reward_fn=test_rl.first_token_reward)


if __name__ == "__main__" and len(sys.argv) >= 4 and sys.argv[1] == "--fsdp-worker":
    _fsdp_worker(int(sys.argv[2]), sys.argv[3], [int(p) for p in sys.argv[4:]])
