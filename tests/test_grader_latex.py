"""grader/latex.py: number literals are size-checked before they are built."""
from __future__ import annotations

import math
import time
from fractions import Fraction

import pytest

import grader
from grader import latex, math_equal

# math_equal swallows unexpected exceptions with a warning (an RL run must not crash); tests must see them
pytestmark = pytest.mark.filterwarnings("error:math_equal. unexpected:RuntimeWarning")


def test_number_literals_are_size_checked_before_they_are_built():
    # a literal's numerator / denominator has at most digits + |exponent| decimal digits; beyond MAX_BITS it is
    # refused before Fraction() computes 10^exponent
    fits = int(grader.MAX_BITS / math.log2(10)) - 2
    assert latex._literal(f"1e{fits}") == 10 ** fits and latex._literal(f"1e-{fits}") == Fraction(1, 10 ** fits)
    for too_big in (f"1e{fits + 2}", f"1e-{fits + 2}", "1" * (fits // 2) + f"e{fits // 2 + 3}"):
        with pytest.raises(latex._ParseError, match="too large"):
            latex._literal(too_big)
    for pred, gold, want in [("1e10000000", "1", False), ("1e10000000", "1e10000001", False), ("1e3", "1000", True),
                             ("-1.5e-3", "-0.0015", True), ("1e-10000000", "0", False)]:
        t = time.monotonic()
        assert math_equal(pred, gold) is want
        assert time.monotonic() - t < 0.1, pred
