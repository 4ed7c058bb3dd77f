"""
Math evaluation from the command line: a checkpoint on the benchmarks, results in a folder named after what was
measured (never overwritten by other knobs), one table printed. The benchmarks, prompts, scoring and the evaluation
loop live in benchmarks.py (rl.py and study.py use them too); answers are graded by the grader (also RL's reward).

    python eval_math.py --ckpt=out/midtrain --benchmarks=gsm8k,math500 --limit=50      # (also `--limit 50`)

    from eval_math import evaluate, load_benchmark      # = benchmarks.evaluate, benchmarks.load_benchmark
    evaluate(model, tokenizer, ["gsm8k", "math500"], limit=50)
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

# the benchmark names users reach through this module (eval_math.evaluate, .load_benchmark, .build_prompt, ...)
from benchmarks import BENCHMARKS, GSM8K_SHOTS, R1_TEMPLATE, build_prompt, evaluate, load_benchmark  # noqa: F401
from configurator import UserError, UserFileError, run_cli

_HERE = os.path.dirname(os.path.abspath(__file__))

# -----------------------------------------------------------------------------------------------------------------
# command line (nanoGPT-style knobs; `--key=value` or `--key value`, or a config file)

ckpt = "out/midtrain"          # checkpoint folder, run folder (follows `latest`) or any HF Llama snapshot
benchmarks = "gsm8k,math500"   # comma-separated, from BENCHMARKS
data_dir = ""                  # "" = default_data_dir(benchmark)
style = "fewshot"              # fewshot | r1
n = 1                          # samples per problem (n > 1 needs temperature > 0)
temperature = 0.0
top_p = 1.0
max_new_tokens = 512           # capped per benchmark to what the model's context leaves after its longest prompt
limit = 0                      # first `limit` problems of each benchmark; 0 = all
batch_size = 16
out_dir = ""                   # "" = out/eval/<run>/<ckpt-N>/<style>-<benchmarks>-<limitN | all>
device = "auto"                # auto = cuda if available, else cpu
dtype = "auto"                 # auto = bfloat16 on cuda, float32 on cpu
seed = 0
progress = True
CLI_KNOBS = ("ckpt", "benchmarks", "data_dir", "style", "n", "temperature", "top_p", "max_new_tokens", "limit",
             "batch_size", "out_dir", "device", "dtype", "seed", "progress")


def _join_spaced_flags(argv: list[str]) -> list[str]:
    """`--limit 50` -> `--limit=50` (configurator reads `--key=value`); config file paths pass through."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and "=" not in a and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
        else:
            out.append(a)
            i += 1
    return out


def output_folder(ckpt_path: str, cfg: dict) -> tuple[str, int | None]:
    """-> (out/eval/<run>/<ckpt-N>/<style>-<benchmarks>-<limit>, the checkpoint's step or None). The run is the run
    folder's path under out/ (study runs are nested) or, for any other model folder, its name."""
    folder = os.path.abspath(ckpt_path)
    m = re.fullmatch(r"ckpt-(\d+)", os.path.basename(folder))
    run_dir = os.path.dirname(folder) if m else folder
    outs = os.path.abspath("out")
    run = os.path.relpath(run_dir, outs) if run_dir.startswith(outs + os.sep) else os.path.basename(run_dir)
    what = f"{cfg['style']}-{'+'.join(b.strip() for b in cfg['benchmarks'].split(','))}-" + (
        f"limit{cfg['limit']}" if cfg["limit"] else "all")
    parts = [run, os.path.basename(folder)] if m else [run]
    return os.path.join("out", "eval", *parts, what), (int(m.group(1)) if m else None)


def check_not_overwriting(out: str, meta: dict) -> None:
    """A results.json of another checkpoint or other knobs is never replaced silently (batch size and progress
    bars do not change results)."""
    path = os.path.join(out, "results.json")
    if not os.path.isfile(path):
        return
    with open(path) as f:
        old = json.load(f)
    ignore = ("batch_size", "progress", "out_dir", "ckpt")

    def key(m):
        return {"checkpoint": m.get("checkpoint"), **{k: v for k, v in m.get("knobs", {}).items() if k not in ignore}}
    mine, theirs = key(meta), key(old)
    changed = [f"{k} {theirs.get(k)!r} -> {v!r}" for k, v in mine.items() if theirs.get(k) != v]
    if changed:
        raise UserError(f"{out} holds results of other knobs ({', '.join(changed)}): pass --out_dir=<another "
                        f"folder>, or delete {out} to replace them")


def git_commit() -> str | None:
    """The code's commit ("-dirty" when tracked files differ from it), None outside a git checkout."""
    try:
        sha = subprocess.run(["git", "-C", _HERE, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if sha.returncode:
            return None
        dirty = subprocess.run(["git", "-C", _HERE, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha.stdout.strip() + ("-dirty" if dirty else "")


def main(argv: list[str] | None = None) -> dict:
    from configurator import configure

    knobs = {k: globals()[k] for k in CLI_KNOBS}
    cfg = configure(knobs, _join_spaced_flags(sys.argv[1:] if argv is None else argv))
    import torch

    import model as model_lib

    dev = cfg["device"] if cfg["device"] != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = {"auto": torch.bfloat16 if dev.startswith("cuda") else torch.float32, "bfloat16": torch.bfloat16,
              "float16": torch.float16, "float32": torch.float32}
    if cfg["dtype"] not in dtypes:
        raise UserError(f"dtype must be one of {sorted(dtypes)}, got {cfg['dtype']!r}")
    if not os.path.exists(cfg["ckpt"]):
        raise UserFileError(f"ckpt={cfg['ckpt']!r} not found: pass a checkpoint or run folder (`python midtrain.py` "
                            "writes out/midtrain) or an HF Llama snapshot")
    path = model_lib.resolve_checkpoint(cfg["ckpt"])
    out, step = output_folder(path, cfg)
    out = cfg["out_dir"] or out
    meta = {"checkpoint": os.path.abspath(path), "step": step, "knobs": cfg, "git_commit": git_commit()}
    check_not_overwriting(out, meta)  # before the model loads: a clash costs nothing
    net, tok, _ = model_lib.load_checkpoint(path, dtype=dtypes[cfg["dtype"]], device=dev)
    net.eval()
    report = evaluate(net, tok, cfg["benchmarks"].split(","), data_dir=cfg["data_dir"] or None, style=cfg["style"],
                      n=cfg["n"], temperature=cfg["temperature"], top_p=cfg["top_p"],
                      max_new_tokens=cfg["max_new_tokens"], limit=cfg["limit"] or None,
                      batch_size=cfg["batch_size"], out_dir=out, progress=cfg["progress"], seed=cfg["seed"],
                      meta=meta)
    print(f"wrote {os.path.join(out, 'results.json')}")
    return report


if __name__ == "__main__":
    run_cli(main)
