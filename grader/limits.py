"""The grader's size limits: model text is untrusted, so every input is bounded before work proportional to it
is done. One place for every bound (the parser, the numeric evaluator and the comparison rules read them)."""
from __future__ import annotations

MAX_CHARS = 1000          # longer answers are only compared as exact strings
MAX_NODES = 500           # parse-tree nodes per scalar expression
MAX_DEPTH = 50            # nesting depth (parentheses, unary minus, exponent towers)
MAX_BITS = 20000          # numerator/denominator size of exact rationals (~6000 digits)
MAX_FACTORIAL = 1000      # n! and binom(n, k) only for n up to this
MAX_SYMBOLIC_EXPONENT = 1000  # x^n with |n| above this is not handed to sympy
MAX_ELEMENTS = 64         # elements of a tuple / set / matrix
REL_TOL = 1e-4            # numeric comparison when either side is a rounded decimal (0.3333 for 1/3, 3.1416 for pi)
FLOAT_NOISE = 1e-9        # ... and when both sides are exact forms (sqrt 2, pi/2): only float rounding may differ
