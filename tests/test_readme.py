"""Every command in the README's ```bash blocks runs as written, in README order, after the quickstart, in a fresh
copy of the repo (so default paths like out/midtrain and data/synth are the README's own). Tiny overrides are
appended where a command would take minutes (the configurator applies the last flag last); commands that need
GPUs, the paper's corpora or a user's own files are skipped, each with its reason."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, SHARED_DATA

README = os.path.join(ROOT, "README.md")

# appended to the README's command (by script): small enough for seconds, the same knobs everywhere a run is reused
# W&B logging on, into a stand-in `wandb` package (tests/test_readme.py's FAKE_WANDB) that records the calls
# (sequences of 128 in micro-batches of 2: the tiny world's validation splits hold a few such batches)
TINY_MIDTRAIN = ["--wandb_log=True", "--synth_scale=0.02", "--synth_vocab_size=300", "--seq_len=128",
                 "--micro_batch=2", "--total_batch_tokens=1024", "--warmup_tokens=1024", "--stable_tokens=2048",
                 "--decay_tokens=2048", "--eval_interval=2", "--eval_batches=1", "--sample_tokens=8",
                 "--log_interval=0"]
TINY_STUDY = ["--synth_scale=0.02", "--synth_vocab_size=300", "--tokenizer=data/synth_study/tok",
              "--data_root=data/synth_study/shards", "--seq_len=128", "--micro_batch=4", "--total_batch_tokens=512",
              "--base_tokens=2048", "--warmup_tokens=512", "--stable_tokens=1536", "--decay_tokens=1024",
              "--rl_steps=2", "--rl_prompts=2", "--rl_group=2", "--rl_max_response_len=8", "--eval_problems=4",
              "--sample_k=2", "--eval_max_new_tokens=8", "--arms=['base']", "--parallel=1"]  # workers: test_study
TINY = {
    "midtrain.py": TINY_MIDTRAIN,
    "rl.py": ["--wandb_log=True", "--max_steps=2", "--prompts_per_step=4", "--group_size=2", "--max_response_len=16",
              "--eval_limit=8", "--eval_max_new_tokens=16", "--eval_interval=2", "--ckpt_interval=0",
              "--log_interval=0"],
    "eval_math.py": ["--limit=8", "--batch_size=8"],  # max_new_tokens as the user gets it: capped to the context
    "study.py": TINY_STUDY,
    "bench/train.py": ["--preset=test", "--seq_len=32", "--micro_batch=2", "--steps=1", "--rounds=1"],
    "bench/sample.py": ["--preset=test", "--batch_sizes=1", "--prompt_len=8", "--new_tokens=4", "--repeats=1"],
    "bench/rl.py": ["--prompts_per_step=2", "--group_size=2", "--max_new_tokens=8", "--steps=1"],
    "bench/grader_vs_math_verify.py": ["--limit=5", "--show=0", f"--data_dir={SHARED_DATA}"],
}


def readme_commands() -> list[list[str]]:
    """The README's shell commands, one token list each (comments dropped; `a; b` and `a && b` are two)."""
    with open(README, encoding="utf-8") as f:
        blocks = re.findall(r"```bash\n(.*?)```", f.read(), re.S)
    commands = []
    for line in (ln for block in blocks for ln in block.splitlines()):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&")
        lexer.whitespace_split = True
        tokens, cmd = list(lexer), []
        for tok in tokens + [";"]:
            if tok in (";", "&&"):
                if cmd:
                    commands.append(cmd)
                cmd = []
            else:
                cmd.append(tok)
    # a command shown twice (the quickstart's `python midtrain.py` again in its stage's block) is one command: the
    # README says a rerun over an existing run stops with a message
    return [list(c) for c in dict.fromkeys(map(tuple, commands))]


def skip_reason(cmd: list[str]) -> str | None:
    text = " ".join(cmd)
    if cmd[0] == "pip":
        return "installs packages (the test runs in this environment)"
    if cmd[:3] == ["python", "-m", "pytest"]:
        return "the test suite itself"
    if "<" in text or "/path/to" in text:
        return "a placeholder for the user's own files"
    if "octothinker" in text:
        return "the paper's presets need GPUs and the tokenized corpora"
    if "gpu" in text.lower() and not torch.cuda.is_available():
        return "needs a GPU"
    if cmd[0] == "torchrun" and any(a.startswith("--nproc_per_node=") and int(a.split("=")[1]) > 2 for a in cmd):
        return "more processes than this machine's CPUs"
    if "grader_vs_math_verify.py" in text:
        try:
            import math_verify  # noqa: F401
        except ImportError:
            return "needs the math-verify package"
        if not os.path.isdir(os.path.join(SHARED_DATA, "math500")):
            return "needs the benchmark files in ../shared/data"
    return None


