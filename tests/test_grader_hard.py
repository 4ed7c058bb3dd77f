"""The grader on harder answer forms (issue 26): one list of cases per class, written for this project (not taken
from math-verify's tests), each with near misses (a wrong value in the same form stays wrong). A case is
(prediction, gold, label); a prediction R("...") is a whole response, graded as eval_math grades one
(extract_answer in "answer" mode, then math_equal)."""
from __future__ import annotations

import pytest

from grader import extract_answer, math_equal

# math_equal swallows unexpected exceptions with a warning (an RL run must not crash); tests must see them
pytestmark = pytest.mark.filterwarnings("error:math_equal. unexpected:RuntimeWarning")


def R(text: str) -> tuple[str, str]:
    return ("response", text)


def grade(pred, gold: str) -> bool:
    if isinstance(pred, tuple):
        pred = extract_answer(pred[1])
    return math_equal(pred, gold)


CLASSES = {
    # 1. display math over several lines, after "the answer is" / "Answer:"
    "display": [
        (R("We get\n\\[\nx = \\frac{3}{4}\n\\]"), "\\frac{3}{4}", True),
        (R("The final answer is\n$$\n12\\sqrt{2}\n$$"), "12\\sqrt2", True),
        (R("The area is therefore\n$$\n\\frac{9}{2}\n$$\nsquare units."), "4.5", True),
        (R("So the answer is\n\\[\n(2,\n 3)\n\\]"), "(2,3)", True),
        (R("Adding up,\n\\[\nS = 1 + 2 + 3\n  = 6.\n\\]"), "6", True),
        (R("Answer:\n$$\nx \\in [0, 1)\n$$"), "[0,1)", True),
        (R("The final answer is\n$$\n13\\sqrt{2}\n$$"), "12\\sqrt{2}", False),
        (R("We get\n\\[\nx = \\frac{3}{5}\n\\]"), "\\frac{3}{4}", False),
        (R("So the answer is\n\\[\n(3,\n 2)\n\\]"), "(2,3)", False),
    ],
}
CASES = [(name, *case) for name, cases in CLASSES.items() for case in cases]


@pytest.mark.parametrize("name,pred,gold,label", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_hard_forms(name, pred, gold, label):
    assert grade(pred, gold) is label


def test_every_class_has_near_misses():
    for name, cases in CLASSES.items():
        assert sum(label for *_, label in cases) >= 3 and sum(not label for *_, label in cases) >= 2, name
