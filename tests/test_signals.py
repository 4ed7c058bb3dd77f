"""SIGINT / SIGTERM during training (runtime.install_stop_handler): a real signal sent to a real midtrain.py / rl.py
process ends it after the current step with a checkpoint, the exit status 128 + signal and the command that resumes
it; running that command continues bit-exactly (losses, rewards, weights) the run an uninterrupted process makes.
The handler itself: a signal before the loop is armed acts as usual, a second one while armed quits at once."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT
import midtrain  # noqa: E402
import model as model_lib  # noqa: E402
import rl  # noqa: E402
from test_midtrain import args as mt_args, data, losses  # noqa: E402,F401  (data: the module-scoped shard fixture)
from test_rl import first_token_reward, tiny, toy_args  # noqa: E402,F401  (tiny: the module-scoped RL world)

LONG = 2000  # steps a run would take: far more than it gets before the signal
MORE = 3  # steps the resumed run and the reference take past the stop

# rl.py with test_rl's learnable toy reward instead of the math grader (a random model never earns a boxed answer)
RL_WITH_TOY_REWARD = ("import sys; sys.path.insert(0, 'tests'); import rl, test_rl; "
                      "rl.main(sys.argv[1:], reward_fn=test_rl.first_token_reward)")


def env() -> dict:
    # the reference run is made in this process: the same thread count gives the same float summation order
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "TQDM_DISABLE": "1"}


def steps_done(out) -> int:
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        done = [json.loads(line)["step"] for line in f if line.endswith("\n") and '"train"' in line]
    return max(done, default=0)


def interrupt(cmd: list[str], out, sig: int, after: int = 2) -> tuple[subprocess.CompletedProcess, int]:
    """Start cmd, send it sig once `after` steps are logged -> (finished process, its last step)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t_end = time.time() + 120
    while steps_done(out) < after and proc.poll() is None and time.time() < t_end:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the signal:\n" + proc.communicate()[0][-3000:]
    proc.send_signal(sig)
    text = proc.communicate(timeout=120)[0]
    return subprocess.CompletedProcess(cmd, proc.returncode, text), steps_done(out)


def resume_argv(text: str, script: str) -> list[str]:
    """The printed resume command's arguments after the script; it must be `python <script> ...`. A quoted
    argument may hold a newline (a template), so the command is the shortest run of lines that parses."""
    lines = text.split("Resume with:\n", 1)[1].splitlines()
    for n in range(1, len(lines) + 1):
        try:
            words = shlex.split("\n".join(lines[:n]))
        except ValueError:  # inside a quote: the command goes on
            continue
        assert words[:2] == ["python", script], lines[:n]
        return words[2:]
    raise AssertionError(f"no complete resume command in {lines}")


def test_sigint_stops_midtrain_after_the_step_and_resumes_bit_exactly(data, tmp_path):
    out, ref = tmp_path / "run", tmp_path / "ref"
    argv = mt_args(data, out, steps=LONG)
    done, stopped = interrupt([sys.executable, "midtrain.py", *argv], out, signal.SIGINT)
    assert done.returncode == 130, done.stdout[-3000:]
    assert f"stopped by SIGINT after step {stopped}; checkpoint {out / f'ckpt-{stopped:06d}'}" in done.stdout
    assert model_lib.resolve_checkpoint(str(out)).endswith(f"ckpt-{stopped:06d}") and 2 <= stopped < LONG
    again = resume_argv(done.stdout, "midtrain.py")
    assert again == argv + ["--resume=True"]
    # the printed command, run for MORE steps (in this process: one start-up less, the same threads); the reference:
    # one run straight to the same step
    midtrain.main([*again, f"--stop_at_step={stopped + MORE}"])
    midtrain.main(mt_args(data, ref, f"--stop_at_step={stopped + MORE}", steps=LONG))
    assert losses(out) == losses(ref) and len(losses(ref)) == stopped + MORE
    w_ref = model_lib.load_checkpoint(str(ref))[0].state_dict()
    assert all(torch.equal(w_ref[k], v) for k, v in model_lib.load_checkpoint(str(out))[0].state_dict().items())


def rl_rows(out) -> list[dict]:
    keep = ("step", "reward", "accuracy", "loss", "grad_norm", "approx_kl", "entropy", "response_len")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [{k: r[k] for k in keep} for r in map(json.loads, f) if r["kind"] == "train"]


