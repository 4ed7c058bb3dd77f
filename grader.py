"""
The answer grader: the evaluation metric of eval_math.py and the reward of rl.py.

    import grader
    grader.math_equal(grader.extract_answer("... so the answer is $\\boxed{\\frac12}$."), "0.5")     # True

Grading a model's answer is parsing untrusted text, so nothing here ever eval()s it. `math_equal` goes from cheap to
expensive and stops at the first decision:
  1. normalise both strings (dollars, \\left, spacing, \\text{} and units, degrees, percent, \\dfrac, thousands
     separators, ...) and compare them as strings;
  2. whole-answer readings: "name = value" ((p,q)=(3,2), |AB| = 1), an inequality in one variable as its interval,
     i as the imaginary unit when the gold uses it or the answer is e^{i...}, a decimal comma against a one-number
     gold; then structure:
     tuples, intervals (bracket types must match), sets and bare lists (order-free, repeated elements once),
     matrices, equations, multiple-choice letters;
  3. parse each scalar with the small recursive-descent LaTeX parser below into a plain tuple tree (no sympy);
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
"""
from __future__ import annotations

import atexit
import cmath
import math
import os
import pickle
import random
import re
import select
import struct
import subprocess
import sys
import threading
import time
from fractions import Fraction
from functools import lru_cache


# -----------------------------------------------------------------------------------------------------------------
# limits: model text is untrusted, every input is bounded before work proportional to it is done

MAX_CHARS = 1000          # longer answers are only compared as exact strings
MAX_NODES = 500           # parse-tree nodes per scalar expression
MAX_DEPTH = 50            # nesting depth (parentheses, unary minus, exponent towers)
MAX_BITS = 20000          # numerator/denominator size of exact rationals (~6000 digits)
MAX_FACTORIAL = 1000      # n! and binom(n, k) only for n up to this
MAX_SYMBOLIC_EXPONENT = 1000  # x^n with |n| above this is not handed to sympy
MAX_ELEMENTS = 64         # elements of a tuple / set / matrix
REL_TOL = 1e-4            # numeric comparison when either side is a rounded decimal (0.3333 for 1/3, 3.1416 for pi)
FLOAT_NOISE = 1e-9        # ... and when both sides are exact forms (sqrt 2, pi/2): only float rounding may differ

# -----------------------------------------------------------------------------------------------------------------
# answer extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")
# "The final answer is X", "Answer: X", and the bare word followed by a math span ("Answer $ 9 $")
_ANSWER_IS_RE = re.compile(r"(?:final answer|answer)(?:\s*(?:is|:)\s*:?|\s*(?=\$|\\\(|\\\[))", re.IGNORECASE)
_HASHES_RE = re.compile(r"####\s*([^\n]*)")
# a number not glued to a preceding letter or subscript: "AZYUK2A" and "x_2" hold no number
_NUMBER_RE = re.compile(r"(?<![A-Za-z_\d.,])(?:[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|[-+]?\.\d+)")
# inline / display math; escapes (\\$ in "$\\$36$") are part of the content
# (no span content may hold its own opening delimiter, so a response full of unclosed "\\(" is scanned in linear time)
_MATH_SPAN_RE = re.compile(r"\$\$((?:\\.|[^\\$])+)\$\$|(?<!\\)\$((?:\\.|[^\\$])+)\$|"
                           r"\\\(((?:[^\\]|\\[^()])+)\\\)|\\\[((?:[^\\]|\\[^\[\]])+)\\\]")
# what may stand between two boxes that together answer a "find all" question: "\boxed{1}, \boxed{2}",
# "$x = \boxed{1}$ or $x = \boxed{2}$"
_BOX_GAP_RE = re.compile(r"(?:[\s$,;~]|\\[,;: ]|\\q?quad|\\text\{\s*(?:and|or|,)\s*\}|\band\b|\bor\b)*"
                         r"(?:[A-Za-z](?:_\{?\w+\}?)?\s*=\s*)?[\s$]*")
_CHOICE_RE = re.compile(r"\(([A-J])\)|(?:^|\n)\s*([A-J])[.)]|\boption\s+([A-J])\b")
MAX_RESPONSE_CHARS = 100_000  # longer responses are graded on their end (where the answer is)
MAX_BOXES = 16                # boxes examined from the end of a response (each may scan to its end)
EXTRACTION_MODES = ("boxed", "answer", "last_number", "choice")
# per benchmark, for few-shot prompts (see the table in the module docstring); r1-style prompts use "answer"
# (MMLU: "choice")
BENCHMARK_MODES = {"gsm8k": "last_number", "svamp": "last_number", "asdiv": "last_number", "mmlu_stem": "choice",
                   "math500": "answer", "minerva_math": "answer", "olympiadbench": "answer",
                   "college_math": "answer", "aime24": "answer", "amc23": "answer", "synth": "answer"}


def benchmark_mode(benchmark: str, style: str = "fewshot") -> str:
    """The extraction mode of `benchmark`'s responses to a prompt of `style` ("fewshot" or "r1")."""
    if benchmark not in BENCHMARK_MODES:
        raise ValueError(f"no extraction mode for benchmark {benchmark!r}; known: {', '.join(BENCHMARK_MODES)}")
    mode = BENCHMARK_MODES[benchmark]
    return "answer" if style == "r1" and mode == "last_number" else mode


def _matching_brace(s: str, i: int) -> int:
    """Index of the '}' closing the '{' at s[i], or -1 when the braces never balance. Escaped \\{ \\} are skipped:
    they are printed braces, not groups, and need not pair up (\\left\\{ ... \\right. opens one and closes none)."""
    depth, j = 0, i
    while j < len(s):
        c = s[j]
        if c == "\\":
            j += 2  # skip the escaped character; a row break \\ consumes its second backslash, so \\{ is a group
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    return -1


def _box_at(text: str, m) -> tuple[int, str | None]:
    """The box whose marker is the match m -> (index just after it, its content or None when the content is
    unbalanced or empty)."""
    i = m.end()
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        j = _matching_brace(text, i)
        if j < 0:
            return len(text), None  # cut off mid-answer (e.g. generation hit max tokens)
        return j + 1, text[i + 1:j].strip() or None
    if i > m.end():
        # `\boxed 5`: TeX takes one token; people write a short answer up to the closing `$` or whitespace
        content = re.match(r"[^\s$]*", text[i:]).group(0)
        return i + len(content), content.rstrip(".,;") or None
    return m.end(), None


def _boxes(text: str) -> tuple[int, int, str | None] | None:
    """The final boxed answer -> (start, end, content) or None when there is no box. Boxes separated only by
    commas, "and"/"or" or a variable name ("x = \\boxed{1}$ or $x = \\boxed{2}") form one list answer "1, 2"."""
    markers = list(_BOX_RE.finditer(text))[-MAX_BOXES:]
    if not markers:
        return None
    end, content = _box_at(text, markers[-1])
    start, parts = markers[-1].start(), [content]
    for m in reversed(markers[:-1]):
        if content is None:
            break
        prev_end, prev = _box_at(text, m)
        gap = text[prev_end:start]
        if prev is None or prev_end > start or len(gap) > 200 or not _BOX_GAP_RE.fullmatch(gap):
            break
        start = m.start()
        parts.insert(0, prev)
    return start, end, None if content is None else ", ".join(parts)


def last_boxed(text: str) -> tuple[bool, str | None]:
    """(found a box marker, the final box's content, or None if it is unbalanced/empty). Adjacent boxes of one list
    answer are joined (see _boxes)."""
    found = _boxes(text)
    return (False, None) if found is None else (True, found[2])


def _mask_math(s: str) -> str:
    """s with its math spans blanked out (same length), so prose words can be found outside them."""
    return _MATH_SPAN_RE.sub(lambda m: "#" * len(m.group(0)), s)


def _unwrap_math(s: str) -> str:
    s = s.strip()
    m = _MATH_SPAN_RE.fullmatch(s)
    if m:
        return next(g for g in m.groups() if g is not None).strip()
    return s


def _sentence_value(s: str) -> str:
    """"The largest $n$ is 34" -> "34": an answer phrased as a sentence is the part after its last "is" / "are" /
    "equals" (outside math). Expressions ("x = 5", "(B)", "$3.5$") are returned as they are."""
    if not re.match(r"[A-Za-z]{2}", s) or s.startswith("\\"):
        return s
    verbs = list(re.finditer(r"\s(?:is|are|equals|was)\s", _mask_math(s)))
    if not verbs:
        return s
    tail = s[verbs[-1].end():].strip()
    # a value follows ("is 34", "is $\\frac12$"), not more prose ("They are equal" stays a worded answer)
    words = re.findall(r"[A-Za-z]{2,}", _mask_math(tail))
    return tail if re.search(r"[\d$\\]", tail) and len(words) <= 2 else s


