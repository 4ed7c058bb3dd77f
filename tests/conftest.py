import os
import sys

# Triton reads this when @triton.jit runs, so it must be set before octo_kernels/ is imported.
# On a CPU-only machine the kernels can only run in the interpreter.
os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import hf_peer  # noqa: E402

hf_peer.offline()  # transformers, in tests and their subprocesses: no Hub kernels, no Hub

SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
