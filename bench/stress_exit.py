"""
Exit status of finished multi-process runs (issue 28): start 2-rank torchrun runs of midtrain.py and rl.py, under
parallel=fsdp and parallel=ddp on CPU (gloo), over and over on tiny configs, and count the runs that did not exit 0.
Not part of CI: a rare abort at exit ("terminate called without an active exception", exitcode -6) needs many runs
to show.

    python bench/stress_exit.py [--runs=100] ["--kinds=['rl-fsdp', 'rl-ddp']"] [--timeout=300]

runs: per kind (the kinds take turns). Each run trains a few steps with checkpoints, eval and the sampling copy
(the paths with collectives: all-gathers, reduce-scatters, all-reduces, barriers). A failed run's log is kept under
log_dir; the exit status is 1 when any run failed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configurator import UserError, configure, run_cli  # noqa: E402

runs = 100  # runs of each kind
kinds = ["midtrain-fsdp", "midtrain-ddp", "rl-fsdp", "rl-ddp"]
timeout = 300  # seconds for one run (a hang counts as a failure)
log_dir = "out/stress_exit"  # failed runs' logs
KINDS = ("midtrain-fsdp", "midtrain-ddp", "rl-fsdp", "rl-ddp")
WORDS = "Question: Mia has 3 apples and buys 4 more. How many apples? Answer: 3 + 4 = 7. The answer is \\boxed{7}."


def make_world(root: str) -> None:
    """The tiny world both stages train in: a BPE, two token shards (midtrain), a random 'test' model checkpoint
    and 40 prompts (rl)."""
    import model as model_lib
    from data.shards import write_shard
    from data.tokenizer import Tokenizer

    tok = Tokenizer.train([WORDS] * 3, vocab_size=290)
    tok.save(os.path.join(root, "tok"))
    rng = np.random.default_rng(0)
    for name, period in (("a", 7), ("b", 11)):
        base = rng.integers(0, 256, size=period)
        for split, n in (("train", 20_000), ("val", 1_000)):
            toks = np.where(rng.random(n) < 0.7, np.tile(base, n // period + 1)[:n], rng.integers(0, 256, size=n))
            write_shard(os.path.join(root, name, f"{split}_000000.bin"), toks, tok.vocab_size)
    cfg = model_lib.LlamaConfig.from_preset("test", vocab_size=tok.vocab_size, bos_id=tok.bos_id, eos_id=tok.eos_id)
    torch.manual_seed(0)
    model_lib.save_checkpoint(os.path.join(root, "base", "ckpt-000000"), model_lib.Llama(cfg), tokenizer=tok)
    with open(os.path.join(root, "prompts.jsonl"), "w") as f:
        for i in range(40):
            f.write(json.dumps({"problem": f"Mia has {i} apples and buys {i % 7} more. How many apples?",
                                "solution": f"#### {i + i % 7}"}) + "\n")


def command(kind: str, root: str, out: str) -> list[str]:
    stage, parallel = kind.split("-")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    if stage == "midtrain":  # 8 steps of 2 x 1 x 32 x 2 accum; eval + greedy sample at 4 and 8; a checkpoint each 2
        return [*launch, "midtrain.py", f"--tokenizer={root}/tok", f"--data_root={root}", "--synth_dir=",
                "--stage=decay", "--decay_init_from=scratch:test", f"--decay_out_dir={out}",
                "--decay_mixture={'a': 0.5, 'b': 0.5}", "--seq_len=32", "--micro_batch=1", "--total_batch_tokens=128",
                "--warmup_tokens=256", "--decay_tokens=1024", "--lr=0.01", "--log_interval=0", "--ckpt_interval=2",
                "--keep_last_n=2", "--eval_interval=4", "--eval_batches=2", "--sample_tokens=4",
                "--sample_prompt=Question: 3 + 4?", "--grad_checkpointing=True", f"--parallel={parallel}"]
    # 4 RL steps with a reference model (KL), a checkpoint each 2; the toy reward below (a random model never
    # earns the math grader's reward, and all-equal rewards would skip the update)
    return [*launch, os.path.relpath(__file__, ROOT), "--rl-worker", f"--init_from={root}/base", f"--out_dir={out}",
            f"--prompt_file={root}/prompts.jsonl", "--question_field=problem", "--answer_field=solution",
            "--template=Q: {question}\nA:", "--max_prompt_len=64", "--max_response_len=3", "--group_size=8",
            "--prompts_per_step=8", "--lr=2e-2", "--max_steps=4", "--eval_interval=0", "--log_interval=0",
            "--ckpt_interval=2", "--keep_last_n=1", "--micro_batch=4", "--kl_coef=0.05", f"--parallel={parallel}"]


def even_first_token(completion, example) -> float:
    """+1 when the response starts with an even token id: about half the samples of a random model."""
    return 1.0 if completion.tokens[0] % 2 == 0 else -1.0


def main(argv=None):
    c = configure(globals(), argv)
    bad = [k for k in c["kinds"] if k not in KINDS]
    if bad or not c["kinds"] or c["runs"] < 1 or c["timeout"] <= 0:
        raise UserError(f"need --runs >= 1, --timeout > 0 and --kinds a non-empty list from {list(KINDS)}; got "
                        f"runs={c['runs']}, timeout={c['timeout']}, kinds={c['kinds']}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    done, failed, seconds = Counter(), Counter(), Counter()
    os.makedirs(c["log_dir"], exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stress_exit_") as root:
        make_world(root)
        for i in range(c["runs"]):
            for kind in c["kinds"]:
                out = os.path.join(root, "run")
                shutil.rmtree(out, ignore_errors=True)
                t0 = time.time()
                try:
                    r = subprocess.run(command(kind, root, out), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, timeout=c["timeout"])
                    status, text = r.returncode, r.stdout
                except subprocess.TimeoutExpired as e:
                    status, text = "timeout", (e.stdout or b"").decode(errors="replace")
                seconds[kind] += time.time() - t0
                done[kind] += 1
                if status != 0:
                    failed[kind] += 1
                    path = os.path.join(c["log_dir"], f"{kind}-{i:04d}.log")
                    with open(path, "w") as f:
                        f.write(text)
                    print(f"run {i} {kind}: exit status {status}, log {path}", flush=True)
            print(f"after {i + 1} round(s): " + ", ".join(f"{k} {failed[k]}/{done[k]} failed" for k in c["kinds"]),
                  flush=True)
    print(f"\n{'kind':>14} {'runs':>5} {'failed':>7} {'s/run':>6}")
    for k in c["kinds"]:
        print(f"{k:>14} {done[k]:5d} {failed[k]:7d} {seconds[k] / done[k]:6.1f}")
    return sum(failed.values())


def rl_worker(argv: list[str]) -> None:
    """One rank of an rl run (under torchrun): rl.py's main with the toy reward."""
    import rl

    run_cli(lambda: rl.main(argv, reward_fn=even_first_token))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rl-worker"]:
        rl_worker(sys.argv[2:])
    else:
        sys.exit(1 if run_cli(main) else 0)
