"""
Config for the stage scripts, nanoGPT-style: the knobs are plain module-level variables at the top of a script;
a config file (a .py file of assignments, e.g. config/octothinker_1b_stable.py) and `--key=value` flags override
them, in the order given on the command line.

    # at the top of midtrain.py, after the knobs:
    from configurator import configure
    config = configure(globals())       # reads sys.argv[1:], rewrites the knobs in place, returns them as a dict

    if __name__ == "__main__":
        run_cli(main)                   # user mistakes: one line on stderr, exit status 2

Unknown keys and values of the wrong type are errors, so a typo never silently trains the wrong thing.
`--help` prints the knobs (type, default, the comment beside them in the script's source) and the script's usage
lines. A mistake the user can fix (bad knob, value, path, data, a model that cannot do the asked thing) is raised
as UserError: run_cli prints it as one line and exits with status 2; anything else is a bug and keeps its
traceback. `--debug=True` (any script) or NANOOCTO_DEBUG=1 shows tracebacks for user errors too.
"""
from __future__ import annotations

import ast
import difflib
import io
import json
import os
import sys
import time
import tokenize

KNOB_TYPES = (int, float, bool, str, list, tuple, dict, type(None))
DEBUG_ENV = "NANOOCTO_DEBUG"
USER_ERROR_STATUS = 2  # what argparse uses for bad command lines


class UserError(ValueError):
    """A mistake the user can fix; the message names the knob or file, what was expected and what to do.
    A ValueError, so callers (and tests) that catch ValueError keep working."""


class UserFileError(UserError, FileNotFoundError):
    """A path the user gave (or a stage's input they have not made yet) does not exist."""


def knobs(namespace: dict) -> dict:
    # lower_case names only: an UPPER_CASE constant (or one imported, like concurrent.futures.FIRST_COMPLETED) is
    # not a knob, so it is neither overridable nor stored in checkpoints
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and k.islower() and isinstance(v, KNOB_TYPES)}


def type_name(value) -> str:
    return "any" if value is None else type(value).__name__


def check_type(key: str, new, old):
    """Accept `new` for a knob whose default is `old`: same type, int for float, anything for a None default, a
    bool for an "auto" default."""
    if old is None or new is None:
        return new
    if old == "auto" and isinstance(new, bool):  # "auto" or a decision (grad_checkpointing)
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
    raise UserError(f"config key {key!r} expects {type(old).__name__} (default {old!r}), got "
                    f"{type(new).__name__} {new!r}")


def parse_value(text: str, old, key: str = "?"):
    if isinstance(old, bool) and text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if isinstance(old, str) or old is None:
            return text  # bare strings need no quotes: --out_dir=out/run1
        raise UserError(f"cannot parse value {text!r} for config key {key!r}: expects {type(old).__name__} "
                        f"(default {old!r}), e.g. --{key}={old!r}") from None


def configure(namespace: dict, argv: list[str] | None = None, verbose: bool = True, source: str | None = None) -> dict:
    """Apply config files and --key=value flags of argv (default sys.argv[1:]) to the knobs of `namespace`.
    `--help` prints the knobs as documented in `source` (default: the calling script's file) and exits."""
    argv = sys.argv[1:] if argv is None else argv
    defaults = knobs(namespace)
    if any(a.partition("=")[0] in ("--help", "-h") for a in argv):
        caller = sys._getframe(1).f_globals  # the script whose main() called us: its source documents the knobs
        try:
            print(help_text(defaults, source or caller.get("__file__")), flush=True)
        except BrokenPipeError:  # `--help | head`: the reader left; no traceback for that
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0)
    for arg in argv:
        if arg.startswith("--"):
            key, eq, text = arg[2:].partition("=")
            key = key.replace("-", "_")
            if key == "debug":  # read by run_cli from sys.argv, not a knob of any script
                continue
            if not eq:
                raise UserError(f"flag {arg!r} must be written --key=value (e.g. --{key}=...); --help lists the "
                                "knobs")
            if key not in defaults:
                raise UserError(f"unknown config key {key!r}{did_you_mean(key, defaults)}; --help lists the knobs")
            namespace[key] = check_type(key, parse_value(text, defaults[key], key), defaults[key])
        else:
            apply_file(namespace, defaults, arg)
    config = knobs({k: namespace[k] for k in defaults})
    if verbose and int(os.environ.get("RANK", "0")) == 0:
        print_config(config)
    return config