def script_of(cmd: list[str]) -> str:
    return next((a for a in cmd if a.endswith(".py")), "")


def with_tiny(cmd: list[str]) -> list[str]:
    cmd = [sys.executable if a == "python" else a for a in cmd]
    if cmd[0] == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", *cmd[1:]]
    return cmd + TINY.get(script_of(cmd), [])


def fresh_copy(dest: str) -> str:
    """The repo's code without its outputs, git data or generated data (data/synth*): a fresh clone."""
    def ignore(folder, names):
        top = os.path.abspath(folder) == os.path.abspath(ROOT)
        return [n for n in names if n in (".git", "__pycache__", ".pytest_cache") or (top and n == "out")
                or (os.path.basename(folder) == "data" and n.startswith("synth")
                    and os.path.isdir(os.path.join(folder, n)))]
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


# the calls a stage makes to W&B, one JSON line each in $FAKE_WANDB_LOG
FAKE_WANDB = """
import json, os
run = None
def _write(**rec):
    with open(os.environ["FAKE_WANDB_LOG"], "a") as f:
        f.write(json.dumps(rec) + "\\n")
class Run:
    def log(self, data, step):
        _write(call="log", data=data, step=step)
    def finish(self):
        global run
        run = None
        _write(call="finish")
def init(project, name, config):
    global run
    run = Run()
    _write(call="init", project=project, name=name, keys=sorted(config))
    return run
"""

COMMANDS = readme_commands()


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    os.makedirs(root / "fake_wandb" / "wandb")
    (root / "fake_wandb" / "wandb" / "__init__.py").write_text(FAKE_WANDB)
    return fresh_copy(str(root / "nanoocto"))


def run_in(clone: str, cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    fake = os.path.join(os.path.dirname(clone), "fake_wandb")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join([fake, os.environ.get("PYTHONPATH", "")]),
           "FAKE_WANDB_LOG": os.path.join(os.path.dirname(clone), "wandb_calls.jsonl")}
    env.pop("NANOOCTO_DEBUG", None)
    return subprocess.run(cmd, cwd=clone, capture_output=True, text=True, env=env, timeout=timeout)


def test_readme_has_the_commands():
    scripts = {script_of(c) for c in COMMANDS}
    assert {"midtrain.py", "sample.py", "rl.py", "eval_math.py", "study.py", "plot.py"} <= scripts, scripts
    assert COMMANDS[0][0] == "pip" and script_of(COMMANDS[1]) == "midtrain.py"  # the quickstart comes first


@pytest.mark.parametrize("cmd", COMMANDS, ids=[" ".join(c)[:70] for c in COMMANDS])
def test_readme_command_runs(cmd, clone):
    reason = skip_reason(cmd)
    if reason:
        pytest.skip(reason)
    r = run_in(clone, with_tiny(cmd))
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    script = script_of(cmd)
    if script == "eval_math.py":  # results land where the README's outputs table says, naming what they measured
        found = [os.path.join(d, "results.json") for d, _, files in os.walk(os.path.join(clone, "out", "eval"))
                 if "results.json" in files]
        assert found, r.stdout
        assert all(json.load(open(p))["checkpoint"] for p in found)
    if script == "plot.py":
        png = r.stdout.strip().splitlines()[-1].split()[1].rstrip(":")
        assert os.path.getsize(os.path.join(clone, png)) > 10_000


def test_stages_log_to_wandb_when_asked(clone):
    """The quickstart's midtrain and rl.py ran with --wandb_log=True (TINY): every metrics record went to W&B too."""
    path = os.path.join(os.path.dirname(clone), "wandb_calls.jsonl")
    if not os.path.isfile(path):
        pytest.skip("the README's midtrain / rl commands did not run")
    calls = [json.loads(line) for line in open(path)]
    names = [c["name"] for c in calls if c["call"] == "init"]
    assert {"stable", "midtrain", "rl"} <= set(names) and all("wandb_log" in c["keys"] for c in calls
                                                              if c["call"] == "init")
    logged = [c["data"] for c in calls if c["call"] == "log"]
    assert any("train/loss" in d and "train/lr" in d for d in logged)  # midtrain
    assert any("eval/val/web" in d for d in logged)  # nested dicts are flattened
    assert any("train/reward" in d for d in logged) and any("eval/accuracy/synth" in d for d in logged)  # rl