def _answer_is(text: str) -> tuple[int, str, bool] | None:
    """The last "the (final) answer is X" / "Answer: X" / "Answer $X$" -> (where it starts, X, whether it is a
    statement of the answer: "final answer" or "answer is", not a bare "answer $x$ ...") or None."""
    matches = list(_ANSWER_IS_RE.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end():].strip().split("\n", 1)[0]
    # the answer ends at the end of its sentence: a period followed by a space (not a decimal point) outside math
    stop = re.search(r"\.\s", _mask_math(rest))
    rest = rest[:stop.start()] if stop else rest
    rest = rest.strip().strip("*").strip()  # markdown bold
    rest = _unwrap_math(rest.rstrip(".").strip())
    rest = _unwrap_math(_sentence_value(rest).rstrip(".").strip())
    phrase = matches[-1].group(0).lower()
    return (matches[-1].start(), rest, "final" in phrase or "is" in phrase) if rest else None


def _last_math(text: str) -> str | None:
    """The content of the last math span ($...$, $$...$$, \\(...\\), \\[...\\]): "Therefore $x \\geq 5$ is the
    solution." -> "x \\geq 5"."""
    spans = list(_MATH_SPAN_RE.finditer(text))
    for m in reversed(spans):
        content = next(g for g in m.groups() if g is not None).strip().rstrip(".,;").strip()
        if content:
            return content
    return None


def _last_choice(text: str) -> str | None:
    letters = [next(g for g in m.groups() if g) for m in _CHOICE_RE.finditer(text)]
    return letters[-1] if letters else None


def extract_answer(text: str, mode: str = "answer") -> str | None:
    """The final answer in a model's response, or None. The modes (see the table in the module docstring):

    "boxed": the last \\boxed{...} / \\fbox{...} only (nested braces; also `\\boxed 5`; boxes separated by commas or
        "and"/"or" are one list answer). A response cut off inside its box has no answer.
    "answer": the box, unless a "the (final) answer is X" phrase comes after it (intermediate boxes, then "The final
        answer is $10,455$"); with no box that phrase, "Answer: X", "Answer $X$" (a sentence "The largest $n$ is
        34" gives 34), then GSM8K's "#### N", then the content of the last math span.
    "last_number": "answer" without the math span, then the last number that is not part of a word.
    "choice": "answer" without the math span, then the last option letter written "(B)", "B." or "option B"."""
    if mode not in EXTRACTION_MODES:
        raise ValueError(f"extract_answer mode must be one of {EXTRACTION_MODES}, got {mode!r}")
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"extract_answer expects a str, got {type(text).__name__}")
    text = text[-MAX_RESPONSE_CHARS:]
    box = _boxes(text)
    if mode == "boxed":
        return None if box is None else box[2]
    said = _answer_is(text)
    if box is not None:
        later = said is not None and said[0] > box[1] and said[2] and re.search(r"[\d$\\]", said[1])
        return said[1] if later else box[2]
    if said is not None:
        return said[1]
    hashes = _HASHES_RE.findall(text)
    if hashes and hashes[-1].strip():
        return hashes[-1].strip().rstrip(".").strip()
    if mode == "last_number":
        numbers = _NUMBER_RE.findall(text)
        return numbers[-1].replace(",", "").lstrip("+") if numbers else None
    if mode == "choice":
        return _last_choice(text)
    return _last_math(text)


# -----------------------------------------------------------------------------------------------------------------
# normalisation (string level)

_UNICODE = {"\u2212": "-", "\u2013": "-", "\u2014": "-", "\u00d7": "\\times ", "\u00f7": "\\div ",
            "\u22c5": "\\cdot ", "\u00b7": "\\cdot ", "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u221a": "\\sqrt",
            "\u00b2": "^2", "\u00b3": "^3", "\u00b0": "", "\u2264": "\\le ", "\u2265": "\\ge ", "\u2260": "\\ne ",
            "\uff0c": ",", "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u200b": ""}
# commands whose argument is text or decoration: unwrapped, or dropped when they are a unit after the value
_TEXT_CMDS = ("text", "textbf", "textit", "textrm", "textnormal", "textsf", "texttt", "mbox", "hbox", "emph",
              "mathrm", "mathbf", "mathit", "mathsf", "mathtt", "boldsymbol", "bm", "boxed", "fbox", "framebox",
              "operatorname", "displaystyle")
_TEXT_RE = re.compile(r"\\(" + "|".join(_TEXT_CMDS) + r")\s*\{")
_PROSE_CMDS = {"text", "textbf", "textit", "textrm", "textnormal", "textsf", "texttt", "mbox", "hbox", "emph"}
_UNITS = {
    "cm", "centimeter", "centimeters", "centimetre", "centimetres", "mm", "millimeter", "millimeters", "km",
    "kilometer", "kilometers", "kilometre", "kilometres", "meter", "meters", "metre", "metres", "inch", "inches",
    "foot", "feet", "ft", "yard", "yards", "yd", "mile", "miles", "unit", "units", "sq", "square", "cubic",
    "degree", "degrees", "deg", "radian", "radians", "rad", "dollar", "dollars", "cent", "cents", "hour", "hours",
    "hr", "hrs", "minute", "minutes", "min", "mins", "second", "seconds", "sec", "secs", "day", "days", "week",
    "weeks", "month", "months", "year", "years", "yr", "yrs", "mph", "kph", "kg", "kilogram", "kilograms", "gram",
    "grams", "pound", "pounds", "lb", "lbs", "ounce", "ounces", "oz", "liter", "liters", "litre", "litres", "ml",
    "gallon", "gallons", "cups", "cup", "people", "persons", "times", "ways", "points", "percent",
}
_COMPOUND_UNIT_RE = re.compile(r"\s*(?:[a-zA-Z]+/[a-zA-Z]+|m\^?\{?[23]\}?|cm\^?\{?[23]\}?)\s*$")
# \\, \\; \\: \\> \\quad \\  ~ become spaces (but not the row break \\\\ followed by a space); the negative space \\!
# is deleted, so "10,\\!080" stays one number
_SPACING_RE = re.compile(r"(?<!\\)\\(?:[,;:> ]|q?quad(?![A-Za-z]))|~")
_KNOWN_FUNC_NAMES = {"sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
                     "log", "ln", "exp", "sqrt"}


def _unwrap_text_commands(s: str) -> str:
    """\\text{...}-like commands: drop unit labels that follow a value ("5\\text{ cm}^2" -> "5"), turn "and"/"or"
    into list commas, unwrap everything else ("\\text{(B)}" -> "(B)", "\\mathbf{v}" -> "v")."""
    for _ in range(200):  # each pass removes one command; bounded because the input is bounded
        m = _TEXT_RE.search(s)
        if not m:
            return s
        cmd, open_at = m.group(1), m.end() - 1
        close = _matching_brace(s, open_at)
        if close < 0:
            return s  # unbalanced: leave it, the parser will refuse it
        content = s[open_at + 1:close]
        word = content.strip(" ~").lower()
        prefix, suffix = s[:m.start()], s[close + 1:]
        if word in ("and", "or", "and/or", ","):
            repl = ","
        elif prefix.strip() and re.fullmatch(r"[\s~]*[A-Za-z][A-Za-z\s~./]*", content) and (
                cmd in _PROSE_CMDS or content[:1] in " ~" or word in _UNITS):
            repl = " "
            suffix = re.sub(r"^\s*\^\s*\{?\s*\d\s*\}?", "", suffix)  # the ^2 of "\text{cm}^2"
        elif cmd == "operatorname" and content.strip() in _KNOWN_FUNC_NAMES:
            repl = "\\" + content.strip() + " "
        else:
            repl = content
        s = prefix + repl + suffix
    return s


def _strip_trailing_units(s: str) -> str:
    for _ in range(4):  # "5 square feet", "3 cm^2", "60 km/h"
        m = re.search(r"(?<=[\d}\s)])\s*([A-Za-z]+)\.?\s*(?:\^\s*\{?\d\}?)?\s*$", s)
        if m and m.group(1).lower() in _UNITS and s[:m.start()].strip():
            s = s[:m.start()].rstrip()
            continue
        m = _COMPOUND_UNIT_RE.search(s)
        if m and re.search(r"[\d}]\s*$", s[:m.start()]) and (
                m.group(0).strip().split("/")[0] in _UNITS | {"m", "km", "cm"} or "^" in m.group(0)):
            s = s[:m.start()].rstrip()
            continue
        break
    return _strip_noun_label(s)


# words after a number that are math, not a label: "2 pi", "3 mod 4", "5 choose 2", "1 or 2"
_NOT_LABELS = _KNOWN_FUNC_NAMES | {"pi", "mod", "choose", "and", "or", "over", "times", "plus", "minus", "divided"}


def _strip_noun_label(s: str) -> str:
    """"34 apples", "5 boxes of cookies" -> the number: a word-problem answer names what it counts, and the
    words are no unit of _UNITS. Only after a plain number, and only when the first word is 3+ letters and no math."""
    m = re.fullmatch(r"(-?\d[\d,]*(?:\.\d+)?)\s+([A-Za-z]{3,})(?:[\s'-]+[A-Za-z]+)*", s)
    return m.group(1) if m and m.group(2).lower() not in _NOT_LABELS else s