def did_you_mean(key: str, defaults: dict) -> str:
    close = difflib.get_close_matches(key, list(defaults), n=3)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def apply_file(namespace: dict, defaults: dict, path: str):
    if not os.path.isfile(path):
        hint = " (flags are written --key=value)" if not path.endswith(".py") else ""
        raise UserFileError(f"config file {path!r} does not exist{hint}: give a .py file of knob assignments, e.g. "
                            "config/octothinker_1b_stable.py")
    scope = {k: namespace[k] for k in defaults}
    with open(path) as f:
        code = f.read()
    # A config file is the user's own Python (like nanoGPT's); it may compute values from other knobs.
    try:
        exec(compile(code, path, "exec"), {}, scope)
    except SyntaxError as e:
        raise UserError(f"config file {path!r} line {e.lineno}: {e.msg}; it must be Python assignments") from e
    except Exception as e:
        raise UserError(f"config file {path!r} failed: {type(e).__name__}: {e}") from e
    for key, value in scope.items():
        if key.startswith("_") or not isinstance(value, KNOB_TYPES):
            continue
        if key not in defaults:
            raise UserError(f"config file {path!r} sets unknown key {key!r}{did_you_mean(key, defaults)}; --help "
                            "lists the knobs")
        namespace[key] = check_type(key, value, defaults[key])


def print_config(config: dict):
    width = max(map(len, config), default=0)
    for k, v in config.items():
        print(f"{k:>{width}} = {json.dumps(v) if isinstance(v, (dict, list)) else v!r}")


# -----------------------------------------------------------------------------------------------------------------
# --help: the knobs as the script's source documents them


def knob_docs(source: str, names) -> dict:
    """-> {knob: (source text of its default, trailing comment, comment lines just above it)} for each top-level
    assignment of a name in `names` (the last one wins, as at import time)."""
    comments = {}  # line number -> comment text without '#'
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    docs = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id in names):
            continue
        above, i = [], node.lineno - 1
        while i >= 1 and lines[i - 1].lstrip().startswith("#"):  # a comment block touching the assignment
            above.insert(0, comments.get(i, ""))
            i -= 1
        docs[node.targets[0].id] = (ast.get_source_segment(source, node.value) or "",
                                    comments.get(node.end_lineno, ""), above)
    return docs


def usage_lines(doc: str | None) -> list[str]:
    """The docstring's example command lines (python ... / torchrun ...), as written."""
    return [ln.strip() for ln in (doc or "").splitlines() if ln.strip().startswith(("python ", "torchrun "))]


def help_text(defaults: dict, source_path: str | None) -> str:
    source = ""
    if source_path and os.path.isfile(source_path):
        with open(source_path, encoding="utf-8") as f:
            source = f.read()
    docs = knob_docs(source, set(defaults)) if source else {}
    name = os.path.basename(source_path or "script")
    out = [f"usage: python {name} [config.py ...] [--key=value ...]   (applied in order; later ones win)"]
    out += [f"  {ln}" for ln in usage_lines(ast.get_docstring(ast.parse(source)) if source else None)]
    out += ["", "knobs (name: type = default  # comment):"]
    width = max(map(len, defaults), default=0)
    for key, value in defaults.items():
        text, comment, above = docs.get(key, ("", "", []))
        if value is None and text and text != "None":  # a None placeholder the script fills in (e.g. rl's schedule)
            shown, kind = text, type_name(safe_literal(text))
        else:
            shown, kind = (json.dumps(value) if isinstance(value, (dict, list)) else repr(value)), type_name(value)
        out += [f"  # {ln}" if ln else "" for ln in above]
        out.append(f"  {key + ':':<{width + 1}} {kind} = {shown}" + (f"  # {comment}" if comment else ""))
    out += ["", "--debug=True (or NANOOCTO_DEBUG=1) shows a traceback for user errors too."]
    return "\n".join(out)


def safe_literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None


# -----------------------------------------------------------------------------------------------------------------
# the entry point of every script


def debugging(argv: list[str]) -> bool:
    flags = [a.partition("=")[2].lower() for a in argv if a == "--debug" or a.startswith("--debug=")]
    env = os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false")
    return env or any(v in ("", "true", "1") for v in flags)


def run_cli(main, argv: list[str] | None = None):
    """Call main(); a UserError becomes one line on stderr (rank 0 only under torchrun) and exit status 2."""
    argv = sys.argv[1:] if argv is None else argv
    debug = debugging(argv)
    if debug:
        os.environ[DEBUG_ENV] = "1"  # worker processes (study.py's) inherit it
    try:
        return main()
    except UserError as e:
        if debug:
            raise
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        else:  # torchrun stops every rank when the first one exits: let rank 0 print the error first
            time.sleep(2)
        raise SystemExit(USER_ERROR_STATUS) from None
