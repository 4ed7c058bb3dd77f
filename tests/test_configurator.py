import pytest

from configurator import UserError, configure


def fresh():
    return {"lr": 1e-3, "steps": 10, "name": "run", "compile": False, "mix": {"web": 1.0}, "tag": None,
            "_private": 1, "pytest": pytest, "MAX_LEN": 5}


def test_flags_and_file(tmp_path):
    ns = fresh()
    f = tmp_path / "c.py"
    f.write_text("steps = 20\nmix = {'web': 0.5, 'qa': 0.5}\nlr = steps * 1e-4\n")
    cfg = configure(ns, [str(f), "--lr=3", "--name=out/x", "--compile=true", "--tag=7"], verbose=False)
    assert cfg == {"lr": 3.0, "steps": 20, "name": "out/x", "compile": True, "mix": {"web": 0.5, "qa": 0.5}, "tag": 7}
    assert ns["lr"] == 3.0 and isinstance(ns["lr"], float) and "pytest" not in cfg
    with pytest.raises(ValueError, match="unknown config key 'MAX_LEN'"):  # constants are not knobs
        configure(fresh(), ["--MAX_LEN=6"], verbose=False)


@pytest.mark.parametrize("argv,match", [
    (["--lrr=1"], "unknown config key 'lrr'"),
    (["--steps=1.5"], "expects int"),
    (["--compile=1"], "expects bool"),
    (["--steps"], "--key=value"),
    (["nope.py"], "does not exist"),
])
def test_rejects_bad_input(argv, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        configure(fresh(), argv, verbose=False)


def test_file_with_unknown_key(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("stepz = 3\n")
    with pytest.raises(ValueError, match="unknown key 'stepz'"):
        configure(fresh(), [str(f)], verbose=False)


def test_bad_value_names_key_and_type():
    with pytest.raises(UserError, match=r"'abc' for config key 'lr': expects float \(default 0.001\), e.g. --lr=0.001"):
        configure(fresh(), ["--lr=abc"], verbose=False)
    with pytest.raises(UserError, match=r"unknown config key 'stepz' \(did you mean 'steps'\?\)"):
        configure(fresh(), ["--stepz=3"], verbose=False)


def test_config_file_errors_are_user_errors(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("steps = = 3\n")
    with pytest.raises(UserError, match="line 1"):
        configure(fresh(), [str(f)], verbose=False)
    with pytest.raises(FileNotFoundError):  # a UserFileError is still a FileNotFoundError for callers
        configure(fresh(), ["missing.py"], verbose=False)


def test_debug_flag_is_not_a_knob():
    assert configure(fresh(), ["--debug=True", "--steps=3"], verbose=False)["steps"] == 3


SCRIPT = '''"""A script.

    python s.py --steps=3      # three steps
"""
# the run
steps = 10  # how many
lr = 1e-3
# a comment far away

name = "x"
MAX = 3
'''


def test_help_reads_comments_and_usage(tmp_path, capsys):
    src = tmp_path / "s.py"
    src.write_text(SCRIPT)
    ns = {"steps": 10, "lr": 1e-3, "name": "x", "tag": None}
    with pytest.raises(SystemExit) as e:
        configure(ns, ["--steps=3", "--help"], source=str(src))
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "python s.py --steps=3      # three steps" in out
    assert "  # the run\n  steps: int = 10  # how many\n  lr:    float = 0.001\n  name:  str = 'x'\n" in out
    assert "far away" not in out and "tag:   any = None" in out and "MAX" not in out
    assert ns["steps"] == 10  # --help changes nothing


def test_an_auto_default_also_takes_a_bool():
    ns = {"grad_checkpointing": "auto", "device": "auto"}
    assert configure(dict(ns), ["--grad_checkpointing=True"], verbose=False)["grad_checkpointing"] is True
    assert configure(dict(ns), ["--grad_checkpointing=auto"], verbose=False)["grad_checkpointing"] == "auto"
    with pytest.raises(UserError, match="grad_checkpointing"):
        configure(dict(ns), ["--grad_checkpointing=3"], verbose=False)
