"""
Config for the stage scripts, nanoGPT-style: the knobs are plain module-level variables at the top of a script;
a config file (a .py file of assignments, e.g. config/octothinker_1b_stable.py) and `--key=value` flags override
them, in the order given on the command line.

    # at the top of midtrain.py, after the knobs:
    from configurator import configure
    config = configure(globals())       # reads sys.argv[1:], rewrites the knobs in place, returns them as a dict

Unknown keys and values of the wrong type are errors, so a typo never silently trains the wrong thing.
"""
from __future__ import annotations

import ast
import json
import os
import sys

KNOB_TYPES = (int, float, bool, str, list, tuple, dict, type(None))


def knobs(namespace: dict) -> dict:
    # lower_case names only: an UPPER_CASE constant (or one imported, like concurrent.futures.FIRST_COMPLETED) is
    # not a knob, so it is neither overridable nor stored in checkpoints
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and k.islower() and isinstance(v, KNOB_TYPES)}


def check_type(key: str, new, old):
    """Accept `new` for a knob whose default is `old`: same type, int for float, anything for a None default."""
    if old is None or new is None:
        return new
    if isinstance(old, bool) or isinstance(new, bool):
        if isinstance(old, bool) and isinstance(new, bool):
            return new
    elif isinstance(old, float) and isinstance(new, (int, float)):
        return float(new)
    elif isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return type(old)(new)
    elif type(new) is type(old):
        return new
    raise ValueError(f"config key {key!r} expects {type(old).__name__} (default {old!r}), got {type(new).__name__} {new!r}")


def parse_value(text: str, old):
    if isinstance(old, bool) and text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if isinstance(old, str) or old is None:
            return text  # bare strings need no quotes: --out_dir=out/run1
        raise ValueError(f"cannot parse value {text!r} for config key") from None


def configure(namespace: dict, argv: list[str] | None = None, verbose: bool = True) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    defaults = knobs(namespace)
    for arg in argv:
        if arg.startswith("--"):
            key, eq, text = arg[2:].partition("=")
            key = key.replace("-", "_")
            if not eq:
                raise ValueError(f"flag {arg!r} must be written --key=value")
            if key not in defaults:
                raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(sorted(defaults))}")
            namespace[key] = check_type(key, parse_value(text, defaults[key]), defaults[key])
        else:
            apply_file(namespace, defaults, arg)
    config = knobs({k: namespace[k] for k in defaults})
    if verbose and int(os.environ.get("RANK", "0")) == 0:
        print_config(config)
    return config


def apply_file(namespace: dict, defaults: dict, path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    scope = {k: namespace[k] for k in defaults}
    with open(path) as f:
        code = f.read()
    # A config file is the user's own Python (like nanoGPT's); it may compute values from other knobs.
    exec(compile(code, path, "exec"), {}, scope)
    for key, value in scope.items():
        if key.startswith("_") or not isinstance(value, KNOB_TYPES):
            continue
        if key not in defaults:
            raise ValueError(f"config file {path!r} sets unknown key {key!r}")
        namespace[key] = check_type(key, value, defaults[key])


def print_config(config: dict):
    width = max(map(len, config), default=0)
    for k, v in config.items():
        print(f"{k:>{width}} = {json.dumps(v) if isinstance(v, (dict, list)) else v!r}")
