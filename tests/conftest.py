import os
import signal
import sys

# A shell without job control starts a background command (`bash .ci/run &`) with SIGINT ignored, and an ignored
# signal stays ignored across exec: every script the tests start would then shrug off the SIGINTs that
# tests/test_signals.py sends. A handler (not an ignore) is reset to the default in a child, so install Python's own.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Triton reads this when @triton.jit runs, so it must be set before octo_kernels/ is imported.
# On a CPU-only machine the kernels can only run in the interpreter.
os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import hf_peer  # noqa: E402

hf_peer.offline()  # transformers, in tests and their subprocesses: no Hub kernels, no Hub

SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
