"""A fresh install: no project import name is shadowed by (or shadows) an installed package, and transformers' Llama
loads beside the project in one process with the project root first on sys.path, as every script runs."""
from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

# Top-level import names of packages people in this field commonly install beside a training codebase (and their
# dependencies): a project module of the same name would shadow them, as kernels/ once shadowed Hugging Face's
# `kernels`, which transformers 5 imports.
FIELD = {
    "accelerate", "apex", "bitsandbytes", "datasets", "deepspeed", "einops", "evaluate", "flash_attn", "fsspec",
    "huggingface_hub", "hydra", "jinja2", "kernels", "latex2sympy2_extended", "liger_kernel", "lightning", "llama_models",
    "lm_eval", "math_verify", "matplotlib", "megatron", "mlflow", "nanotron", "nemo", "numpy", "omegaconf", "openrlhf",
    "pandas", "peft", "pyarrow", "pytest", "pytorch_lightning", "ray", "regex", "safetensors", "scipy", "sentencepiece",
    "sglang", "sympy", "tensorboard", "tiktoken", "tokenizers", "torch", "torchao", "torchdata", "torchtitan",
    "torchtune", "tqdm", "transformers", "triton", "triton_kernels", "trl", "verl", "vllm", "wandb", "xformers",
}


def project_import_names() -> set[str]:
    """Every name `import X` can resolve to this checkout: top-level modules and folders holding Python files
    (packages and namespace packages alike). tests/ is pytest's (its files are imported by their own names)."""
    names = set()
    for entry in os.listdir(ROOT):
        path = os.path.join(ROOT, entry)
        if entry.startswith((".", "_")) or entry == "tests":
            continue
        if entry.endswith(".py") and os.path.isfile(path):
            names.add(entry[:-3])
        elif os.path.isdir(path) and any(f.endswith(".py") for f in os.listdir(path)):
            names.add(entry)
    return names


def test_no_project_name_is_an_installed_or_common_package():
    names = project_import_names()
    assert {"model", "octo_kernels", "grader", "data", "bench"} <= names  # the scan sees what it should
    installed = md.packages_distributions()  # top-level import name -> the distributions providing it
    clashes = {n: installed[n] for n in names if n in installed}
    assert not clashes, f"project names also provided by installed distributions (rename ours): {clashes}"
    assert not names & FIELD, f"project names that common packages of the field use: {sorted(names & FIELD)}"


def test_transformers_llama_and_our_kernels_in_one_process_with_the_root_first(tmp_path):
    """The way the scripts run (`python rl.py`: the root is sys.path[0]): import transformers' Llama (which imports
    PyPI's `kernels` on transformers 5), load a checkpoint the project saved, get our logits; then the project's
    decode kernels (the Triton interpreter on CPU) give the torch path's greedy tokens."""
    pytest.importorskip("transformers")
    pytest.importorskip("triton")
    script = textwrap.dedent(f"""
        import os, sys
        assert os.path.abspath(sys.path[0] or ".") == {ROOT!r}, sys.path[:2]
        import torch
        from transformers import LlamaForCausalLM  # noqa: F401  (the import that broke under a shadowing name)
        from bench.hf_peer import load_llama
        import octo_kernels, sample
        from data.tokenizer import Tokenizer
        from model import Llama, LlamaConfig, load_checkpoint, save_checkpoint

        assert octo_kernels.HAVE_TRITON and octo_kernels.INTERPRET
        tok = Tokenizer.train(["Mia has 3 apples and buys 4 more. 3 + 4 = 7."] * 3, vocab_size=270)
        torch.manual_seed(0)
        net = Llama(LlamaConfig.from_preset("test", vocab_size=tok.vocab_size, bos_id=tok.bos_id,
                                            eos_id=tok.eos_id)).eval()
        save_checkpoint({str(tmp_path / "ckpt")!r}, net, tokenizer=tok)
        ours, tok, _ = load_checkpoint({str(tmp_path / "ckpt")!r})
        hf = load_llama({str(tmp_path / "ckpt")!r})
        x = torch.randint(0, tok.vocab_size, (2, 9))
        with torch.no_grad():
            diff = (hf(x).logits - ours.eval()(x)).abs().max().item()
        assert diff < 1e-4, diff
        runs = {{}}
        for impl in ("torch", "triton"):
            os.environ[octo_kernels.ENV_VAR] = impl
            runs[impl] = [c.tokens for c in sample.generate(ours, tok, ["Mia has 3", "apples"], max_new_tokens=4)]
        assert runs["torch"] == runs["triton"], runs
        print("ok", diff, runs["triton"])
        """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TRITON_INTERPRET"] = "1"
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stdout + r.stderr


def test_the_kernels_sit_below_the_model():
    """octo_kernels/ imports only torch / triton and itself; model.py and sample.py reach it, nothing below them."""
    from test_runtime import imported_modules

    folder = os.path.join(ROOT, "octo_kernels")
    below = set().union(*(imported_modules(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".py")))
    assert below - set(sys.stdlib_module_names) <= {"torch", "triton", "octo_kernels"}, below
    assert "octo_kernels" in imported_modules(os.path.join(ROOT, "model.py"))
    for low in ("configurator", "kvcache", "lm_head", "runtime", "grpo", "memory_model"):
        assert "octo_kernels" not in imported_modules(os.path.join(ROOT, f"{low}.py")), low
