"""The command line as a user meets it: --help on every script, and user mistakes as one line with exit status 2
(real subprocesses, since the exit status and stderr are the behaviour)."""
import importlib
import importlib.util
import json
import os
import subprocess
import sys

import pytest

import configurator
from conftest import ROOT

HELP_KNOB = {"midtrain.py": ("lr", "float = 0.003"), "rl.py": ("max_response_len", "dict = {0: 192}  # tokens"),
             "sample.py": ("temperature", "float = 0.8  # 0 = greedy"), "eval_math.py": ("limit", "int = 0  # first"),
             "study.py": ("seeds", "list = [1337]  # one full study per seed"), "bench/train.py": ("seed", "int = "),
             "plot.py": ("smooth", "int = 1  # trailing moving average"),
             "bench/rl_update.py": ("micro_batch_tokens", "int = 4096  # padded / packed")}


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


# ---- eval_math.py as a user runs it: defaults that fit the model, outputs that never overwrite each other ---------

@pytest.fixture(scope="module")
def eval_world(tmp_path_factory):
    """A random 'test'-preset model (context 256) saved as step 3 of a run, and a data folder with a synthetic
    held-out set and a GSM8K test file (its 8-shot prompt cannot fit that context)."""
    import torch

    import model as model_lib
    from data.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("eval_cli")
    questions = [f"Tom has {a} apples and buys {b} more. How many apples does Tom have now?"
                 for a, b in ((3, 4), (5, 1), (2, 2), (7, 1))]
    tok = Tokenizer.train(questions + ["Question: Answer: The answer is \\boxed{7}."], 300)
    torch.manual_seed(0)
    net = model_lib.Llama(model_lib.LlamaConfig.from_preset("test", vocab_size=tok.vocab_size, max_seq_len=256))
    model_lib.save_checkpoint(str(root / "out" / "toy" / "ckpt-000003"), net, tokenizer=tok)
    (root / "out" / "toy" / "latest").write_text("ckpt-000003\n")
    data = root / "bench"
    (data / "gsm8k").mkdir(parents=True)
    rows = [{"question": q, "answer": f"{q.split()[2]} + ...\n#### {int(q.split()[2]) + int(q.split()[6])}"}
            for q in questions]
    (data / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "heldout.jsonl").write_text("".join(json.dumps({"question": q, "answer": "7"}) + "\n" for q in questions))
    return root, tok


def eval_main(root, *argv):
    import eval_math
    return eval_math.main(["--ckpt=out/toy", f"--data_dir={root / 'bench'}", "--batch_size=4", "--progress=False",
                           *argv])


def test_eval_caps_max_new_tokens_and_records_what_it_measured(eval_world, monkeypatch, capsys):
    root, _ = eval_world
    monkeypatch.chdir(root)
    report = eval_main(root, "--benchmarks=synth", "--limit=2")  # default max_new_tokens=512 > the context of 256
    out = capsys.readouterr().out
    caps = [ln for ln in out.splitlines() if "max_new_tokens" in ln and "capped" in ln]
    assert len(caps) == 1 and "512" in caps[0], out
    folder = root / "out" / "eval" / "toy" / "ckpt-000003" / "fewshot-synth-limit2"
    saved = json.loads((folder / "results.json").read_text())
    assert saved["checkpoint"] == os.path.join(str(root), "out", "toy", "ckpt-000003") and saved["step"] == 3
    assert saved["knobs"]["limit"] == 2 and saved["knobs"]["max_new_tokens"] == 512
    assert saved["git_commit"] and saved == report
    used = saved["benchmarks"]["synth"]["max_new_tokens"]
    assert 0 < used < 512 and all(r["response_tokens"] <= used for r in map(json.loads, open(
        folder / "samples_synth.jsonl")))
    # another limit is another folder; the first result stays
    eval_main(root, "--benchmarks=synth", "--limit=1")
    assert (root / "out" / "eval" / "toy" / "ckpt-000003" / "fewshot-synth-limit1" / "results.json").is_file()
    assert json.loads((folder / "results.json").read_text()) == saved
    # the same folder with other knobs: an error naming them, nothing overwritten
    with pytest.raises(configurator.UserError, match="other knobs.*temperature"):
        eval_main(root, "--benchmarks=synth", "--limit=2", "--temperature=0.5")
    assert json.loads((folder / "results.json").read_text()) == saved


