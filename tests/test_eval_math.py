"""eval_math.py, the evaluation CLI: flags, and a tiny model end to end through the checkpoint loader and
sample.generate. The benchmarks, prompts and evaluate() are tested in test_benchmarks.py."""
from __future__ import annotations

import json
import os

import pytest
from test_benchmarks import write_mini_data

import eval_math


def test_cli_flags():
    assert eval_math._join_spaced_flags(["cfg.py", "--limit", "50", "--style=r1", "--benchmarks", "gsm8k,math500"]) \
        == ["cfg.py", "--limit=50", "--style=r1", "--benchmarks=gsm8k,math500"]
    with pytest.raises(ValueError, match="unknown config key"):
        eval_math.main(["--nope=1"])
    with pytest.raises(ValueError, match="'many'"):
        eval_math.main(["--limit", "many"])
    with pytest.raises(ValueError, match="expects int"):
        eval_math.main(["--limit", "2.5"])


def test_end_to_end_tiny_model(tmp_path):
    """A tiny random model through the real checkpoint loader, sample.generate and the CLI."""
    pytest.importorskip("sample", reason="sample.py is not in the repo yet")
    import torch

    from data.tokenizer import Tokenizer
    from model import Llama, LlamaConfig, save_checkpoint

    data = tmp_path / "data"
    write_mini_data(data)
    text = "Question: How many apples are there in the basket? Answer: 12 + 30 = 42. The answer is \\boxed{42}."
    tok = Tokenizer.train([text] * 4, vocab_size=280)
    torch.manual_seed(0)
    net = Llama(LlamaConfig.from_preset("test", vocab_size=tok.vocab_size, max_seq_len=8192))  # 8-shot prompts
    save_checkpoint(str(tmp_path / "run" / "ckpt-000001"), net, tokenizer=tok)
    out = tmp_path / "eval"
    report = eval_math.main([f"--ckpt={tmp_path / 'run'}", "--benchmarks=gsm8k,math500", "--limit=2",
                             "--max_new_tokens=6", f"--data_dir={data}", f"--out_dir={out}", "--progress=False",
                             "--batch_size=2"])
    assert set(report["benchmarks"]) == {"gsm8k", "math500"}
    assert report["benchmarks"]["gsm8k"]["count"] == 2
    rows = [json.loads(line) for line in open(out / "samples_math500.jsonl")]
    assert len(rows) == 2 and all(r["response_tokens"] <= 6 for r in rows)
    assert os.path.isfile(out / "results.json")
