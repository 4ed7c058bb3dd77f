import pytest

from configurator import configure


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
