"""
The answer grader: the evaluation metric of eval_math.py and the reward of rl.py.

    import grader
    grader.math_equal(grader.extract_answer("... so the answer is $\\boxed{\\frac12}$."), "0.5")     # True

Grading a model's answer is parsing untrusted text, so nothing here ever eval()s it. `math_equal` goes from cheap to
expensive and stops at the first decision:
  1. normalise both strings (dollars, \\left, spacing, \\text{} and units, degrees, percent, \\dfrac, thousands
     separators, ...) and compare them as strings;
  2. whole-answer readings: "name = value" ((p,q)=(3,2), |AB| = 1, P_1:P_2 = 3:5, a chain S = 1+2+3 = 6; the
     exact value before \\approx; a true chain (x+1)^2 = x^2+2x+1), "a \\ne b", assignments as tuples
     (a=1,b=4;a=4,b=1), an inequality in one variable as its interval, i as the imaginary unit when the gold uses
     it or the answer is e^{i...}, a decimal comma against a one-number gold; then structure:
     tuples, intervals (bracket types must match), sets and bare lists (order-free, repeated elements once),
     matrices, equations, multiple-choice letters;
  3. parse each scalar with the small recursive-descent LaTeX parser (latex.py) into a plain tuple tree (no sympy);
     with no free symbols, evaluate it with exact fractions / floats under size limits (relative tolerance 1e-4
     where a decimal was written, float noise between exact forms);
  4. with free symbols, evaluate both at a few random points: a clear numeric difference means "not equal";
  5. only then ask sympy (simplify(a - b) == 0) in a separate worker process that is killed when it runs past
     the time limit. This works from any thread (no signal.alarm) and in DDP ranks; the common cases never
     reach it.
Huge numbers (9^{9^{9^9}}, 2^{1000000}, 10^6!) are refused by size limits before any arithmetic, so they cost
microseconds and grade False.

Extraction modes (`extract_answer(text, mode)`; each tries its steps in order and stops at the first answer). The
benchmark -> mode assignment follows the usual few-shot harness conventions (GSM8K-style word problems: the last
number; MATH-style: the boxed answer or "the answer is"; MMLU: the option letter); `BENCHMARK_MODES` holds it:

| mode        | steps                                                                 | used for                      |
|-------------|-----------------------------------------------------------------------|-------------------------------|
| boxed       | the final \\boxed{} (boxes joined by "," / "and" / "or" form a list)  | RL reward (make_math_reward)  |
| answer      | box, unless "the (final) answer is X" follows it; "answer is X",      | math500, minerva_math,        |
|             | "Answer: X", "Answer $X$" (a sentence "The largest $n$ is 34" gives   | olympiadbench, college_math,  |
|             | 34); "#### X"; the last math span $...$ / \\(...\\) / \\[...\\]       | aime24, amc23, synth; r1      |
| last_number | as answer without the math span; then the last number not inside a    | gsm8k, svamp, asdiv           |
|             | word ("AZYUK2A" has none)                                             | (few-shot)                    |
| choice      | as answer without the math span; then the last "(B)", "B." or         | mmlu_stem                     |
|             | "option B"                                                            |                               |

The package, lowest first (each module imports only those above it):
  limits.py      the size limits every step reads
  extract.py     extract_answer, last_boxed, the benchmark -> mode table (BENCHMARK_MODES, benchmark_mode)
  normalize.py   string-level normalisation (step 1), the exact-comparison key, option letters
  relations.py   string readings of step 2: top-level splitting, names and labels before "=", "\\ne", ratios,
                 assignments as tuples
  latex.py       the tokenizer / parser (step 3)
  numeric.py     the exact numeric evaluation of its trees, under the size limits, the value tolerances, and
                 which trees are safe to hand to sympy
  matrix.py      a matrix in any environment / bracket as a pmatrix; sums and products of literal matrices
                 evaluated exactly
  sympy_pool.py  the symbolic check in worker processes under a time limit (step 5); needs none of the others
  compare.py     math_equal (steps 1-5 in order, the whole-answer readings of step 2) and majority_answer
Callers use this module's names only: `import grader; grader.math_equal(...)`.
"""
from __future__ import annotations

from .compare import majority_answer, math_equal
from .extract import BENCHMARK_MODES, EXTRACTION_MODES, benchmark_mode, extract_answer, last_boxed
from .limits import (FLOAT_NOISE, MAX_BITS, MAX_CHARS, MAX_DEPTH, MAX_ELEMENTS, MAX_FACTORIAL, MAX_NODES,
                     MAX_SYMBOLIC_EXPONENT, REL_TOL)

__all__ = ["math_equal", "majority_answer", "extract_answer", "last_boxed", "benchmark_mode", "BENCHMARK_MODES",
           "EXTRACTION_MODES", "MAX_CHARS", "MAX_NODES", "MAX_DEPTH", "MAX_BITS", "MAX_FACTORIAL",
           "MAX_SYMBOLIC_EXPONENT", "MAX_ELEMENTS", "REL_TOL", "FLOAT_NOISE"]
