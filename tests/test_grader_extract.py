"""grader/extract.py: the final answer in a response, per extraction mode, in time linear in its length."""
from __future__ import annotations

import time

import pytest

import grader
from grader import extract_answer


@pytest.mark.parametrize("text,want", [
    ("so $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("\\boxed{a} then \\boxed{b}", "b"),
    ("\\boxed{\\frac{\\sqrt{2}}{\\{1\\}}}", "\\frac{\\sqrt{2}}{\\{1\\}}"),
    ("the result is \\boxed 5$.", "5"),
    ("\\fbox{7}", "7"),
    ("$\\framebox{204}$ minutes", "204"),
    ("The answer is 42.", "42"),
    ("So the answer is 3.5. Done", "3.5"),
    ("Final Answer: The final answer is $3.5$. I hope it is correct.", "3.5"),
    ("the final answer is: **7**", "7"),
    ("The answer is (B).", "(B)"),
    ("The answer is \\boxed{\\text{(B)}}.", "\\text{(B)}"),
    ("work\n#### 1,234", "1,234"),
    ("I got 12 then 15.", None),
    ("", None),
    ("\\boxed{", None),              # cut off inside the box: no answer, even with an earlier box
    ("\\boxed{3} and later \\boxed{4", None),
    ("\\boxed{}", None),
    ("no answer here", None),
    ("The answer is \\(x^2\\).", "x^2"),
    ("ünïcödé \\boxed{π}", "π"),
    # escaped braces are printed braces, not groups: \left\{ ... \right. opens one and closes none
    ("so \\boxed{\\left\\{ x \\mid x > 0 \\right.}.", "\\left\\{ x \\mid x > 0 \\right."),
    ("\\boxed{f(x)=\\left\\{\\begin{array}{ll}1 & x>0 \\\\ 0 & x \\le 0\\end{array}\\right.}",
     "f(x)=\\left\\{\\begin{array}{ll}1 & x>0 \\\\ 0 & x \\le 0\\end{array}\\right."),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("\\boxed{a \\\\{b}}", "a \\\\{b}"),      # a row break \\ then a real group {b}
    ("\\boxed{a\\}", None),                  # \} does not close the box
])
def test_extract_answer(text, want):
    assert extract_answer(text) == want


@pytest.mark.parametrize("text,want", [
    ("I got 12 then 15.", "15"),
    ("total is 1,234,567 dollars", "1234567"),
    ("about -3.5 and", "-3.5"),
    ("The answer is 8", "8"),          # the answer phrase still wins over the last number
    ("\\boxed{9} and 10", "9"),
    ("no digits", None),
])
def test_extract_last_number(text, want):
    assert extract_answer(text, mode="last_number") == want


@pytest.mark.parametrize("text,want", [
    # no box and no "the answer is": "Answer $X$", a concluding math span, a last display
    ("Adding the two cases gives nine.\nAnswer $ 9 $", "9"),
    ("Dividing by $-2$ flips the sign, so $x \\geq 5$.\nTherefore $x \\geq 5$ is the solution.", "x \\geq 5"),
    ("Multiplying out, $AB = BA = I$. The identity matrix is $\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}$.",
     "\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}"),
    ("so the area is \\[ \\frac{3\\sqrt{3}}{2} \\]", "\\frac{3\\sqrt{3}}{2}"),
    ("I could not finish this one.", None),
    # an answer phrased as a sentence gives its value; a worded answer stays whole
    ("Checking $n = 35$ fails.\nFinal Answer: The largest $n$ is 34.", "34"),
    ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),
    ("The answer is: they are equal.", "they are equal"),
    # "find all": boxes joined by commas / and / or are one list answer; boxes in separate sentences are not
    ("The solutions are $\\boxed{1}, \\boxed{2}$.", "1, 2"),
    ("So $x = \\boxed{-3}$ or $x = \\boxed{4}$.", "-3, 4"),
    ("$\\boxed{2}$ and $\\boxed{\\frac{1}{2}}$", "2, \\frac{1}{2}"),
    ("First $\\boxed{3}$. Then we double it: $\\boxed{6}$.", "6"),
    ("\\boxed{12} no wait \\boxed{13}", "13"),
    # intermediate boxes followed by a final statement: the statement wins
    ("Step 1 gives \\boxed{10}. Summing all the cases,\nThe final answer is $10,455$.", "10,455"),
    ("\\boxed{5}. So the answer is correct.", "5"),  # a later prose phrase does not override the box
    ("\\boxed{5}. Let me check: the answer $5$ is right.", "5"),  # nor does a mention of "the answer $x$"
    ("\\boxed{3}\nFinal Answer: 4", "4"),
])
def test_extract_whole_responses(text, want):
    assert extract_answer(text) == want


def test_extraction_modes():
    text = "Step 1 gives \\boxed{10}. The final answer is $10,455$."
    assert extract_answer(text, mode="boxed") == "10"   # strict: the box alone (RL reward)
    assert extract_answer("The answer is 7.", mode="boxed") is None
    assert extract_answer("Therefore $x = 7$.", mode="boxed") is None
    assert extract_answer("The answer is \\boxed{12", mode="boxed") is None
    # last_number: no digits from inside words
    assert extract_answer("Code AZYUK2A was used 3 times", mode="last_number") == "3"
    assert extract_answer("the key is AZYUK2A", mode="last_number") is None
    assert extract_answer("we get $x_2$", mode="last_number") is None
    # choice: the letter of the last option named
    assert extract_answer("(A) is wrong, so I pick (C).", mode="choice") == "C"
    assert extract_answer("Eliminating the others:\nB. coulomb", mode="choice") == "B"
    assert extract_answer("The answer is (D).", mode="choice") == "(D)"
    assert extract_answer("Therefore $x = 7$.", mode="choice") is None
    assert grader.benchmark_mode("gsm8k") == "last_number" and grader.benchmark_mode("gsm8k", "r1") == "answer"
    assert grader.benchmark_mode("mmlu_stem", "r1") == "choice" and grader.benchmark_mode("math500") == "answer"
    with pytest.raises(ValueError, match="gsm9k"):
        grader.benchmark_mode("gsm9k")


@pytest.mark.parametrize("text", [
    "\\(" * 60000, "$" * 100001, "\\boxed{" * 30000, " " * 90000 + "\\boxed{1}" + " " * 5000 + "\\boxed{2}",
    "the answer is " * 9000, "1," * 60000, "\\[" * 60000, "$x$ " * 30000, "\\boxed{1}, " * 20000,
])
def test_extraction_is_linear_on_long_responses(text):
    t = time.monotonic()
    for mode in grader.EXTRACTION_MODES:
        extract_answer(text, mode)
    assert time.monotonic() - t < 1.0


def test_extract_rejects_bad_input():
    with pytest.raises(ValueError, match="mode"):
        extract_answer("1", mode="first")
    with pytest.raises(TypeError):
        extract_answer(5)
    assert extract_answer(None) is None