def test_sigterm_stops_rl_after_the_step_and_resumes_bit_exactly(tiny, tmp_path):
    out, ref = tmp_path / "run", tmp_path / "ref"
    argv = toy_args(tiny, str(out), LONG, "--ckpt_interval=0", "--keep_last_n=0")  # only the signal checkpoints
    done, stopped = interrupt([sys.executable, "-c", RL_WITH_TOY_REWARD, *argv], out, signal.SIGTERM)
    assert done.returncode == 143, done.stdout[-3000:]
    assert f"stopped by SIGTERM after step {stopped}" in done.stdout and 2 <= stopped < LONG
    assert sorted(os.listdir(out)) == [f"ckpt-{stopped:06d}", "latest", "metrics.jsonl"]
    again = resume_argv(done.stdout, "rl.py")
    assert again == argv + ["--resume=True"]
    rl.main([*again, f"--max_steps={stopped + MORE}"], reward_fn=first_token_reward)
    rl.main(toy_args(tiny, str(ref), stopped + MORE, "--ckpt_interval=0", "--keep_last_n=0"),
            reward_fn=first_token_reward)
    assert rl_rows(out) == rl_rows(ref) and len(rl_rows(ref)) == stopped + MORE
    w_ref = model_lib.load_checkpoint(str(ref))[0].state_dict()
    assert all(torch.equal(w_ref[k], v) for k, v in model_lib.load_checkpoint(str(out))[0].state_dict().items())


HANDLER = """
import os, signal, sys, time
import runtime
stop = runtime.install_stop_handler(True, "midtrain.py", ["--lr=0.1", "--resume=False"])
try:
    os.kill(os.getpid(), signal.SIGINT)  # not armed yet: as without the handler
    time.sleep(1)
except KeyboardInterrupt:
    print("unarmed: KeyboardInterrupt", flush=True)
stop.armed = True
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.2)
d = type("D", (), {"ddp": False, "world_size": 1})()
print("armed:", runtime.stop_requested(stop, d), runtime.resume_command(stop.script, stop.argv, d), flush=True)
os.kill(os.getpid(), signal.SIGINT)  # the second signal: out at once
time.sleep(5)
print("still running", flush=True)
"""


def test_handler_unarmed_first_and_second_signal():
    r = subprocess.run([sys.executable, "-c", HANDLER], cwd=ROOT, env=env(), capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.splitlines() == ["unarmed: KeyboardInterrupt",
                                     "armed: 15 python midtrain.py --lr=0.1 --resume=True"], r.stdout + r.stderr
    assert r.returncode == 130 and "SIGINT again: quitting now" in r.stderr


def test_ranks_agree_to_stop_when_one_rank_is_signalled(data, tmp_path):
    """Under torchrun only rank 1 gets SIGTERM: rank 0 stops at the same step (the all-reduced flag), the checkpoint
    is written and rank 0 prints the torchrun command that resumes."""
    from test_fsdp import descendants

    out = tmp_path / "run"
    argv = mt_args(data, out, steps=LONG)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "midtrain.py", *argv]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**env(), "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    t_end = time.time() + 120
    while steps_done(out) < 2 and proc.poll() is None and time.time() < t_end:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the signal:\n" + proc.communicate()[0][-3000:]
    rank1 = [p for p in descendants(proc.pid) if b"\0RANK=1\0" in b"\0" + open(f"/proc/{p}/environ", "rb").read()]
    assert len(rank1) == 1, rank1
    os.kill(rank1[0], signal.SIGTERM)
    text = proc.communicate(timeout=120)[0]
    stopped = steps_done(out)
    assert f"stopped by SIGTERM after step {stopped}; checkpoint {out / f'ckpt-{stopped:06d}'}" in text, text[-3000:]
    assert model_lib.resolve_checkpoint(str(out)).endswith(f"ckpt-{stopped:06d}") and stopped < LONG
    assert "torchrun --standalone --nproc_per_node=2 midtrain.py" in text
    # rank 0 stopped without a signal of its own, by the graceful path: the "stopped by" line above is printed only by
    # rank 0, after the checkpoint. Its exit status is a race in torchrun's teardown: once the first rank exits,
    # torchrun sends SIGTERM to the others, so a rank still unwinding after its message is listed with -15 (seen in
    # CI for rank 0) instead of 143; either way after the checkpoint and the resume line
    rank0 = re.search(r"rank\s*: 0 \(local_rank: 0\)\s*exitcode\s*:\s*(-?\d+)", text)
    assert rank0 and rank0.group(1) in ("143", "-15"), text[-3000:]