def _wrapped_by(s: str, open_at: int = 0) -> bool:
    """Whether the bracket at s[open_at] closes exactly at the end of s (so it wraps all of s)."""
    depth = 0
    for j in range(open_at, len(s)):
        c = s[j]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return j == len(s) - 1
    return False


def _mixed_number(s: str) -> str:
    """Only as a whole answer: 2\\frac{1}{2} and 2 1/2 mean 2 + 1/2 (elsewhere juxtaposition multiplies)."""
    m = re.fullmatch(r"(-?)(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}", s) or re.fullmatch(r"(-?)(\d+)\s+(\d+)/(\d+)", s)
    return f"{m.group(1)}({m.group(2)}+\\frac{{{m.group(3)}}}{{{m.group(4)}}})" if m else s


def _digit_group_marks(s: str) -> str:
    """LaTeX digit-group marks: "11,\\! 111", "10\\!,\\!080" and "14 {,} 916" are thousands (one number, also inside
    a tuple); "{,}" before fewer or more than 3 digits is a decimal comma ("3{,}5" is 3.5)."""
    s = re.sub(r"(\d)\s*(?:\\!)?\s*,\s*\\!\s*(?=\d{3}(?!\d))", r"\1", s)
    s = re.sub(r"(\d)\s*\{,\}\s*(?=\d{3}(?!\d))", r"\1", s)
    s = re.sub(r"(\d)\s*\{,\}\s*(?=\d)", r"\1.", s)
    return s.replace("{,}", "")


def _normalize(s: str) -> tuple[str, bool]:
    """-> (normalised string, had a percent sign)."""
    for k, v in _UNICODE.items():
        if k in s:
            s = s.replace(k, v)
    s = s.strip()
    s = s.replace("\\$", " ").replace("$", " ")
    for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right):
            s = s[2:-2]
    s = s.replace("\\displaystyle", " ")
    s = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)\s*\.", " ", s)  # invisible delimiters
    s = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![A-Za-z])", "", s)
    s = re.sub(r"\\(?:lvert|rvert|vert)(?![A-Za-z])", "|", s)
    s = _digit_group_marks(s)
    s = re.sub(r"(?<!\\)\\!", "", s)
    s = _SPACING_RE.sub(" ", s)
    s = re.sub(r"\\approx(?![A-Za-z])", "=", s)  # "\\pi \\approx 3.14": the value after it is the answer
    s = re.sub(r"\\[dtc]frac(?![A-Za-z])", r"\\frac", s)
    s = re.sub(r"\\[dt]binom(?![A-Za-z])", r"\\binom", s)
    s = re.sub(r"\\(le|ge)q(?:slant)?(?![A-Za-z])", r"\\\1", s)
    s = re.sub(r"\\neq(?![A-Za-z])", r"\\ne", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s)
    s = re.sub(r"\\(?:circ|degree)(?![A-Za-z])", "", s)
    percent = "%" in s
    s = s.replace("\\%", " ").replace("%", " ")
    s = _unwrap_text_commands(s)
    s = re.sub(r"\s+(?:and|or)\s+", ", ", s)  # "1 and 2", "x = 1 or x = 2": lists of answers
    s = re.sub(r"\s+", " ", s).strip()
    m = re.search(r"\s*\b(?:percent|per cent|pct)\.?$", s)  # "28 pct"
    if m:
        s, percent = s[:m.start()].strip(), True
    s = _strip_trailing_units(s)
    s = re.sub(r"^(?:[a-zA-Z]|\\[a-z]+)\s*\\in\s+", "", s)   # "x \in [1, 2)" -> "[1, 2)"
    s = re.sub(r"\b(?:infinity|inf|oo)\b", r"\\infty", s)  # oo: sympy's spelling
    s = re.sub(r"^(?:\\mathbb\s*\{?R\}?|\(?all real numbers\)?)$", r"(-\\infty, \\infty)", s, flags=re.I)
    s = re.sub(r"\\(?:varnothing|O)\b|^\\\{\s*\\\}$", r"\\emptyset", s)
    # \frac12, \frac1{x}, \frac{x}2, \sqrt2: TeX's one-token arguments, written out as groups
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\d)\s*(?=\{)", r"\\frac{\1}", s)
    s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*(\d)", r"\\frac\1{\2}", s)
    s = re.sub(r"\\sqrt\s*(\d)", r"\\sqrt{\1}", s)
    s = s.strip().rstrip(".;").strip()
    s = s.replace(";", ",")  # "(1; 2)", "1; 2": semicolons separate elements as commas do
    if s.endswith(",") and "," not in s[:-1]:
        s = s[:-1].strip()
    s = s.lstrip("=").strip()
    if s.startswith("+") and not s.startswith("+-"):
        s = s[1:].strip()
    s = _mixed_number(s)
    # thousands separators, only when the whole answer is one number (1,234 inside a tuple is two numbers)
    if re.fullmatch(r"-?[1-9]\d{0,2}(?:(?:,\d{3})+|(?: \d{3})+)(?:\.\d+)?", s):
        s = s.replace(",", "").replace(" ", "")
    s = re.sub(r"(\d)\.0+(?![\d])", r"\1", s)          # 27.0 -> 27
    s = re.sub(r"(\d\.\d*?[1-9])0+(?![\d])", r"\1", s)   # 2.50 -> 2.5
    for _ in range(20):  # {5} -> 5
        if s.startswith("{") and _wrapped_by(s) and not s.startswith("\\{"):
            s = s[1:-1].strip()
        else:
            break
    return s, percent


def _key(s: str) -> str:
    """Exact-comparison key: no whitespace, single-character groups written without braces."""
    k = re.sub(r"\s+", "", s)
    k = re.sub(r"([\^_])\{(\w)\}", r"\1\2", k)
    return k


_GOLD_CHOICE_RE = re.compile(r"\(?([A-J])\)?[.:]?")
_PRED_CHOICE_RE = re.compile(r"\(?([A-J])\)?(?:[.:)]|\s|$)")


def _choice_letter(s: str, gold: bool) -> str | None:
    m = _GOLD_CHOICE_RE.fullmatch(s) if gold else _PRED_CHOICE_RE.match(s)
    return m.group(1) if m else None


# -----------------------------------------------------------------------------------------------------------------
# LaTeX parser: tokens -> a tuple tree. Nodes:
#   ("num", p, q, decimal)  the rational p/q; decimal=True if written with a decimal point / exponent
#   ("sym", name)  ("const", "pi" | "E" | "oo" | "I")   (I: the imaginary unit, only where the context says so)
#   ("add", (terms...))  ("mul", (factors...))  ("neg", a)  ("inv", a)  ("pow", a, b)  ("root", a, n)
#   ("func", name, a)  ("log", a, base)  ("fact", a)  ("abs", a)  ("binom", n, k)  ("floor", a)  ("ceil", a)
# Sums and products are n-ary and division is multiplication by ("inv", b), so long chains stay shallow trees.


class _ParseError(ValueError):
    pass


class _TooBig(ArithmeticError):
    """A value exceeds the size limits: it is refused, never computed."""


class _Undefined(ArithmeticError):
    """Division by zero, log 0, a free symbol where a number is needed, ..."""


_TOKEN_RE = re.compile(r"(?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)|(?P<cmd>\\(?:[A-Za-z]+|.))|"
                       r"(?P<word>[A-Za-z]+)|(?P<op>[-+*/^_()\[\]{},!|=&'<>])|(?P<space>\s+)")
_FUNCS = {"sin": "sin", "cos": "cos", "tan": "tan", "cot": "cot", "sec": "sec", "csc": "csc", "arcsin": "asin",
          "arccos": "acos", "arctan": "atan", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh", "exp": "exp",
          "ln": "log", "log": "log"}
_WORDS = sorted(list(_FUNCS) + ["sqrt", "pi"], key=len, reverse=True)
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
          "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi",
          "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega"}
_OP_CMDS = {"cdot": "*", "times": "*", "ast": "*", "div": "/", "lfloor": "lfloor", "rfloor": "rfloor",
            "lceil": "lceil", "rceil": "rceil"}


def _split_word(word: str) -> list[tuple[str, str]]:
    """A run of letters: known names (sin, sqrt, pi, ...) and otherwise single-letter variables (xy = x*y). Runs of
    4+ letters that are not names are prose ("apples"), not math."""
    out, i, plain = [], 0, 0
    while i < len(word):
        for name in _WORDS:
            if word.startswith(name, i):
                out.append(("word", name))
                i += len(name)
                plain = 0
                break
        else:
            out.append(("word", word[i]))
            i += 1
            plain += 1
            if plain > 3:
                raise _ParseError(f"text, not math: {word!r}")
    return out


