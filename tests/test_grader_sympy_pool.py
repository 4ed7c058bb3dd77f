"""grader/sympy_pool.py: the symbolic check's time limit holds from any thread, across forks and under concurrency."""
from __future__ import annotations

import os
import threading
import time

import pytest

from grader import math_equal, sympy_pool

# math_equal swallows unexpected exceptions with a warning (an RL run must not crash); tests must see them
pytestmark = pytest.mark.filterwarnings("error:math_equal. unexpected:RuntimeWarning")


def test_symbolic_work_stays_within_the_time_limit():
    # inputs that do reach sympy: a check it needs ~10 s for, repeated in lists that also get deduplicated. The
    # limit bounds the whole call (every pair shares one deadline), not each sympy request
    slow, same = "(x+1)^{300}(x-1)^{300}", "(x^2-1)^{300}"
    for pred, gold in [(slow, same), (", ".join([slow] * 8), ", ".join([same] * 8)),
                       ("\\{" + ", ".join([slow, same] * 4) + "\\}", same), (f"{slow} > 0", f"{same} > 0")]:
        # a worker is running (the one killed by the previous case is replaced): start-up does not count
        assert math_equal("x^2-1", "(x-1)(x+1)")
        t = time.monotonic()
        assert math_equal(pred, gold, timeout=1.0) is False  # given up, not decided
        assert time.monotonic() - t < 2.5, pred[:40]


def run_in_thread(fn):
    out = {}

    def target():
        t = time.monotonic()
        out["value"] = fn()
        out["seconds"] = time.monotonic() - t
    th = threading.Thread(target=target)
    th.start()
    th.join(60)
    assert not th.is_alive()
    return out["value"], out["seconds"]


def test_symbolic_timeout_in_a_non_main_thread():
    assert threading.current_thread() is threading.main_thread()
    # a worker is running before each timed call: its start-up (importing sympy, seconds on a loaded machine) is
    # not part of the limit
    assert math_equal("x^2-1", "(x-1)(x+1)")
    # a correct answer sympy needs ~10 s to verify: past the limit it is given up (False), from a worker thread
    value, seconds = run_in_thread(
        lambda: math_equal("(x+1)^{300}(x-1)^{300}", "(x^2-1)^{300}", timeout=0.5))
    assert value is False and seconds < 3.0
    # the same mechanism, deterministic: a request that sleeps 30 s in the worker is cut at 0.3 s
    assert math_equal("x^2-1", "(x-1)(x+1)")  # waits for the killed worker's replacement
    value, seconds = run_in_thread(lambda: sympy_pool._sympy_call(("sleep", 30), 0.3))
    assert value is False and 0.25 < seconds < 3.0
    # the killed worker is replaced and symbolic checks keep working, in threads too
    value, _ = run_in_thread(lambda: math_equal("x^2-1", "(x-1)(x+1)"))
    assert value is True


def _grade_in_child(queue):
    queue.put((os.getpid(), math_equal("x^2-1", "(x-1)(x+1)"), math_equal("x^2", "x^3")))


def test_forked_process_gets_its_own_worker():
    # DDP ranks / DataLoader workers may be forked from a process that already has a sympy worker: the child must
    # not talk over the parent's pipes but start its own
    import multiprocessing as mp

    assert math_equal("(a+b)^2", "a^2+2ab+b^2")  # the parent now holds a worker
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_grade_in_child, args=(queue,))
    child.start()
    pid, yes, no = queue.get(timeout=60)
    child.join(30)
    assert pid != os.getpid() and yes is True and no is False and child.exitcode == 0
    assert math_equal("(a-b)^2", "a^2-2ab+b^2")  # and the parent's worker still answers


def test_concurrent_threads_grade_consistently():
    pairs = [("x^2-1", "(x-1)(x+1)", True), ("\\frac{x}{2}+\\frac{x}{2}", "x", True), ("x^2", "x^3", False),
             ("\\frac{1}{2}", "0.5", True), ("(a+b)^2", "a^2+2ab+b^2", True), ("3", "4", False)] * 3
    results = [None] * len(pairs)

    def work(i):
        results[i] = math_equal(pairs[i][0], pairs[i][1])
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(pairs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [p[2] for p in pairs]
