"""The command line as a user meets it: --help on every script, and user mistakes as one line with exit status 2
(real subprocesses, since the exit status and stderr are the behaviour)."""
import importlib
import importlib.util
import os
import subprocess
import sys

import pytest

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
