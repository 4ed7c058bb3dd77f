"""transformers as the peer our tests and benchmarks compare against: the library's own torch code, offline.

transformers 5.x kernelizes a model inside `from_pretrained` with kernels it downloads from the Hugging Face Hub
(`use_kernels`, on unless USE_HUB_KERNELS says no). A comparison must run transformers' reference modelling code on
this machine and never reach for the network, so `offline()` turns both off in the environment (subprocesses such as
torchrun workers inherit it) and `load_llama` also says so in the call where the installed version knows the switch.
Works from transformers 4.45 (requirements-test.txt's floor) to 5.x.
"""
from __future__ import annotations

import os
import re

import torch


def offline() -> None:
    """Environment for every transformers load in this process and its children: no Hub kernels, no Hub at all."""
    os.environ["USE_HUB_KERNELS"] = "0"  # read by transformers >= 5 at each from_pretrained
    os.environ["HF_HUB_OFFLINE"] = "1"  # the loads here are local folders; a lookup online would be a bug


def transformers():
    """The transformers module, imported after `offline()`."""
    offline()
    import transformers as tf

    return tf


def version() -> tuple[int, int]:
    return tuple(int(x) for x in re.findall(r"\d+", transformers().__version__)[:2])


def load_llama(path: str, dtype: torch.dtype = torch.float32, **kwargs):
    """transformers' LlamaForCausalLM from a local folder (ours or an HF snapshot), in `dtype`, in eval mode.

    The dtype keyword was `torch_dtype` before 4.56; `use_kernels` is read from 4.53 on (4.45 would pass it on to the
    model's constructor, which fails)."""
    tf = transformers()
    v = version()
    kwargs["dtype" if v >= (4, 56) else "torch_dtype"] = dtype
    if v >= (4, 53):
        kwargs["use_kernels"] = False
    return tf.LlamaForCausalLM.from_pretrained(path, **kwargs).eval()
