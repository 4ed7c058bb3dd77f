"""study.py end to end at the smallest size: every arm gets a row, reruns skip finished stages, bad knobs fail."""
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

import study


def tiny_argv(tmp_path, *extra):
    synth = tmp_path / "synth"
    return [f"--out_dir={tmp_path / 'study'}", f"--synth_dir={synth}", "--synth_scale=0.02", "--synth_vocab_size=300",
            f"--tokenizer={synth / 'tok'}", f"--data_root={synth / 'shards'}", "--model=nano", "--seq_len=128",
            "--micro_batch=4", "--total_batch_tokens=512", "--base_tokens=2048", "--warmup_tokens=512",
            "--stable_tokens=1536", "--decay_tokens=1024", "--rl_steps=2", "--rl_prompts=2", "--rl_group=2",
            "--rl_max_response_len=8", "--eval_problems=4", "--sample_k=2", "--eval_max_new_tokens=8",
            '--stop=["\\n\\n", "Question:"]', *extra]


def test_study_end_to_end_and_resume(tmp_path, capfd):
    by_seed = study.main(tiny_argv(tmp_path, "--arms=" + json.dumps(study.ARMS)))  # "long" too (not a default)
    out = tmp_path / "study"
    table = (out / "results.md").read_text()
    assert set(by_seed[1337]) == set(study.ARMS)
    for arm in study.ARMS:
        assert any(line.startswith(f"| {arm} |") for line in table.splitlines()), arm
        row = by_seed[1337][arm]
        assert 0.0 <= row["before"]["greedy"] <= 1.0 and 0.0 <= row["after"]["maj"] <= 1.0
        assert row["after"]["sampled"] <= row["after"]["pass_k"]  # pass@1 <= pass@2
        assert row["curve"]["step"] == [1, 2]  # the RL run's per-step metrics
        # held-out greedy accuracy during RL: before its first step and at its end (rl_eval_interval 8 > 2 steps),
        # with the study's own eval knobs, so its ends are the table's greedy numbers
        assert row["curve"]["eval_step"] == [0, 2]
        assert row["curve"]["heldout"] == [row["before"]["greedy"], row["after"]["greedy"]]
        assert (out / "seed-1337" / f"{arm}_rl" / "study_done.json").is_file()
        # an RL run that left the weights as they were is not evaluated again: its row repeats `before`
        unchanged = study.same_weights(str(out / "seed-1337" / arm), str(out / "seed-1337" / f"{arm}_rl"))
        assert (out / "seed-1337" / "eval" / f"{arm}_rl").exists() == (not unchanged)
        if unchanged:
            assert row["after"]["greedy"] == row["before"]["greedy"] and row["after"]["seconds"] == 0.0
    printed = capfd.readouterr()  # fd-level: the spawned RL/eval workers write to the same stderr
    assert "| arm |" in printed.out  # the table is printed
    assert "rl stable_rl:" in printed.err  # the study's bar for each RL job ...
    assert not re.search(r"(^|[\r\n])rl:", printed.err)  # ... and no bar of rl.py's own from inside a worker
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["arms"] == list(study.ARMS)
    # out_dir records the world its stages were made from: the build's own stamp
    stamp = json.loads((tmp_path / "synth" / "shards" / "synth_build.json").read_text())
    assert json.loads((out / "study_world.json").read_text()) == {"corpus": stamp["corpus"],
                                                                  "vocab_size": stamp["vocab_size"]}
    # every response (RL's rollouts, its held-out evaluations, the study's own) ends at the study's stop strings
    greedy = json.loads((out / "seed-1337" / "eval" / "short" / "greedy" / "results.json").read_text())
    in_rl = json.loads((out / "seed-1337" / "short_rl" / "eval" / "step-000000" / "results.json").read_text())
    assert greedy["config"]["stop"] == in_rl["config"]["stop"] == ["\n\n", "Question:"]
    run_config = json.loads(next((out / "seed-1337" / "short_rl").glob("ckpt-*/run_config.json")).read_text())
    assert run_config["stop"] == run_config["eval_stop"] == ["\n\n", "Question:"]
    # greedy accuracy by problem kind, and the multi-step word answers that stop short, in the second table
    by_kind = by_seed[1337]["short"]["before"]["by_kind"]
    assert "early_stop" in by_kind and set(by_kind) - {"early_stop"} and \
        set(by_kind) <= {"word", "arith", "equation", "early_stop"}  # the kinds among the first 4 problems
    assert all(v is None or 0.0 <= v <= 1.0 for v in by_kind.values())
    assert "| arm | word before -> after |" in table and "stopped short" in table
    try:
        import matplotlib  # noqa: F401
        assert (out / "rl_curves.png").stat().st_size > 1000
    except ImportError:
        pass
    # a rerun (the default arms, "long" left out) finds every stage and evaluation done: nothing is retrained
    ckpts = {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")}
    again = study.main(tiny_argv(tmp_path))
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")} == ckpts
    assert again[1337]["short"]["after"] == by_seed[1337]["short"]["after"]
    # a finished stage is never reused with other knobs
    with pytest.raises(ValueError, match="was run with other knobs"):
        study.main(tiny_argv(tmp_path, "--rl_steps=3"))


def test_study_runs_only_the_stages_an_arm_needs(tmp_path):
    # one job at a time in this process (the end-to-end test above runs them in two worker processes)
    study.main(tiny_argv(tmp_path, '--arms=["stable"]', "--sample_k=0", "--parallel=1"))
    done = sorted(p.parent.name for p in (tmp_path / "study" / "seed-1337").rglob("study_done.json"))
    assert done == ["base", "stable", "stable_rl"]
    seed_dir = tmp_path / "study" / "seed-1337"
    assert study.same_weights(str(seed_dir / "base"), str(seed_dir / "base"))
    assert not study.same_weights(str(seed_dir / "base"), str(seed_dir / "stable"))


@pytest.mark.parametrize("flag, message", [
    ('--arms=["short","medium"]', "arms must be"),
    ("--seeds=[]", "seeds must be"),
    ('--decay_mixtures={"short": {"qa_short": 1.0}}', "decay_mixtures needs"),
    ("--rl_group=1", "rl_group"),
    ("--sample_k=1", "sample_k"),
    ("--rl_temperature=0", "rl_temperature"),
    ("--rl_min_lr_ratio=1.5", "rl_min_lr_ratio"),
    ("--rl_no_signal_steps=-1", "rl_no_signal_steps"),
    ("--rl_warmup_frac=1", "rl_warmup_frac"),
    ("--parallel=0", "parallel must be"),
    ("--stable_tokens=512", "must exceed warmup_tokens"),
    ('--stop=["\\n\\n", ""]', "stop must be"),
    ('--stable_mixture={"web": -1.0}', "stable_mixture"),
])
def test_study_rejects_bad_knobs_before_any_work(tmp_path, flag, message):
    with pytest.raises(ValueError, match=message):
        study.main(tiny_argv(tmp_path, flag))
    assert not os.path.exists(tmp_path / "study")


def test_run_jobs_runs_each_job_once_in_workers_and_chains_follow_ups():
    """Jobs run in worker processes with their share of the cores; a job's follow-ups run too; a failure raises."""
    log = []
    done = {}

    def on_done(key, result):
        done[key] = result
        return [(("then", key[1]), torch.get_num_threads, (), lambda: (0, 1))] if key[0] == "first" else []

    jobs = [(("first", str(i)), pow, (2, i), lambda: (0, 1)) for i in range(3)]
    study.run_jobs(SimpleNamespace(parallel=2), jobs, on_done, log.append)
    assert {k: v for k, v in done.items() if k[0] == "first"} == {("first", str(i)): 2 ** i for i in range(3)}
    threads = max(1, torch.get_num_threads() // 2)
    assert {k: v for k, v in done.items() if k[0] == "then"} == {("then", str(i)): threads for i in range(3)}
    assert "TQDM_DISABLE" not in os.environ  # the workers' environment does not leak into this process

    with pytest.raises(ValueError, match="invalid literal"):
        study.run_jobs(SimpleNamespace(parallel=2), [(("bad", "x"), int, ("x",), lambda: (0, 1))], on_done, log.append)
    assert any("stopping" in m for m in log)

    order = []  # parallel 1: in this process, in the order given, follow-ups last
    study.run_jobs(SimpleNamespace(parallel=1), jobs, lambda k, r: order.append(k) or on_done(k, r), log.append)
    assert order == [("first", "0"), ("first", "1"), ("first", "2"), ("then", "0"), ("then", "1"), ("then", "2")]


JOB_HELPER = """
import os, time
def pid_then_sleep(path):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(120)
"""

DRIVER = """
import sys
from types import SimpleNamespace
sys.path[:0] = [{repo!r}, {tmp!r}]
import jobhelp, study
jobs = [(("sleep", "0"), jobhelp.pid_then_sleep, ({tmp!r} + "/worker.pid",), lambda: (0, 1))]
study.run_jobs(SimpleNamespace(parallel=2), jobs, lambda key, result: [], print)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited (nobody reaped it yet)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_a_worker_does_not_outlive_a_killed_study(tmp_path):
    """A SIGKILL (which the study cannot handle) to the study process leaves no worker running: before, the worker
    went on writing its stage's folder, beside the rerun that resumed the same stage."""
    (tmp_path / "jobhelp.py").write_text(JOB_HELPER)
    repo = os.path.dirname(os.path.abspath(study.__file__))
    driver = subprocess.Popen([sys.executable, "-c", DRIVER.format(repo=repo, tmp=str(tmp_path))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = tmp_path / "worker.pid"
    deadline = time.time() + 120
    while not path.exists():
        assert time.time() < deadline and driver.poll() is None, "the worker did not start"
        time.sleep(0.1)
    pid = int(path.read_text())
    assert alive(pid)
    driver.kill()
    driver.wait(timeout=60)
    deadline = time.time() + 30
    while alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(pid)


def test_sigterm_is_passed_on_to_the_workers():
    """A SIGTERM to the study while workers run reaches them (a stage stops after its step with a checkpoint) and
    becomes a KeyboardInterrupt here, so run_jobs waits for them as on Ctrl-C; the handler is put back after."""
    before = signal.getsignal(signal.SIGTERM)
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(120,))
    child.start()
    try:
        with pytest.raises(KeyboardInterrupt), study.forward_sigterm():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler runs at the next bytecode: never reached
        child.join(timeout=30)
        assert child.exitcode == -signal.SIGTERM
    finally:
        if child.is_alive():
            child.kill()
    assert signal.getsignal(signal.SIGTERM) == before


def test_rl_own_stop_strings_need_no_flags():
    # the study leaves --stop / --eval_stop out when its stop strings are rl.py's and the evaluations' own, so a run
    # made before the knob existed keeps matching its argv; that needs rl.py's and the evaluations' to agree
    import benchmarks
    import rl
    assert rl.DEFAULTS["stop"] == list(benchmarks.stop_strings("fewshot"))
    c = SimpleNamespace(**{**study.DEFAULTS, "stop": rl.DEFAULTS["stop"]})
    assert study.stop_argv(c, "--stop") == [] and "stop" not in study.eval_knobs(c)
    c = SimpleNamespace(**study.DEFAULTS)  # the study's own: a blank line ends an answer
    assert study.stop_argv(c, "--stop") == ['--stop=["\\n\\n", "Question:"]']
    assert study.eval_knobs(c)["stop"] == ["\n\n", "Question:"]


def test_the_rl_knobs_reach_rl_py():
    """rl_argv is parsed by rl.py's own configurator into the values the study names (the LR schedule included)."""
    import copy

    import rl
    from configurator import configure
    c = SimpleNamespace(**{**study.DEFAULTS, "rl_min_lr_ratio": 0.25, "rl_no_signal_steps": 9,
                          "rl_warmup_frac": 0.25})
    ns = copy.deepcopy(rl.DEFAULTS)
    ns["max_response_len"] = None  # as rl.main: an int from the command line
    got = configure(ns, study.rl_argv(c, "out", "parent", 7), verbose=False)
    assert (got["lr"], got["min_lr_ratio"], got["kl_coef"], got["max_steps"], got["seed"], got["no_signal_steps"],
            got["lr_warmup_steps"]) == (c.rl_lr, 0.25, c.rl_kl_coef, c.rl_steps, 7, 9, c.rl_steps // 4)


def test_stages_of_another_world_are_not_reused(tmp_path):
    """A stage's argv names the data folders, not what is in them: out_dir records the world (corpus knobs, vocab
    size) its stages were made from and refuses another, naming the knob that changed."""
    out = tmp_path / "study"
    c = SimpleNamespace(out_dir=str(out))
    stamp = {"corpus": {"noise": 1.0, "n_heldout": 1000}, "vocab_size": 1024, "tokenizer": "/somewhere/tok"}
    noisier = {**stamp, "corpus": {**stamp["corpus"], "noise": 0.3}}
    log = []
    study.check_world(c, stamp, log.append)  # a new out_dir: recorded
    assert json.loads((out / "study_world.json").read_text())["corpus"]["noise"] == 1.0 and not log
    study.check_world(c, stamp, log.append)  # the same world again: fine
    with pytest.raises(study.UserError, match=r"another synthetic world \(noise 1.0 -> 0.3; .*choose another out_dir"):
        study.check_world(c, noisier, log.append)
    # an out_dir from before the record: taken as is, with a note
    (out / "study_world.json").unlink()
    (out / "seed-1337").mkdir()
    study.check_world(c, noisier, log.append)
    assert len(log) == 1 and "no study_world.json" in log[0]
    assert json.loads((out / "study_world.json").read_text())["corpus"]["noise"] == 0.3


def test_table_gain_is_the_within_seed_change():
    """The gain columns are after - before within each seed, then mean +- std over seeds: two seeds at 10 -> 14 and
    20 -> 22 gain +3.0 +- 1.4, while the before and after columns alone spread by 7.1 and 5.7."""
    c = SimpleNamespace(**{**study.DEFAULTS, "arms": ["short"], "seeds": [1, 2], "sample_k": 0, "rl_steps": 2})
    curve = {"step": [1, 2], "reward": [-1.0, 0.0], "response_len": [40, 42]}
    row = lambda b, a: {"before": {"greedy": b, "problems": 1000}, "after": {"greedy": a},  # noqa: E731
                        "curve": curve, "wall_s": 60.0}
    table = study.results_table(c, {1: {"short": row(0.10, 0.14)}, 2: {"short": row(0.20, 0.22)}})
    line = next(ln for ln in table.splitlines() if ln.startswith("| short |"))
    assert line.split(" | ")[1:4] == ["15.0 +- 7.1", "18.0 +- 5.7", "+3.0 +- 1.4"]
    assert "greedy gain" in table.splitlines()[0]
    assert "RL ended there" not in table
    # an arm whose RL ended early (rl.py's no_signal_steps) is named under the table
    c.rl_steps = 25
    table = study.results_table(c, {1: {"short": row(0.10, 0.14)}, 2: {"short": row(0.20, 0.22)}})
    assert "short: no reward spread in the first 25 steps, so RL ended there" in table
