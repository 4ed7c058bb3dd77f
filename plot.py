"""
Curves of a run from its metrics.jsonl (midtrain.py and rl.py both write one into their out dir): training loss,
learning rate, validation loss per source, reward, response length and accuracy over steps, one PNG. Needs
matplotlib (`pip install matplotlib`); nothing else in the project does.

    python plot.py                                           # out/midtrain -> out/midtrain/curves.png
    python plot.py --run=out/rl                              # reward, response length, accuracy of an RL run
    python plot.py --run=out/midtrain/stable,out/midtrain --x=tokens  # several runs overlaid; x in tokens (mid-training)

The stages' optional Weights & Biases logging of the same records (`--wandb_log=True`) is runtime.wandb_init /
wandb_record: a logger is part of running a stage, not of drawing its curves.
"""
from __future__ import annotations

import io
import json
import math
import os

from configurator import UserError, UserFileError, configure, run_cli
from data.files import write_atomic

run = "out/midtrain"  # run folder(s) holding metrics.jsonl (or the files themselves), comma-separated to overlay
out = ""  # the PNG; "" = <first run>/curves.png
x = "step"  # x axis: "step" | "tokens" (mid-training rows carry tokens seen) | "elapsed" (seconds)
smooth = 1  # trailing moving average over this many training points (evaluations are never smoothed)

# a panel: title, y label, the rows' kind ("train" | "eval"), the field; a dict field gives one line per key
PANELS = (
    ("training loss", "loss", "train", "loss"),
    ("learning rate", "lr", "train", "lr"),
    ("validation loss", "loss", "eval", "val"),
    ("reward (sampled)", "mean reward", "train", "reward"),
    ("response length (sampled)", "tokens", "train", "response_len"),
    ("accuracy", "accuracy", "train", "accuracy"),
    ("accuracy", "accuracy", "eval", "accuracy"),
)


def read_metrics(path: str) -> list[dict]:
    """The records of one run; a run folder means its metrics.jsonl. A last line still being written is skipped."""
    file = os.path.join(path, "metrics.jsonl") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise UserFileError(f"run={path!r}: no metrics file at {file} (pass a run folder written by midtrain.py or "
                            "rl.py, e.g. --run=out/midtrain)")
    with open(file, encoding="utf-8") as f:
        lines = f.read().split("\n")
    rows = []
    for lineno, line in enumerate(lines[:-1], 1):  # lines[-1] is "" or a partial line of a run in progress
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise UserError(f"{file}:{lineno}: not valid JSON ({e.msg}); is it a metrics.jsonl?") from None
    if not rows:
        raise UserError(f"{file} has no records yet: the run writes one per training step")
    return rows


def moving_average(ys: list[float], window: int) -> list[float]:
    out_ys = []
    for i in range(len(ys)):
        part = [y for y in ys[max(0, i - window + 1):i + 1] if math.isfinite(y)]
        out_ys.append(sum(part) / len(part) if part else float("nan"))
    return out_ys


def series(rows: list[dict], kind: str, field: str, x_key: str, window: int) -> dict[str, tuple[list, list]]:
    """-> {line label: (xs, ys)} of `field` in the rows of `kind`; a dict-valued field gives a line per key."""
    lines: dict[str, tuple[list, list]] = {}
    for r in rows:
        if r.get("kind") != kind or field not in r or r.get(x_key) is None:
            continue
        value = r[field]
        items = value.items() if isinstance(value, dict) else [("", value)]
        for key, v in items:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                xs, ys = lines.setdefault(key, ([], []))
                xs.append(r[x_key])
                ys.append(float(v))
    if kind == "train" and window > 1:
        lines = {k: (xs, moving_average(ys, window)) for k, (xs, ys) in lines.items()}
    return lines


def collect_panels(runs: dict[str, list[dict]], x_key: str, window: int) -> dict[str, dict]:
    """-> {title: {"ylabel", "lines": {label: (xs, ys)}}}, only the panels some run has data for."""
    panels: dict[str, dict] = {}
    for title, ylabel, kind, field in PANELS:
        for name, rows in runs.items():
            for key, xy in series(rows, kind, field, x_key, window).items():
                parts = [name if len(runs) > 1 else "", "greedy eval" if kind == "eval" and field == "accuracy"
                         else "", key, "sampled" if (kind, field) == ("train", "accuracy") else ""]
                label = " ".join(p for p in parts if p) or field
                panels.setdefault(title, {"ylabel": ylabel, "lines": {}})["lines"][label] = xy
    return panels


def draw(panels: dict[str, dict], x_key: str, title: str) -> bytes:
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plot.py needs matplotlib: pip install matplotlib") from None
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, (name, panel) in zip(axes.flat, panels.items()):
        for label, (xs, ys) in panel["lines"].items():
            ax.plot(xs, ys, label=label, marker="o" if len(xs) < 20 else None, markersize=3)
        ax.set(title=name, xlabel=x_key, ylabel=panel["ylabel"])
        if name == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if len(panel["lines"]) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    return png.getvalue()


def main(argv: list[str] | None = None) -> str:
    cfg = configure({"run": run, "out": out, "x": x, "smooth": smooth}, argv, verbose=False)
    if cfg["x"] not in ("step", "tokens", "elapsed"):
        raise UserError(f"x must be 'step', 'tokens' or 'elapsed', got {cfg['x']!r}")
    if cfg["smooth"] < 1:
        raise UserError(f"smooth must be >= 1 (1 = raw points), got {cfg['smooth']}")
    names = [p.strip() for p in cfg["run"].split(",") if p.strip()]
    if not names:
        raise UserError("run is empty: pass --run=<run folder>, e.g. --run=out/midtrain")
    runs = {os.path.normpath(p): read_metrics(p) for p in names}
    panels = collect_panels(runs, cfg["x"], cfg["smooth"])
    if not panels:
        raise UserError(f"no curves over {cfg['x']!r} in {', '.join(runs)}: its records carry no {cfg['x']} "
                        "(--x=step works for every run)")
    first = names[0] if os.path.isdir(names[0]) else os.path.dirname(names[0])
    path = cfg["out"] or os.path.join(first, "curves.png")
    write_atomic(path, draw(panels, cfg["x"], " + ".join(runs)))
    print(f"wrote {path}: {', '.join(panels)}")
    return path


if __name__ == "__main__":
    run_cli(main)
