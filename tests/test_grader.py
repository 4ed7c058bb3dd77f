"""The grader as its callers use it (`import grader`): the benchmarks' own gold answers, the peer check against
math-verify, and the package's layering (each module imports only the ones below it)."""
from __future__ import annotations

import ast
import json
import os

import pytest
from conftest import ROOT, SHARED_DATA

from benchmarks import load_benchmark
from grader import extract_answer, math_equal

# math_equal swallows unexpected exceptions with a warning (an RL run must not crash); tests must see them
pytestmark = pytest.mark.filterwarnings("error:math_equal. unexpected:RuntimeWarning")
needs_data = pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason=f"benchmark files not at {SHARED_DATA}")
BENCHMARK_NAMES = ("gsm8k", "math500", "minerva_math", "amc23", "aime24", "olympiadbench", "mmlu_stem", "svamp",
                   "asdiv", "college_math")


@needs_data
def test_gold_answers_grade_correct_against_themselves(capsys):
    """Each gold answer, written in a model-style response and extracted again, grades as correct; and where a
    benchmark ships a reference solution, the answer extracted from it matches the gold field."""
    rates = {}
    for name in BENCHMARK_NAMES:
        golds = [e["answer"] for e in load_benchmark(name, SHARED_DATA)]
        boxed = sum(math_equal(extract_answer(f"Thus we get $\\boxed{{{g}}}$.\n"), g) for g in golds)
        said = sum(math_equal(extract_answer(f"Therefore, the answer is ${g}$."), g) for g in golds)
        rates[name] = (boxed / len(golds), said / len(golds))
    math500 = [json.loads(line) for line in open(os.path.join(SHARED_DATA, "math500", "test.jsonl"))]
    sol = sum(math_equal(extract_answer(r["solution"]), r["answer"]) for r in math500) / len(math500)
    gsm = [json.loads(line) for line in open(os.path.join(SHARED_DATA, "gsm8k", "test.jsonl"))]
    gsm_golds = [e["answer"] for e in load_benchmark("gsm8k", SHARED_DATA)]
    cot = sum(math_equal(extract_answer(r["answer"]), g) for r, g in zip(gsm, gsm_golds)) / len(gsm)
    with capsys.disabled():
        print("\ngold self-grading rate (boxed, 'the answer is'):",
              {k: (round(a, 4), round(b, 4)) for k, (a, b) in rates.items()},
              f"math500 solution->answer {sol:.4f}, gsm8k CoT->gold {cot:.4f}")
    assert sol == 1.0 and cot == 1.0
    for name, (boxed, said) in rates.items():
        assert boxed == 1.0, name   # also golds with \left\{ ... \right. (escaped braces need not balance)
        # prose answers lose their later sentences to "the answer is X." parsing (college_math only)
        assert said >= (0.9 if name == "college_math" else 0.995), name


@needs_data
def test_peer_check_against_math_verify():
    pytest.importorskip("math_verify")
    import importlib.util

    spec = importlib.util.spec_from_file_location("grader_vs_math_verify",
                                                  os.path.join(ROOT, "bench", "grader_vs_math_verify.py"))
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    golds = []  # a sample of the golds of the benchmarks the script covers, to stay fast
    for name, step in (("math500", 6), ("olympiadbench", 8), ("amc23", 4)):
        golds += [e["answer"] for e in load_benchmark(name, SHARED_DATA)][::step]
    pairs = peer.build_pairs(golds)
    assert len(pairs) >= 1000 and {p["label"] for p in pairs} == {True, False}
    r = peer.compare(pairs)
    assert r["ours_accuracy"] >= 0.999 and r["agreement"] >= 0.995
    # where the two graders disagree, ours gives the answer known by construction
    assert all(d["ours"] == d["label"] for d in r["disagreements"]), r["disagreements"]


# lowest first, as grader/__init__.py lists them
PACKAGE_ORDER = ("limits", "extract", "normalize", "relations", "latex", "numeric", "matrix", "sympy_pool",
                 "compare")


def test_package_modules_import_only_the_ones_below_them():
    """A module of grader/ may use those listed before it in PACKAGE_ORDER, never one after it (no cycles), the
    sympy pool none of them, and nothing imports torch or a project module (the grader runs in sympy workers and
    in RL's reward without them)."""
    folder = os.path.join(ROOT, "grader")
    assert sorted(PACKAGE_ORDER + ("__init__",)) == sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py"))
    for i, name in enumerate(PACKAGE_ORDER):
        tree = ast.parse(open(os.path.join(folder, f"{name}.py")).read())
        inside = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}
        outside = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        outside |= {node.module.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.level == 0}
        assert inside <= set(PACKAGE_ORDER[:i]), (name, inside)
        assert not outside & {"torch", "sample", "model", "runtime", "eval_math", "benchmarks", "rl", "grader"}, name
    assert not {node.module for node in ast.walk(ast.parse(open(os.path.join(folder, "sympy_pool.py")).read()))
                if isinstance(node, ast.ImportFrom) and node.level == 1}


def test_public_names():
    import grader

    for name in ("math_equal", "extract_answer", "majority_answer", "last_boxed", "benchmark_mode",
                 "BENCHMARK_MODES", "EXTRACTION_MODES", "MAX_CHARS", "MAX_BITS"):
        assert hasattr(grader, name), name
    assert grader.math_equal(grader.extract_answer("... so the answer is $\\boxed{\\frac12}$."), "0.5")
