"""The symbolic check, the grader's only expensive step: a tree is handed to sympy in a worker process (a small pool,
killed and replaced when a call runs past its time limit). Works from any thread (no signal.alarm) and in DDP ranks.
Trees are plain tuples, so this module needs nothing else from the grader."""
from __future__ import annotations

import atexit
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time

# -----------------------------------------------------------------------------------------------------------------
# symbolic check in a worker process (sympy, killed on timeout)

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder holding grader/
_WORKER_MEMORY = 2 << 30  # address-space cap of a worker (bytes)
_pool_lock = threading.Condition()
_pool_idle: list = []
_pool_live = 0
_pool_pid = os.getpid()
_pool_max = max(2, os.cpu_count() or 2)


def _to_sympy(tree, sp):
    kind = tree[0]
    if kind == "num":
        return sp.Rational(tree[1], tree[2])
    if kind == "sym":
        return sp.Symbol(tree[1])
    if kind == "const":
        return {"pi": sp.pi, "E": sp.E, "oo": sp.oo, "I": sp.I}[tree[1]]
    if kind == "add":
        return sp.Add(*[_to_sympy(t, sp) for t in tree[1]])
    if kind == "mul":
        return sp.Mul(*[_to_sympy(t, sp) for t in tree[1]])
    if kind == "neg":
        return -_to_sympy(tree[1], sp)
    if kind == "inv":
        return sp.Pow(_to_sympy(tree[1], sp), -1)
    if kind == "pow":
        return sp.Pow(_to_sympy(tree[1], sp), _to_sympy(tree[2], sp))
    if kind == "root":
        return sp.Pow(_to_sympy(tree[1], sp), sp.Pow(_to_sympy(tree[2], sp), -1))
    if kind == "abs":
        return sp.Abs(_to_sympy(tree[1], sp))
    if kind == "fact":
        return sp.factorial(_to_sympy(tree[1], sp))
    if kind == "binom":
        return sp.binomial(_to_sympy(tree[1], sp), _to_sympy(tree[2], sp))
    if kind == "floor":
        return sp.floor(_to_sympy(tree[1], sp))
    if kind == "ceil":
        return sp.ceiling(_to_sympy(tree[1], sp))
    if kind == "log":
        x = _to_sympy(tree[1], sp)
        return sp.log(x) if tree[2] is None else sp.log(x, _to_sympy(tree[2], sp))
    if kind == "func":
        return getattr(sp, tree[1])(_to_sympy(tree[2], sp))
    if kind == "bigop":  # \\sum_{k=a}^{b} body (the grader hands over only ones with both bounds)
        op = sp.Sum if tree[1] == "sum" else sp.Product
        return op(_to_sympy(tree[5], sp), (sp.Symbol(tree[2]), _to_sympy(tree[3], sp), _to_sympy(tree[4], sp))).doit()
    raise ValueError(f"unknown node {kind}")


def _sympy_decide(request) -> bool:
    """Runs inside the worker. ("expr", a, b): simplify(a - b) == 0. ("eq", d1, d2) for equations d1 = 0, d2 = 0:
    the same equation up to a nonzero constant factor. ("sleep", s): a diagnostic that takes s seconds."""
    import sympy as sp

    kind = request[0]
    if kind == "sleep":
        time.sleep(request[1])
        return True
    a, b = _to_sympy(request[1], sp), _to_sympy(request[2], sp)
    if kind == "expr":
        return sp.simplify(a - b) == 0
    if kind == "eq":
        if sp.simplify(a - b) == 0 or sp.simplify(a + b) == 0:
            return True
        if b == 0:
            return False
        ratio = sp.simplify(a / b)
        return bool(ratio.is_number and ratio.is_finite and ratio != 0)
    raise ValueError(f"unknown request {kind!r}")


def _worker_main():
    """Entry point of a worker process: read length-prefixed pickled requests on stdin, answer one byte each."""
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (_WORKER_MEMORY, _WORKER_MEMORY))
    except (ImportError, ValueError, OSError):
        pass
    import sympy  # noqa: F401  (imported once, before announcing readiness)

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    out.write(b"R")
    out.flush()
    while True:
        head = inp.read(4)
        if len(head) < 4:
            return  # parent closed the pipe
        (n,) = struct.unpack("<I", head)
        request = pickle.loads(inp.read(n))
        try:
            answer = b"1" if _sympy_decide(request) else b"0"
        except Exception:  # anything sympy raises on odd input means "could not show equal"
            answer = b"0"
        out.write(answer)
        out.flush()


def _read_byte(proc, deadline: float) -> bytes | None:
    """One byte from the worker, or None on timeout / worker death. select() works in any thread."""
    fd = proc.stdout.fileno()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            data = os.read(fd, 1)
            return data or None


def _start_worker():
    code = f"import sys; sys.path.insert(0, {_REPO!r}); from grader import sympy_pool; sympy_pool._worker_main()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, close_fds=True)
    if _read_byte(proc, time.monotonic() + 120) != b"R":
        _kill(proc)
        raise RuntimeError("the sympy worker process did not start (is sympy installed?)")
    return proc


def _kill(proc):
    try:
        proc.kill()
        proc.wait(timeout=5)
    except Exception:
        pass
    for f in (proc.stdin, proc.stdout):
        try:
            f.close()
        except Exception:
            pass


def _reset_pool_after_fork():
    """A forked child (DataLoader worker, multiprocessing) must not share the parent's worker pipes."""
    global _pool_lock, _pool_idle, _pool_live, _pool_pid
    _pool_lock, _pool_idle, _pool_live, _pool_pid = threading.Condition(), [], 0, os.getpid()


def _acquire_worker():
    global _pool_live
    if os.getpid() != _pool_pid:
        _reset_pool_after_fork()
    with _pool_lock:
        while not _pool_idle and _pool_live >= _pool_max:
            _pool_lock.wait()
        if _pool_idle:
            return _pool_idle.pop()
        _pool_live += 1
    try:
        return _start_worker()
    except Exception:
        _release_worker(None)
        raise


def _release_worker(proc):
    """Back to the pool, or (proc None: it was killed) free its slot."""
    global _pool_live
    with _pool_lock:
        if proc is None:
            _pool_live -= 1
        else:
            _pool_idle.append(proc)
        _pool_lock.notify()


def _replace_worker_in_background():
    """A killed worker's slot is refilled by a thread, so the next symbolic check does not wait for sympy to import."""
    def start():
        try:
            proc = _start_worker()
        except Exception:
            _release_worker(None)
            return
        _release_worker(proc)
    threading.Thread(target=start, name="grader-worker-start", daemon=True).start()


def _shutdown_pool():
    if os.getpid() != _pool_pid:
        return
    with _pool_lock:
        procs = list(_pool_idle)
        _pool_idle.clear()
    for p in procs:
        _kill(p)


atexit.register(_shutdown_pool)


def _sympy_call(request, timeout: float) -> bool:
    """Decide `request` in a worker within `timeout` seconds of compute (waiting for a free worker and starting
    one do not count). Timeout, worker crash or memory blow-up -> False; the worker is killed and replaced."""
    if timeout <= 0:
        return False
    proc = _acquire_worker()
    payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        proc.stdin.write(struct.pack("<I", len(payload)) + payload)
        proc.stdin.flush()
        answer = _read_byte(proc, time.monotonic() + timeout)
    except (BrokenPipeError, OSError, ValueError):
        answer = None
    if answer is None:
        _kill(proc)
        _replace_worker_in_background()
        return False
    _release_worker(proc)
    return answer == b"1"