def _tokenize(s: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(s):
        m = _TOKEN_RE.match(s, pos)
        if not m:
            raise _ParseError(f"unexpected character {s[pos]!r}")
        pos = m.end()
        kind = m.lastgroup
        text = m.group(kind)
        if kind == "space":
            continue
        if kind == "word":
            tokens.extend(_split_word(text))
        elif kind == "cmd":
            name = text[1:]
            if name in _OP_CMDS:
                tokens.append(("op", _OP_CMDS[name]))
            elif name in ("vert", "lvert", "rvert", "mid"):
                tokens.append(("op", "|"))
            else:
                tokens.append(("cmd", name))
        else:
            tokens.append((kind, text))
    return tokens


_ATOM_CMDS = {"frac", "sqrt", "pi", "infty", "binom", "lfloor", "lceil", "imagunit"} | set(_FUNCS) | _GREEK
_END = ("end", "")


class _Parser:
    """Recursive descent over tokens, with node and depth budgets (parse cost is bounded by the input length).

    expr  := term (('+'|'-') term)*
    term  := unary (('*'|'/') unary | implicit power)*      implicit multiplication: 2x, 2(x+1), x\\sqrt{2}
    unary := ('-'|'+') unary | power
    power := postfix ('^' exponent)?                         right-associative: a^b^c = a^(b^c)
    postfix := atom '!'*
    """

    def __init__(self, tokens):
        self.toks, self.i, self.nodes, self.depth, self.abs_open = tokens, 0, 0, 0, 0

    def peek(self, k=0):
        return self.toks[self.i + k] if self.i + k < len(self.toks) else _END

    def take(self):
        t = self.peek()
        self.i += 1
        return t

    def expect(self, value):
        t = self.take()
        if t[1] != value or t[0] not in ("op", "cmd"):
            raise _ParseError(f"expected {value!r}, got {t[1]!r}")

    def node(self, *parts):
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _ParseError("expression too large")
        return parts

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _ParseError("expression nested too deeply")

    def parse(self):
        tree = self.expr()
        if self.peek() != _END:
            raise _ParseError(f"unexpected {self.peek()[1]!r}")
        return tree

    def expr(self):
        terms = [self.term()]
        while self.peek() in (("op", "+"), ("op", "-")):
            sign = self.take()[1]
            t = self.term()
            terms.append(t if sign == "+" else self.node("neg", t))
        return terms[0] if len(terms) == 1 else self.node("add", tuple(terms))

    def starts_atom(self, t):
        kind, val = t
        if kind in ("num", "word"):
            return True
        if kind == "op":
            return val in ("(", "{", "lfloor", "lceil") or (val == "|" and self.abs_open == 0)
        return kind == "cmd" and val in _ATOM_CMDS

    def term(self):
        factors = [self.unary()]
        while True:
            t = self.peek()
            if t in (("op", "*"), ("op", "/")):
                self.take()
                f = self.unary()
                factors.append(f if t[1] == "*" else self.node("inv", f))
            elif self.starts_atom(t):
                if t[0] == "num" and self.toks[self.i - 1][0] == "num":
                    raise _ParseError("two numbers side by side")
                factors.append(self.power())
            else:
                break
        return factors[0] if len(factors) == 1 else self.node("mul", tuple(factors))

    def unary(self):
        self.enter()
        t = self.peek()
        if t == ("op", "-"):
            self.take()
            out = self.node("neg", self.unary())
        elif t == ("op", "+"):
            self.take()
            out = self.unary()
        else:
            out = self.power()
        self.depth -= 1
        return out

    def power(self):
        base = self.postfix()
        if self.peek() == ("op", "^"):
            self.take()
            return self.node("pow", base, self.exponent())
        return base

    def exponent(self):
        self.enter()
        t = self.peek()
        if t in (("op", "-"), ("op", "+")):
            self.take()
            e = self.exponent()
            out = self.node("neg", e) if t[1] == "-" else e
        else:
            out = self.power()  # `{...}` groups come back from atom(); x^2^3 nests to the right
        self.depth -= 1
        return out

    def postfix(self):
        a = self.atom()
        while self.peek() == ("op", "!"):
            self.take()
            a = self.node("fact", a)
        return a

    def group(self, close):
        e = self.expr()
        self.expect(close)
        return e

    def arg(self):
        """A macro argument: {group} or one token (\\frac ab, \\sqrt x)."""
        if self.peek() == ("op", "{"):
            self.take()
            return self.group("}")
        return self.atom()

    def subscript(self) -> str:
        if self.peek() != ("op", "_"):
            return ""
        self.take()
        if self.peek() == ("op", "{"):
            self.take()
            parts = []
            while self.peek() not in (("op", "}"), _END):
                parts.append(self.take()[1])
                if len(parts) > 20:
                    raise _ParseError("subscript too long")
            self.expect("}")
            return "_" + "".join(parts)
        t = self.take()
        if t[0] not in ("num", "word"):
            raise _ParseError("bad subscript")
        return "_" + t[1]

    def atom(self):
        self.enter()
        kind, val = self.take()
        if kind == "num":
            dec = "." in val or "e" in val.lower()
            f = _literal(val)
            out = self.node("num", f.numerator, f.denominator, dec)
        elif kind == "word" and val in _FUNCS:
            out = self.function(_FUNCS[val])
        elif kind == "word" and val == "sqrt":
            out = self.node("root", self.arg(), self.node("num", 2, 1, False))
        elif kind == "word" and val == "pi":
            out = self.node("const", "pi")
        elif kind == "word" and val == "e" and self.peek() != ("op", "_"):
            out = self.node("const", "E")
        elif kind == "word":
            out = self.node("sym", val + self.subscript())
        elif kind == "op" and val in ("(", "[", "{"):
            out = self.group({"(": ")", "[": "]", "{": "}"}[val])
        elif kind == "op" and val == "|" and self.abs_open == 0:
            self.abs_open += 1
            out = self.node("abs", self.group("|"))
            self.abs_open -= 1
        elif kind == "op" and val in ("lfloor", "lceil"):
            out = self.node(val[1:], self.group("r" + val[1:]))
        elif kind == "cmd":
            out = self.command(val)
        else:
            raise _ParseError(f"unexpected {val!r}" if val else "unexpected end")
        self.depth -= 1
        return out

    def command(self, name):
        if name == "frac":
            num = self.arg()
            return self.node("mul", (num, self.node("inv", self.arg())))
        if name == "sqrt":
            n = self.node("num", 2, 1, False)
            if self.peek() == ("op", "["):
                self.take()
                n = self.group("]")
            return self.node("root", self.arg(), n)
        if name == "binom":
            return self.node("binom", self.arg(), self.arg())
        if name == "pi":
            return self.node("const", "pi")
        if name == "infty":
            return self.node("const", "oo")
        if name == "imagunit":  # written by _imaginary_unit for i
            return self.node("const", "I")
        if name in _FUNCS:
            return self.function(_FUNCS[name])
        if name in _GREEK:
            return self.node("sym", name + self.subscript())
        raise _ParseError(f"unsupported command \\{name}")

    def function(self, name):
        """\\sin x, \\sin(x), \\sin^2 x, \\log_2 8, \\ln{x}; a bare argument runs to the next function or operator."""
        base = None
        if name == "log" and self.peek() == ("op", "_"):
            self.take()
            base = self.arg()
        power = None
        if self.peek() == ("op", "^"):
            self.take()
            power = self.exponent()
        if self.peek() in (("op", "("), ("op", "{")):
            a = self.group(")" if self.take()[1] == "(" else "}")
        else:
            factors = [self.power()]
            while self.starts_atom(self.peek()) and not self.is_function(self.peek()):
                factors.append(self.power())
            a = factors[0] if len(factors) == 1 else self.node("mul", tuple(factors))
        out = self.node("log", a, base) if name == "log" else self.node("func", name, a)
        return self.node("pow", out, power) if power is not None else out

    @staticmethod
    def is_function(t):
        return t[1] in _FUNCS and t[0] in ("word", "cmd")


def _literal(val: str) -> Fraction:
    """A number token as an exact rational ("0.1" is 1/10). Its numerator and denominator have at most
    digits + |exponent| decimal digits, so that bound is checked before Fraction() builds 10^exponent: "1e10000000"
    is refused in microseconds instead of taking seconds."""
    mantissa, _, exponent = val.lower().partition("e")
    digits = sum(c.isdigit() for c in mantissa)
    if (digits + abs(int(exponent or 0))) * math.log2(10) > MAX_BITS:
        raise _ParseError("number too large")
    return Fraction(val)


@lru_cache(maxsize=4096)
def _parse_cached(s: str):
    """Parse tree, or the _ParseError instance (cached too: the same gold answer is graded many times)."""
    try:
        return _Parser(_tokenize(s)).parse()
    except _ParseError as e:
        return e


def _parse(s: str):
    tree = _parse_cached(s)
    if isinstance(tree, _ParseError):
        raise tree
    return tree


def _free_symbols(tree, out=None) -> set:
    out = set() if out is None else out
    if tree is None:
        return out
    kind = tree[0]
    if kind == "sym":
        out.add(tree[1])
    elif kind in ("add", "mul"):
        for t in tree[1]:
            _free_symbols(t, out)
    elif kind in ("num", "const"):
        pass
    elif kind == "func":
        _free_symbols(tree[2], out)
    else:
        for t in tree[1:]:
            _free_symbols(t, out)
    return out


# -----------------------------------------------------------------------------------------------------------------
# numeric evaluation of a tree. Values are (value, level): level 0 = exact rational (Fraction), 1 = exact rational
# written with a decimal point, 2 = float/complex (irrational or approximate). Sizes are checked BEFORE computing.

_INF = complex(math.inf, 0)


def _bits(f: Fraction) -> int:
    return max(f.numerator.bit_length(), f.denominator.bit_length())


def _checked(f: Fraction) -> Fraction:
    if _bits(f) > MAX_BITS:
        raise _TooBig("rational too large")
    return f


def _finite(z: complex) -> complex:
    if not (math.isfinite(z.real) and math.isfinite(z.imag)):
        raise _TooBig("float overflow")
    if abs(z) > 1e300:
        raise _TooBig("float too large")
    return z


def _as_complex(v) -> complex:
    try:
        return complex(v)
    except OverflowError:
        raise _TooBig("too large for a float") from None


def _exact_root(f: Fraction, n: int) -> Fraction | None:
    """f^(1/n) when it is rational (sqrt(16/9) = 4/3), else None."""
    if f < 0 and n % 2 == 0 or _bits(f) > 2000:
        return None
    sign = -1 if f < 0 else 1
    out = []
    for x in (abs(f.numerator), f.denominator):
        r = round(x ** (1.0 / n)) if x.bit_length() < 1000 else None
        if r is None:
            return None
        for c in (r - 1, r, r + 1):
            if c >= 0 and c ** n == x:
                out.append(c)
                break
        else:
            return None
    return sign * Fraction(out[0], out[1])


def _pow(a, b):
    (x, lx), (y, ly) = a, b
    level = max(lx, ly)
    if level < 2 and y.denominator == 1:
        e = y.numerator
        if x == 0 and e < 0:
            raise _Undefined("0 to a negative power")
        if x in (0, 1) or e == 0:
            return Fraction(1) if e == 0 else x, level
        if x == -1:
            return Fraction(1 if e % 2 == 0 else -1), level
        if abs(e) * _bits(x) > MAX_BITS:
            raise _TooBig("power too large")
        return _checked(x ** e), level
    if level < 2 and y.denominator <= 64 and abs(y.numerator) <= 64:
        r = _exact_root(x, y.denominator)
        if r is not None:
            return _pow((r, lx), (Fraction(y.numerator), ly))
    x, y = _as_complex(x), _as_complex(y)
    if x == 0:
        if y.real > 0:
            return 0j, 2
        raise _Undefined("0 to a non-positive power")
    lg = y * cmath.log(x)
    if lg.real > 690:
        raise _TooBig("power too large")
    return _finite(cmath.exp(lg)), 2


def _fact_arg(v) -> int:
    x, level = v
    if level == 2:
        z = complex(x)
        if abs(z.imag) > 1e-9 or abs(z.real - round(z.real)) > 1e-9:
            raise _Undefined("factorial of a non-integer")
        x = Fraction(round(z.real))
    if x.denominator != 1 or x < 0:
        raise _Undefined("factorial of a non-integer")
    if x > MAX_FACTORIAL:
        raise _TooBig("factorial too large")
    return int(x)


_CFUNCS = {"sin": cmath.sin, "cos": cmath.cos, "tan": cmath.tan, "asin": cmath.asin, "acos": cmath.acos,
           "atan": cmath.atan, "sinh": cmath.sinh, "cosh": cmath.cosh, "tanh": cmath.tanh,
           "cot": lambda z: 1 / cmath.tan(z), "sec": lambda z: 1 / cmath.cos(z), "csc": lambda z: 1 / cmath.sin(z)}


def _num_eval(tree, env: dict | None = None):
    """-> (value, level). env maps symbol names to complex values (for probing); missing symbols are _Undefined."""
    kind = tree[0]
    if kind == "num":
        return Fraction(tree[1], tree[2]), (1 if tree[3] else 0)
    if kind == "sym":
        if env is None or tree[1] not in env:
            raise _Undefined(f"free symbol {tree[1]}")
        return env[tree[1]], 2
    if kind == "const":
        if tree[1] == "oo":
            return _INF, 2
        return {"pi": complex(math.pi), "E": complex(math.e), "I": 1j}[tree[1]], 2
    if kind == "neg":
        x, level = _num_eval(tree[1], env)
        return -x, level
    if kind in ("add", "mul"):
        vals = [_num_eval(t, env) for t in tree[1]]
        level = max(v[1] for v in vals)
        if any(v[0] == _INF or v[0] == -_INF for v in vals):
            raise _Undefined("arithmetic with infinity")
        if level < 2:
            acc = Fraction(0 if kind == "add" else 1)
            for v, _ in vals:
                acc = _checked(acc + v if kind == "add" else acc * v)
            return acc, level
        acc = complex(0 if kind == "add" else 1)
        for v, _ in vals:
            acc = _finite(acc + _as_complex(v) if kind == "add" else acc * _as_complex(v))
        return acc, 2
    if kind == "inv":
        x, level = _num_eval(tree[1], env)
        if x == 0:
            raise _Undefined("division by zero")
        if x == _INF or x == -_INF:
            raise _Undefined("division by infinity")
        return (1 / x, level) if level < 2 else (_finite(1 / _as_complex(x)), 2)
    if kind == "pow":
        a, b = _num_eval(tree[1], env), _num_eval(tree[2], env)
        if _INF in (a[0], b[0]) or -_INF in (a[0], b[0]):
            raise _Undefined("power with infinity")
        return _pow(a, b)
    if kind == "root":
        a, n = _num_eval(tree[1], env), _num_eval(tree[2], env)
        if n[0] == 0:
            raise _Undefined("zeroth root")
        inv_n = (1 / n[0], n[1]) if n[1] < 2 else (1 / _as_complex(n[0]), 2)
        return _pow(a, inv_n)
    if kind == "abs":
        x, level = _num_eval(tree[1], env)
        return (abs(x), level) if level < 2 else (complex(abs(x)), 2)
    if kind == "fact":
        return _checked(Fraction(math.factorial(_fact_arg(_num_eval(tree[1], env))))), 0
    if kind == "binom":
        n, k = _fact_arg(_num_eval(tree[1], env)), _fact_arg(_num_eval(tree[2], env))
        return Fraction(math.comb(n, k)), 0
    if kind in ("floor", "ceil"):
        x, level = _num_eval(tree[1], env)
        if level == 2:
            if abs(x.imag) > 1e-12:
                raise _Undefined("floor of a complex number")
            x = Fraction(x.real)
        return Fraction(math.floor(x) if kind == "floor" else math.ceil(x)), level
    if kind == "log":
        x = _as_complex(_num_eval(tree[1], env)[0])
        if x == 0:
            raise _Undefined("log of zero")
        out = cmath.log(x)
        if tree[2] is not None:
            base = _as_complex(_num_eval(tree[2], env)[0])
            if base == 0 or base == 1:
                raise _Undefined("bad log base")
            out = out / cmath.log(base)
        return _finite(out), 2
    if kind == "func":
        x = _as_complex(_num_eval(tree[2], env)[0])
        name = tree[1]
        if name == "exp":
            if x.real > 690:
                raise _TooBig("exp too large")
            return _finite(cmath.exp(x)), 2
        if abs(x.imag) > 690:
            raise _TooBig("trig of a huge imaginary part")
        try:
            return _finite(_CFUNCS[name](x)), 2
        except (ZeroDivisionError, ValueError):
            raise _Undefined(f"{name} undefined here") from None
    raise _ParseError(f"unknown node {kind}")


def _has_decimal(tree) -> bool:
    """Whether a number in the tree was written with a decimal point or exponent (so it may be rounded)."""
    kind = tree[0]
    if kind == "num":
        return tree[3]
    if kind in ("sym", "const"):
        return False
    children = tree[1] if kind in ("add", "mul") else ((tree[2],) if kind == "func" else tree[1:])
    return any(_has_decimal(c) for c in children if c is not None)


def _values_close(a, b, rounded: bool) -> bool:
    """rounded: a decimal was written on either side. Exact rationals compare exactly, except that a decimal may
    round a non-integer (0.3333 for 1/3). An integer is never matched by a nearby decimal (1000001.5 is not 1000000)
    nor by a nearby irrational (sqrt(41617) is not 204), and two exact forms never match by approximation
    (355/113 is not pi): both only get float rounding noise."""
    (x, lx), (y, ly) = a, b
    integer = (lx == 0 and x.denominator == 1) or (ly == 0 and y.denominator == 1)  # level 0 is a Fraction
    if lx < 2 and ly < 2:
        if x == y:
            return True
        if (lx == 0 and ly == 0) or integer:
            return False
    x, y = _as_complex(x), _as_complex(y)
    if math.isinf(x.real) or math.isinf(y.real):
        return x == y
    tol = REL_TOL if rounded and not integer else FLOAT_NOISE
    return abs(x - y) <= tol * max(abs(x), abs(y))


# -----------------------------------------------------------------------------------------------------------------
# symbolic check in a worker process (sympy, killed on timeout)

_HERE = os.path.dirname(os.path.abspath(__file__))
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
    code = f"import sys; sys.path.insert(0, {_HERE!r}); import grader; grader._worker_main()"
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


# -----------------------------------------------------------------------------------------------------------------
# comparison

_PROBE_POINTS = [[0.3 + 1.4 * random.Random(1000 * trial + i).random() for i in range(32)] for trial in range(3)]


def _probe_env(names: list[str], trial: int) -> dict:
    return {n: complex(_PROBE_POINTS[trial][i % 32] + 0.013 * (i // 32)) for i, n in enumerate(names)}


def _probe(tree_a, tree_b, names, combine) -> bool:
    """Whether the two trees clearly differ as functions: `combine(va, vb)` is True (differ) at >= 2 of 3 random
    points where both evaluate. Only ever used to say "not equal" before asking sympy."""
    differ = 0
    for trial in range(3):
        env = _probe_env(names, trial)
        try:
            va = _as_complex(_num_eval(tree_a, env)[0])
            vb = _as_complex(_num_eval(tree_b, env)[0])
        except (_TooBig, _Undefined, OverflowError, ZeroDivisionError, ValueError):
            continue
        if combine(va, vb):
            differ += 1
    return differ >= 2


def _far(x: complex, y: complex) -> bool:
    return abs(x - y) > 1e-6 * max(1.0, abs(x), abs(y))


def _too_heavy(tree) -> bool:
    """Whether handing the tree to sympy risks unbounded work: a symbol-free part too large to evaluate, or a
    symbolic power with a huge exponent."""
    kind = tree[0]
    if kind in ("num", "sym", "const"):
        return False
    if not _free_symbols(tree):
        try:
            _num_eval(tree)
        except _TooBig:
            return True
        except (_Undefined, OverflowError, ZeroDivisionError, ValueError):
            pass
        return False
    children = tree[1] if kind in ("add", "mul") else ((tree[2],) if kind == "func" else tree[1:])
    if kind == "pow" and not _free_symbols(tree[2]):
        try:
            e = _as_complex(_num_eval(tree[2])[0])
            if abs(e) > MAX_SYMBOLIC_EXPONENT:
                return True
        except (_TooBig, OverflowError):
            return True
        except (_Undefined, ZeroDivisionError, ValueError):
            pass
    return any(_too_heavy(c) for c in children if c is not None)


def _hundredth(v):
    x, level = v
    return (x / 100, level) if level < 2 else (_as_complex(x) / 100, 2)


def _equal_values(va, vb, rounded: bool, percent: tuple[bool, bool]) -> bool:
    """percent = (pred had a % sign, gold had one). Convention: "x%" is worth x/100, and the side that carried the
    sign may also be read as its bare number x (the sign dropped or added): gold "62.5%" accepts 62.5, 62.5% and
    0.625, and pred "50%" matches gold 0.5 or 50. Only that side is scaled, so 6250 is not "62.5%", 800 is not "8%"
    and "0.5%" is not 50. This is a subset of the Qwen2.5-Math / DeepSeek-Math grader, which converts x% to x/100
    and then accepts pred in {g, g/100, g*100} for any two numbers: we do not accept g/100 or g*100 when no % was
    written (50 vs 0.5 is a wrong probability, not a percent), nor the double scaling 0.00625 for gold "62.5%"."""
    if _values_close(va, vb, rounded):
        return True
    p_pct, g_pct = percent
    if p_pct == g_pct:  # both or neither written as percents: the same scale on both sides
        return False
    return _values_close(_hundredth(va), vb, rounded) if p_pct else _values_close(va, _hundredth(vb), rounded)


def _equal_trees(a, b, deadline: float, percent: tuple[bool, bool]) -> bool:
    if a == b:
        return True
    names = sorted(_free_symbols(a) | _free_symbols(b))
    if not names:
        try:
            va, vb = _num_eval(a), _num_eval(b)
        except (_TooBig, _Undefined, OverflowError, ZeroDivisionError, ValueError):
            return False
        return _equal_values(va, vb, _has_decimal(a) or _has_decimal(b), percent)
    if _probe(a, b, names, _far):
        return False
    if _too_heavy(a) or _too_heavy(b):
        return False
    return _sympy_call(("expr", a, b), deadline - time.monotonic())


def _ratio_varies(d1, d2, names) -> bool:
    """For equations d1 = 0 and d2 = 0: d1/d2 clearly not constant over the probe points."""
    ratios = []
    for trial in range(3):
        env = _probe_env(names, trial)
        try:
            v1 = _as_complex(_num_eval(d1, env)[0])
            v2 = _as_complex(_num_eval(d2, env)[0])
        except (_TooBig, _Undefined, OverflowError, ZeroDivisionError, ValueError):
            continue
        if abs(v2) < 1e-9:
            if abs(v1) > 1e-6:
                return True
            continue
        ratios.append(v1 / v2)
    return len(ratios) >= 2 and any(_far(r, ratios[0]) for r in ratios[1:])


def _equal_equations(p: tuple[str, str], g: tuple[str, str], deadline: float) -> bool:
    (pl, pr), (gl, gr) = p, g
    if _key(pl) == _key(gl) and _key(pr) == _key(gr) or _key(pl) == _key(gr) and _key(pr) == _key(gl):
        return True
    d1 = ("add", (_parse(pl), ("neg", _parse(pr))))
    d2 = ("add", (_parse(gl), ("neg", _parse(gr))))
    names = sorted(_free_symbols(d1) | _free_symbols(d2))
    if _ratio_varies(d1, d2, names) or _too_heavy(d1) or _too_heavy(d2):
        return False
    return _sympy_call(("eq", d1, d2), deadline - time.monotonic())


# a name on the left of "=" whose value is the answer: x, x_1, f(x), f(2), AB, \\alpha, |AB|, \\angle ABC, area
_SIMPLE_LHS_RE = re.compile(r"(?:[A-Za-z]{1,12}|\\[A-Za-z]+)(?:_\{?\w+\}?)?(?:\([A-Za-z0-9]\))?|\|[A-Za-z]{1,3}\||"
                            r"(?:m\s*)?\\angle\s*[A-Z]{1,3}")
# ... or a tuple of names: "(p, q) = (3, 2)"
_NAME_TUPLE_RE = re.compile(r"\(\s*[A-Za-z](?:_\{?\w+\}?)?(?:\s*,\s*[A-Za-z](?:_\{?\w+\}?)?)+\s*\)")


def _split_top(s: str, sep: str) -> list[str]:
    """Split at `sep` outside all brackets."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(s[start:])
    return parts


def _equation(s: str) -> tuple[str, str] | None:
    parts = _split_top(s, "=")
    if len(parts) < 2:
        return None
    return parts[0].strip(), parts[-1].strip()


def _equal_scalars(p: str, g: str, deadline: float, percent: tuple[bool, bool]) -> bool:
    if _key(p) == _key(g):
        return True
    pe, ge = _equation(p), _equation(g)
    if pe and ge:
        return _equal_equations(pe, ge, deadline)
    # "x = 5" against "5": the value after a plain variable name counts
    if pe:
        if not _SIMPLE_LHS_RE.fullmatch(pe[0]):
            return False
        p = _mixed_number(pe[1])
    if ge:
        if not _SIMPLE_LHS_RE.fullmatch(ge[0]):
            return False
        g = _mixed_number(ge[1])
    if _key(p) == _key(g):
        return True
    if not p or not g:
        return False
    if re.fullmatch(r"[A-Za-z][A-Za-z ]+", p) and re.fullmatch(r"[A-Za-z][A-Za-z ]+", g):
        # two runs of 2+ plain letters are words ("Yes", "East", "\\text{even}"), not products of variables: "yes" is
        # "Yes", "no" is not "on". (A single letter stays a variable, so x is not X.)
        return p.lower() == g.lower()
    return _equal_trees(_parse(p), _parse(g), deadline, percent)


def _structure(s: str, depth: int = 0):
    """("scalar", s) | ("seq", open, close, items) | ("set", items) | ("list", items) | ("union", items) |
    ("matrix", rows). Bare comma lists and sets are unordered; tuples and intervals are ordered."""
    s = s.strip()
    if depth > 4:
        raise _ParseError("structure nested too deeply")
    m = re.fullmatch(r"\\begin\{([pbBvV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}", s, re.S)
    if m:
        rows = [r for r in re.split(r"\\\\", m.group(2)) if r.strip()]
        cells = [[c.strip() for c in r.split("&")] for r in rows]
        if sum(len(r) for r in cells) > MAX_ELEMENTS:
            raise _ParseError("matrix too large")
        return ("matrix", [[_structure(c, depth + 1) for c in r] for r in cells])
    parts = _split_top(s, "\\cup")
    if len(parts) > 1:
        return ("union", [_structure(x, depth + 1) for x in parts])
    if s.startswith("\\{") and s.endswith("\\}") and _wrapped_by(s, 1):
        inner = s[2:-2].strip()
        items = _split_top(inner, ",") if inner else []
        if len(items) > MAX_ELEMENTS:
            raise _ParseError("too many elements")
        return ("set", [_structure(x, depth + 1) for x in items])
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _wrapped_by(s):
        items = _split_top(s[1:-1], ",")
        if len(items) > 1:
            if len(items) > MAX_ELEMENTS:
                raise _ParseError("too many elements")
            return ("seq", s[0], s[-1], [_structure(x, depth + 1) for x in items])
    items = [x for x in _split_top(s, ",")]
    if len(items) > 1:
        if len(items) > MAX_ELEMENTS:
            raise _ParseError("too many elements")
        return ("list", [_structure(x, depth + 1) for x in items])
    pm = _split_top(s, "\\pm")
    if len(pm) == 2 and pm[1].strip():  # a \pm b: the two answers a + b and a - b
        a, b = pm[0].strip() or "0", pm[1].strip()
        return ("list", [("scalar", f"{a}+({b})"), ("scalar", f"{a}-({b})")])
    return ("scalar", _mixed_number(s) if depth else s)  # an item of a list is a whole answer: 2\\frac12 is 2.5


def _vector(st):
    """A matrix with one row or one column as a flat list of cells, else None."""
    rows = st[1]
    if len(rows) == 1:
        return rows[0]
    if all(len(r) == 1 for r in rows):
        return [r[0] for r in rows]
    return None


def _equal_ordered(ps, gs, deadline, percent) -> bool:
    return len(ps) == len(gs) and all(_equal_structures(p, g, deadline, percent) for p, g in zip(ps, gs))


def _pair_equal(p, g, deadline, percent) -> bool:
    """One candidate pairing of an unordered comparison: an item that cannot be parsed or evaluated is only unequal
    to this partner ("k \\ge 2" is no number, yet it matches its own text in another position)."""
    try:
        return _equal_structures(p, g, deadline, percent)
    except (_ParseError, _TooBig, _Undefined, ArithmeticError, ValueError):
        return False


def _equal_unordered(ps, gs, deadline, percent) -> bool:
    if len(ps) != len(gs):
        return False
    unused = list(range(len(gs)))
    for p in ps:
        for j in unused:
            if _pair_equal(p, gs[j], deadline, percent):
                unused.remove(j)
                break
        else:
            return False
    return True


def _deduplicated(st, deadline: float):
    """A set or bare list without repeated elements ({1, 1, 2} is {1, 2}); one whose elements are all one value is
    that value ("-2, -2"; "15\\frac{39}{40}, \\frac{639}{40}": one answer written two ways, as boxes joined by "or"
    can be), and so is a set of one element (\\{2\\} answers "find all x" as 2 does)."""
    if st[0] not in ("set", "list") or not st[1]:
        return st
    items = []
    for x in st[1]:
        if not any(_pair_equal(x, y, deadline, (False, False)) for y in items):
            items.append(x)
    return items[0] if len(items) == 1 else (st[0], items)


def _equal_structures(p, g, deadline: float, percent: tuple[bool, bool]) -> bool:
    p, g = _deduplicated(p, deadline), _deduplicated(g, deadline)
    kp, kg = p[0], g[0]
    if kp == "scalar" and kg == "scalar":
        return _equal_scalars(p[1], g[1], deadline, percent)
    if kp == "seq" and kg == "seq":
        return p[1] == g[1] and p[2] == g[2] and _equal_ordered(p[3], g[3], deadline, percent)
    if kp in ("set", "list") and kg in ("set", "list") or kp == kg == "union":
        return _equal_unordered(p[1], g[1], deadline, percent)
    if kp == kg == "matrix":
        return (len(p[1]) == len(g[1]) and all(len(a) == len(b) for a, b in zip(p[1], g[1]))
                and _equal_ordered([c for r in p[1] for c in r], [c for r in g[1] for c in r], deadline, percent))
    if {kp, kg} == {"matrix", "seq"}:  # a column vector written as a tuple
        m, t = (p, g) if kp == "matrix" else (g, p)
        v = _vector(m)
        return v is not None and t[1] == "(" and t[2] == ")" and _equal_ordered(
            v if m is p else t[3], t[3] if m is p else v, deadline, percent)
    return False


_DIGIT_LIST_RE = re.compile(r"-?[1-9]\d{0,2}(?:,\d{3})+")


def _digit_list_equal(pred_norm: str, gold: str) -> bool:
    """A gold written as digit groups with bare commas ("110,880") reads as one number (110880, see _normalize) but
    in college_math's "find each" questions it is a list of answers (110 and 880). The list reading is accepted too,
    only when the pred's items are exactly the gold's digit groups as strings (any order, like other lists): a true
    thousands number then matches just its own groups spaced out ("1, 000" for 1,000), never "1, 0" or "1, 000, 0"."""
    if not _DIGIT_LIST_RE.fullmatch(gold.strip()):
        return False
    groups = gold.strip().split(",")
    items = _split_top(pred_norm, ",")
    if len(items) != len(groups):
        return False
    values = []
    for item in items:
        item = _normalize(item)[0]
        eq = _equation(item)
        values.append(eq[1] if eq and _SIMPLE_LHS_RE.fullmatch(eq[0]) else item)  # "x = -125, x = 343"
    return sorted(values) == sorted(groups)


# -----------------------------------------------------------------------------------------------------------------
# whole-answer readings tried before the structural comparison: "name = value", inequalities as intervals, the
# imaginary unit, the decimal comma

def _drop_name(s: str, other: str) -> str:
    """"(p,q)=(3,2)" -> "(3,2)", "|AB| = 1" -> "1": a whole answer written as a name and its value, when the other
    side is not an equation itself (an equation is compared as one: "x = 3" is not "y = 3")."""
    parts = _split_top(s, "=")
    if len(parts) != 2 or len(_split_top(other, "=")) > 1 or len(_split_top(s, ",")) > 1 or not parts[1].strip():
        return s
    lhs, rhs = parts[0].strip(), parts[1].strip()
    named = _SIMPLE_LHS_RE.fullmatch(lhs) or _NAME_TUPLE_RE.fullmatch(lhs)
    return _mixed_number(rhs) if named or _true_identity(lhs, rhs) else s


def _true_identity(lhs: str, rhs: str) -> bool:
    """Whether "lhs = rhs" is a true statement between numbers ("e^{i\\pi} = -1", "2^{10} = 1024"): then its value is
    the answer. A false one ("2 + 2 = 5") is not read as 5."""
    try:
        a, b = _parse(lhs), _parse(rhs)
        if _free_symbols(a) or _free_symbols(b):
            return False
        return _values_close(_num_eval(a), _num_eval(b), _has_decimal(a) or _has_decimal(b))
    except (_ParseError, _TooBig, _Undefined, ArithmeticError, ValueError):
        return False


_INEQ_RE = re.compile(r"\\(?:le|ge|lt|gt)(?![A-Za-z])|<=|>=|<|>")
_INEQ_OPS = {"\\le": "<=", "\\ge": ">=", "\\lt": "<", "\\gt": ">", "<=": "<=", ">=": ">=", "<": "<", ">": ">"}
_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}


def _endpoint(v) -> str:
    x, level = v
    if level < 2:
        return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"
    z = _as_complex(x)
    if abs(z.imag) > 1e-12:
        raise _Undefined("complex bound")
    return repr(z.real)


def _substitute(tree, name: str, node):
    """The tree with the symbol `name` replaced by `node` (trees are tuples; add/mul hold a tuple of children)."""
    if tree[0] == "sym":
        return node if tree[1] == name else tree
    out = []
    for c in tree:
        if isinstance(c, tuple) and c and isinstance(c[0], str):
            c = _substitute(c, name, node)
        elif isinstance(c, tuple):
            c = tuple(_substitute(x, name, node) for x in c)
        out.append(c)
    return tuple(out)


def _half_line(lhs: str, op: str, rhs: str) -> tuple[str, bool, object] | None:
    """lhs op rhs, linear in one variable -> (side "lower" | "upper", closed, bound value (x, level)) of the
    variable, or None. A plain name (x, f(x), AB) on one side is that variable; otherwise lhs - rhs is evaluated at
    six points and must be a line k*x + c (so -x > -1 is x < 1, 5 \\ge x is x \\le 5)."""
    if _SIMPLE_LHS_RE.fullmatch(lhs) and not _SIMPLE_LHS_RE.fullmatch(rhs):
        lhs = "x"
    elif _SIMPLE_LHS_RE.fullmatch(rhs) and not _SIMPLE_LHS_RE.fullmatch(lhs):
        rhs = "x"
    d = ("add", (_parse(lhs), ("neg", _parse(rhs))))
    names = _free_symbols(d)
    if len(names) != 1:
        return None
    name = names.pop()
    at = {Fraction(t, q): _num_eval(_substitute(d, name, ("num", t, q, False)))
          for t, q in ((-1, 1), (0, 1), (1, 1), (2, 1), (3, 1), (1, 2))}
    c, k = at[0], (at[1][0] - at[0][0], max(at[1][1], at[0][1]))
    if k[0] == 0 or any(not _values_close(at[t], (c[0] + k[0] * t, max(c[1], k[1])), False) for t in at):
        return None
    root = (-c[0] / k[0], max(c[1], k[1])) if max(c[1], k[1]) < 2 else (-_as_complex(c[0]) / _as_complex(k[0]), 2)
    if _as_complex(k[0]).real < 0:
        op = _FLIP[op]
    return ("upper" if op[0] == "<" else "lower"), op.endswith("="), root


def _unbounded(a: str, b: str) -> bool:
    """-\\infty < x, x < \\infty: a comparison of a name with an infinity bounds nothing."""
    infinite = ("\\infty", "-\\infty", "+\\infty")
    return a.replace(" ", "") in infinite and _SIMPLE_LHS_RE.fullmatch(b) is not None or (
        b.replace(" ", "") in infinite and _SIMPLE_LHS_RE.fullmatch(a) is not None)


def _as_interval(s: str) -> str | None:
    """An inequality in one variable as the interval it describes ("x \\ge 5" -> "[5, \\infty)", "0<f(x)<1" ->
    "(0, 1)"), or None for anything else (two variables, not linear, an equation, a list)."""
    ops = list(_INEQ_RE.finditer(s))
    if not 1 <= len(ops) <= 2 or "=" in _INEQ_RE.sub("", s) or len(_split_top(s, ",")) > 1:
        return None
    sides = [s[a.end() if a else 0:b.start() if b else len(s)].strip()
             for a, b in zip([None] + ops, ops + [None])]
    bounds = {"lower": None, "upper": None}
    try:
        for i, m in enumerate(ops):
            if _unbounded(sides[i], sides[i + 1]):
                continue
            half = _half_line(sides[i], _INEQ_OPS[m.group(0)], sides[i + 1])
            if half is None or bounds[half[0]] is not None:
                return None
            bounds[half[0]] = half[1:]
        lo, hi = bounds["lower"], bounds["upper"]
        left = "(-\\infty" if lo is None else ("[" if lo[0] else "(") + _endpoint(lo[1])
        right = "\\infty)" if hi is None else _endpoint(hi[1]) + ("]" if hi[0] else ")")
    except (_ParseError, _TooBig, _Undefined, ArithmeticError, ValueError):
        return None  # compared as written
    return f"{left}, {right}"


_OR_RE = re.compile(r"\bor\b|\\lor(?![A-Za-z])|\\vee(?![A-Za-z])")


def _intervals(norm: str, raw: str) -> str | None:
    """An inequality as its interval; inequalities joined by "or" as the union of theirs ("x < 1 or x > 2" ->
    "(-\\infty, 1) \\cup (2, \\infty)"). `raw` is the text before normalisation, which turned "or" and "and" alike
    into commas ("x > 0 and x < 1" is no union)."""
    single = _as_interval(norm)
    if single is not None or not _OR_RE.search(raw) or re.search(r"\band\b", raw):
        return single
    parts = [_as_interval(x.strip()) for x in _split_top(_OR_RE.sub(",", norm), ",")]
    if len(parts) < 2 or None in parts:
        return None
    return " \\cup ".join(parts)


_I_RE = re.compile(r"(?<![A-Za-z\\_])(?<!_\{)i(?![A-Za-z])")
_EULER_RE = re.compile(r"e\s*\^\s*(?:\{[^{}]*(?<![A-Za-z\\_])i(?![A-Za-z])[^{}]*\}|i(?![A-Za-z]))")


def _imaginary_unit(pn: str, gn: str) -> tuple[str, str]:
    """i is the imaginary unit when the context says the answer is complex: the gold uses i (3 + 4i), or the
    prediction is in Euler form (e^{i\\pi}); otherwise i stays a variable."""
    if not (_I_RE.search(gn) or _EULER_RE.search(pn)):
        return pn, gn
    return _I_RE.sub(r"\\imagunit ", pn), _I_RE.sub(r"\\imagunit ", gn)


_DECIMAL_COMMA_RE = re.compile(r"-?\d+,\d+")
_THOUSANDS_RE = re.compile(r"-?[1-9]\d{0,2}(?:,\d{3})+")


def _decimal_comma(pn: str, gn: str) -> str | None:
    """"1000,99" read as 1000.99, for a gold that is one number: a comma that cannot group thousands (1,234 is one
    thousand two hundred thirty-four, and "1,3" against the gold list "1,3" is a list)."""
    if _DECIMAL_COMMA_RE.fullmatch(pn) and not _THOUSANDS_RE.fullmatch(pn) and "," not in gn:
        return pn.replace(",", ".")
    return None


def _as_text(x, what: str) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, (int, float, Fraction)) and not isinstance(x, bool):
        if isinstance(x, float) and x.is_integer():
            return str(int(x))
        return str(x)
    raise TypeError(f"math_equal expects {what} as str (or a number), got {type(x).__name__}")


def _equal_readings(pn: str, gn: str, raw: tuple[str, str], deadline: float, percent: tuple[bool, bool]) -> bool:
    """Normalised pred and gold (raw: as given), compared structurally after the whole-answer readings above."""
    pn, gn = _imaginary_unit(pn, gn)
    pn, gn = _drop_name(pn, gn), _drop_name(gn, pn)
    pn, gn = _intervals(pn, raw[0]) or pn, _intervals(gn, raw[1]) or gn
    if _key(pn) == _key(gn) or _equal_structures(_structure(pn), _structure(gn), deadline, percent):
        return True
    comma = _decimal_comma(pn, gn)
    return comma is not None and _equal_structures(_structure(comma), _structure(gn), deadline, percent)


def math_equal(pred: str | None, gold: str, timeout: float = 2.0) -> bool:
    """Whether the predicted final answer means the same as the gold answer (see the module docstring for the
    order of checks). pred None (no answer extracted) is False. Never raises on model text; `timeout` bounds the
    seconds spent in sympy for this call (0 skips symbolic checks)."""
    if pred is None:
        return False
    pred, gold = _as_text(pred, "pred"), _as_text(gold, "gold")
    if pred.strip() == gold.strip() and gold.strip():
        return True
    if len(pred) > MAX_CHARS or len(gold) > MAX_CHARS:
        return False
    deadline = time.monotonic() + timeout
    try:
        (pn, p_pct), (gn, g_pct) = _normalize(pred), _normalize(gold)
        if not pn or not gn:
            return False
        if _key(pn) == _key(gn) or _digit_list_equal(pn, gold):
            return True
        gold_letter = _choice_letter(gn, gold=True)
        if gold_letter is not None:
            return _choice_letter(pn, gold=False) == gold_letter
        return _equal_readings(pn, gn, (pred, gold), deadline, (p_pct, g_pct))
    except (_ParseError, _TooBig, _Undefined, ArithmeticError, ValueError, RecursionError, MemoryError):
        return False
    except Exception as e:  # a grader bug must not crash an RL run; say so once
        _warn_once(f"math_equal: unexpected {type(e).__name__}: {e} (pred={pred[:80]!r}, gold={gold[:80]!r})")
        return False


_warned: set = set()


def _warn_once(msg: str):
    import warnings

    if msg not in _warned and len(_warned) < 100:
        _warned.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


# -----------------------------------------------------------------------------------------------------------------
# majority voting: answers that grade equal vote together

def _vote_key(answer: str | None) -> str | None:
    """Answers that are the same number vote together ("0.5", "\\frac12"); others by their normalised text."""
    if answer is None or len(answer) > MAX_CHARS:
        return None
    try:
        norm = _normalize(answer)[0]
        if not norm:
            return None
        value, level = _num_eval(_parse(norm))
        if level < 2:
            return f"q:{value}"
        z = complex(value)
        return f"f:{z.real:.6g},{z.imag:.6g}" if abs(z.imag) > 1e-12 else f"f:{z.real:.6g}"
    except Exception:
        try:
            return "s:" + _key(_normalize(answer)[0])
        except Exception:
            return "s:" + answer


def majority_answer(answers: list[str | None]) -> str | None:
    """The most common answer (ties: the one seen first); None answers do not vote."""
    counts, first = {}, {}
    for a in answers:
        k = _vote_key(a)
        if k is None:
            continue
        counts[k] = counts.get(k, 0) + 1
        first.setdefault(k, a)
    if not counts:
        return None
    best = max(counts, key=lambda k: counts[k])  # max keeps the first of equal counts (dicts keep order)
    return first[best]
