"""The command line as a user meets it: --help on every script, and user mistakes as one line with exit status 2
(real subprocesses, since the exit status and stderr are the behaviour)."""
import importlib
import importlib.util
import os
import subprocess
import sys

import pytest

import configurator
from conftest import ROOT

HELP_KNOB = {"midtrain.py": ("lr", "float = 0.003"), "rl.py": ("max_response_len", "dict = {0: 192}  # tokens"),
             "sample.py": ("temperature", "float = 0.8  # 0 = greedy"), "eval_math.py": ("limit", "int = 0  # first"),
             "study.py": ("seeds", "list = [1337]  # one full study per seed"), "bench/train.py": ("seed", "int = ")}


def load_script(rel):
    if "/" not in rel:
        return importlib.import_module(rel[:-3])
    name = rel.replace("/", "_")[:-3]  # bench/ is not a package: load the file under a name of its own
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, rel))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def run(*args, env=None, timeout=120):
    base = {k: v for k, v in os.environ.items() if k != "NANOOCTO_DEBUG"}  # the tests set debugging themselves
    env = {**base, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.mark.parametrize("rel", list(HELP_KNOB))
def test_help_lists_knobs_with_comments_and_usage(rel, capsys):
    module = load_script(rel)
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python {os.path.basename(rel)}")
    assert f"  python {rel}" in out  # the docstring's usage lines
    knob, doc = HELP_KNOB[rel]
    line = next((ln for ln in out.splitlines() if ln.startswith(f"  {knob}:")), None)
    assert line is not None and line.split(":", 1)[1].strip().startswith(doc), out  # type, default, comment


def test_help_as_a_user_runs_it():
    r = run("study.py", "--help")
    assert r.returncode == 0 and r.stderr == ""
    assert "  arms:" in r.stdout and "  parallel:             int = 2\n" in r.stdout


# ---- user mistakes: one line on stderr, exit status 2 ---------------------------------------------------------------

def assert_one_line_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert all(w in lines[0] for w in words), lines[0]


# one real process per script: the __main__ wiring is what a user meets
@pytest.mark.parametrize("argv,words", [
    (["midtrain.py", "--lr=abc"], ["'lr'", "expects float"]),
    (["rl.py", "--init_from=no/such/run"], ["init_from", "no/such/run", "python midtrain.py"]),
    (["sample.py", "--ckpt=no/such/run"], ["ckpt", "no/such/run"]),
    (["eval_math.py", "--ckpt=no/such/run", "--benchmarks=synth"], ["ckpt", "no/such/run"]),
    (["study.py", "--parallel=0"], ["parallel"]),
    (["bench/train.py", "--stepz=3"], ["'stepz'", "'steps'"]),
])
def test_user_error_is_one_line_and_exit_2(argv, words):
    assert_one_line_error(run(*argv), *words)


def test_debug_shows_the_traceback():
    for r in (run("study.py", "--parallel=0", "--debug=True"), run("study.py", "--parallel=0",
                                                                   env={"NANOOCTO_DEBUG": "1"})):
        assert r.returncode == 1 and "Traceback" in r.stderr and "UserError: parallel" in r.stderr


def call(module, *argv):
    """What `python <module>.py argv` does, in this process (cheaper than a subprocess for more mistakes)."""
    return configurator.run_cli(lambda: module.main(list(argv)), list(argv))


@pytest.mark.parametrize("rel,argv,words", [
    ("midtrain.py", ["--stage=both!"], ["stage must be one of"]),
    ("midtrain.py", ["--init_from=scratch:huge"], ["init_from", "unknown model preset 'huge'"]),
    ("midtrain.py", ["--micro_batch=3"], ["total_batch_tokens=4096", "micro_batch"]),
    ("midtrain.py", ["nope.py"], ["config file 'nope.py' does not exist"]),
    ("rl.py", ["--group_size=1"], ["group_size must be >= 2"]),
    ("rl.py", ["--steps=3"], ["unknown config key 'steps'", "max_steps"]),
    ("eval_math.py", ["--limit=many"], ["'limit'", "expects int"]),
    ("study.py", ["--arms=['best']"], ["arms must be"]),
])
def test_more_user_errors(rel, argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        call(load_script(rel), *argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err


def test_bugs_keep_their_traceback():
    def buggy():
        raise KeyError("a bug, not the user's mistake")
    with pytest.raises(KeyError):
        configurator.run_cli(buggy, [])


def test_torchrun_prints_the_error_once():
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "study.py", "--parallel=0"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "parallel must be" in errors[0], r.stderr
    # torchrun's own report follows (its traceback and status 1 cannot be changed from a worker); rank 0 exited 2
    assert r.returncode != 0 and "rank      : 0 (local_rank: 0)\n  exitcode  : 2" in r.stderr, r.stderr