def test_eval_drops_few_shot_exemplars_that_do_not_fit(eval_world, monkeypatch, capsys):
    import eval_math

    root, tok = eval_world
    monkeypatch.chdir(root)
    report = eval_main(root, "--benchmarks=gsm8k", "--max_new_tokens=64")
    out = capsys.readouterr().out
    shots = report["benchmarks"]["gsm8k"]["shots"]
    assert 0 <= shots < len(eval_math.GSM8K_SHOTS)
    assert any(f"{shots} of {len(eval_math.GSM8K_SHOTS)}" in ln and "--style=r1" in ln for ln in out.splitlines())
    examples = eval_math.load_benchmark("gsm8k", str(root / "bench"))

    def longest(k):
        bos = tok.bos_id is not None
        return max(len(tok.encode(eval_math.build_prompt(e, "gsm8k", n_shots=k), bos=bos)) for e in examples)
    assert longest(shots) + 64 <= 256 < longest(shots + 1) + 64  # the most exemplars that leave room to answer
    rows = [json.loads(line) for line in open(root / "out" / "eval" / "toy" / "ckpt-000003" / "fewshot-gsm8k-all"
                                              / "samples_gsm8k.jsonl")]
    assert all(r["prompt"].count("Question:") == shots + 1 for r in rows)


# ---- plot.py and the optional W&B logger ---------------------------------------------------------------------------

def test_plot_draws_every_panel_a_run_has(tmp_path):
    import plot
    rows = [{"kind": "train", "step": s, "tokens": 128 * s, "loss": 3.0 / s, "lr": 1e-3} for s in range(1, 6)]
    rows += [{"kind": "eval", "step": 5, "tokens": 640, "val": {"web": 2.0, "qa": 1.5}, "sample": "x"}]
    rl_rows = [{"kind": "train", "step": s, "reward": -1 + s / 5, "response_len": 20 + s, "accuracy": s / 10}
               for s in range(1, 4)] + [{"kind": "eval", "step": 3, "accuracy": {"synth": 0.2}}]
    for name, rs in (("mid", rows), ("rl", rl_rows)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs) + '{"kind": "tr')
    runs = {n: plot.read_metrics(str(tmp_path / n)) for n in ("mid", "rl")}
    assert len(runs["mid"]) == 6  # the partial last line of a run in progress is left out
    panels = plot.collect_panels(runs, "step", window=2)
    assert list(panels) == ["training loss", "learning rate", "validation loss", "reward (sampled)",
                            "response length (sampled)", "accuracy"]
    assert panels["training loss"]["lines"]["mid"][1][:2] == [3.0, (3.0 + 1.5) / 2]  # smoothed
    assert set(panels["accuracy"]["lines"]) == {"rl sampled", "rl greedy eval synth"}
    assert set(panels["validation loss"]["lines"]) == {"mid web", "mid qa"}
    pytest.importorskip("matplotlib")
    path = plot.main([f"--run={tmp_path / 'mid'},{tmp_path / 'rl'}", f"--out={tmp_path / 'c.png'}"])
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv,words", [
    (["--run=no/such/run"], ["run='no/such/run'", "metrics"]),
    (["--x=time"], ["x must be"]),
])
def test_plot_user_errors(argv, words, capsys):
    import plot
    with pytest.raises(SystemExit) as e:
        configurator.run_cli(lambda: plot.main(argv), argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and all(w in err[0] for w in words), err


def test_plot_and_wandb_missing_packages_are_one_line_errors(tmp_path, monkeypatch):
    import plot
    import runtime  # the W&B logger is the stages' (runtime.py), not plot.py's
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 1.0}\n')
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(configurator.UserError, match="pip install matplotlib"):
        plot.main([f"--run={tmp_path}"])
    monkeypatch.setitem(sys.modules, "wandb", None)
    c = type("C", (), {"wandb_log": True})()
    with pytest.raises(configurator.UserError, match="pip install wandb.*--wandb_log=False"):
        runtime.wandb_init(c, "out/x")
    assert runtime.wandb_init(type("C", (), {"wandb_log": False})(), "out/x") is None
