"""runtime.py: RNG state per device, the progress bar, the process group's backends and its end on every exit
path."""
from __future__ import annotations

import importlib
import os
from types import SimpleNamespace

import pytest
import torch

import runtime
from configurator import UserError


def test_rng_state_holds_this_device_only(monkeypatch):
    """A checkpoint written on 8 GPUs resumes on 4: each process saves and restores its own device's CUDA generator,
    and an older checkpoint's per-device list gives this device's entry when it has one."""
    cuda, restored = runtime.torch.cuda, []

    def set_rng_state(state, device="cuda"):
        if device >= 4:
            raise IndexError(f"no CUDA device {device}")  # what the old set_rng_state_all hit on fewer GPUs
        restored.append((state.item(), device))

    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "device_count", lambda: 4)
    monkeypatch.setattr(cuda, "current_device", lambda: 3)  # this process is rank 3 of 4
    monkeypatch.setattr(cuda, "get_rng_state", lambda device="cuda": torch.tensor(device))
    monkeypatch.setattr(cuda, "set_rng_state", set_rng_state)
    s = runtime.rng_state()
    assert torch.equal(s["cuda"], torch.tensor(3))
    runtime.set_rng_state(s)
    runtime.set_rng_state({**s, "cuda": [torch.tensor(10 + i) for i in range(8)]})  # old format, from 8 GPUs
    runtime.set_rng_state({**s, "cuda": [torch.tensor(10 + i) for i in range(2)]})  # old format, no entry for 3
    assert restored == [(3, 3), (13, 3)]


def test_progress_bar_only_on_master_and_off_under_tqdm_disable(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert [runtime.progress_bar(m, total=3).disable for m in (True, False)] == [False, True]
    monkeypatch.setenv("TQDM_DISABLE", "1")  # what study.py's worker processes run with
    assert runtime.progress_bar(True, total=3).disable


def test_distributed_backend_carries_cpu_tensors_next_to_nccl(monkeypatch):
    """On GPUs the process group must also carry the CPU tensors the scripts all-reduce (rl.py's reward and loss
    statistics): plain "nccl" fails there with 'No backend type associated with device type cpu'."""
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(runtime.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime.dist, "init_process_group", lambda backend, **kw: calls.append((backend, kw)))
    d = runtime.setup_distributed("cpu")
    assert calls[-1][0] == "gloo" and (d.rank, d.world_size, d.master, d.device.type) == (3, 8, False, "cpu")
    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runtime.torch.cuda, "set_device", lambda dev: None)
    d = runtime.setup_distributed("auto")
    backend, kw = calls[-1]
    assert "cuda:nccl" in backend.split(",") and "cpu:gloo" in backend.split(",") and str(d.device) == "cuda:3"
    assert kw["timeout"].total_seconds() >= 3600  # rank 0's lone eval / checkpoint write outlasts NCCL's 10 min


class _Stop(Exception):
    pass


EXITS = {  # how a stage's body can end -> whether every rank ends there together (then the helper drains first)
    "return": (None, True), "user error": (UserError("bad knob"), False), "SIGTERM stop": (SystemExit(143), True),
    "non-finite loss": (SystemExit("step 4: loss nan is not finite"), True), "Ctrl-C before the loop":
        (KeyboardInterrupt(), False), "crash": (_Stop("anything else"), False)}


@pytest.mark.parametrize("path", list(EXITS))
def test_distributed_destroys_the_group_on_every_exit(path, tmp_path, monkeypatch):
    """runtime.distributed leaves no process group behind however its body ends (issue 28), and drains (a barrier:
    gloo runs it after all earlier work) only where every rank gets to: a return or our SystemExits."""
    exc, drains = EXITS[path]
    runtime.dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    barriers = []
    barrier = runtime.dist.barrier
    monkeypatch.setattr(runtime.dist, "barrier", lambda *a, **k: (barriers.append(1), barrier(*a, **k)))
    try:
        with runtime.distributed("cpu") as d:  # the group above stands in for torchrun's (one rank)
            runtime.all_reduce_(torch.ones(1), SimpleNamespace(ddp=True))
            if exc is not None:
                raise exc
    except (BaseException if exc is not None else ()) as e:
        assert e is exc
    finally:
        alive = runtime.dist.is_initialized()
        if alive:
            runtime.dist.destroy_process_group()
    assert not alive and d.device.type == "cpu"
    assert barriers == ([1] if drains else [])


def gloo_threads() -> list[str]:
    names = (open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
    return [n for n in names if n.startswith(("pt_gloo", "gloo"))]


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="threads are read from /proc")
def test_distributed_joins_gloo_threads_after_ddp(tmp_path):
    """After a DDP run in runtime.distributed, gloo's worker threads are gone (joined by the group's destructor):
    none is left to take the GIL while the interpreter is torn down (issue 28). torch._dynamo is imported before the
    group, as runtime.distributed does for parallel=ddp."""
    importlib.import_module("torch._dynamo")
    runtime.dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    assert gloo_threads()
    with runtime.distributed("cpu"):
        net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
        net(torch.ones(3, 2)).sum().backward()
        runtime.all_reduce_(torch.ones(1), SimpleNamespace(ddp=True))
        del net
    assert not runtime.dist.is_initialized() and gloo_threads() == []


def imported_modules(path: str) -> set[str]:
    import ast

    tree = ast.parse(open(path).read())
    names = set()
    for node in ast.walk(tree):  # function-level imports count too
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_training_stages_do_not_import_each_other():
    """The stages share code through runtime (and model / data / sample / grader), never through each other, and
    runtime sits below them all."""
    import os

    from conftest import ROOT

    stages = {"midtrain", "rl", "eval_math", "study"}
    mods = {name: imported_modules(os.path.join(ROOT, f"{name}.py")) for name in ("midtrain", "rl", "runtime")}
    assert "runtime" in mods["midtrain"] and "runtime" in mods["rl"]
    assert not mods["midtrain"] & stages and "midtrain" not in mods["rl"] and "study" not in mods["rl"]
    assert not mods["runtime"] & (stages | {"sample"})


def test_trim_metrics_drops_a_torn_last_line(tmp_path):
    """kill -9 in the middle of a metrics write leaves half a line; the resume trims the log instead of failing."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1}\n{"kind": "train", "step": 2}\n{"kind": "train", "step": 3}\n'
                    '{"kind": "train", "st')
    runtime.trim_metrics(str(path), 2)
    assert path.read_text() == '{"kind": "train", "step": 1}\n{"kind": "train", "step": 2}\n'
