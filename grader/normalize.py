"""String-level normalisation of an answer before any parsing: dollars, \\left, spacing, \\text{} and units, degrees,
percent, \\dfrac, thousands separators, ... (`_normalize`), the exact-comparison key and multiple-choice letters."""
from __future__ import annotations

import re

from .extract import _matching_brace

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
    s = re.sub(r"\{\s*,\s*\}", "{,}", s)  # "12 {, }500"
    s = re.sub(r"(\d)\s*\{,\}\s*(?=\d{3}(?!\d))", r"\1", s)
    s = re.sub(r"(\d)\s*\{,\}\s*(?=\d)", r"\1.", s)
    return s.replace("{,}", "")


def _approximation(s: str, approx: bool) -> str:
    """"t = 2/7 \\approx 0.29": the exact value before \\approx is the answer (a chain "y = 2+5 = 7/3 \\approx 2.33"
    ends in it), unless nothing but a name stands there ("x \\approx 0.3333", "\\approx 3.14"); `approx` takes the
    rounded value after it instead (tried against a decimal gold)."""
    m = re.search(r"\\approx(?![A-Za-z])", s)
    if not m:
        return s
    before, after = s[:m.start()], re.sub(r"\\approx(?![A-Za-z])", "=", s[m.end():])
    exact = before.rsplit("=", 1)[-1].strip()
    if approx or not exact or re.fullmatch(r"[A-Za-z](?:_\{?\w+\}?)?", exact):
        return before.rsplit("=", 1)[0] + "=" + after if "=" in before else after
    return before


# a command written with its backslash doubled, as escaped strings print it ("\\\\frac"); the row break \\\\ of a
# matrix is kept (it is followed by a space, a digit or a cell, not by one of these names)
_DOUBLED_RE = re.compile(r"(?<!\\)\\\\(?=(?:[dt]?frac|sqrt|pi|cdot|times|div|left|right|text|mathrm|boxed|infty|"
                         r"le|ge|leq|geq|ne|neq|approx|pm|mp|cup|cap|in|emptyset|sin|cos|tan|log|ln|binom|"
                         r"alpha|beta|gamma|theta|lambda|mu|sigma|omega|circ|angle|sum|prod)(?![A-Za-z]))")


_ALIGNED_RE = re.compile(r"\\begin\{(aligned|align\*?|gathered|split|eqnarray\*?)\}(.*)\\end\{\1\}", re.S)


def _aligned(s: str) -> str:
    """An aligned display as one line: a row that starts with "=" continues a chain ("x &= 2 + 3 \\\\ &= 5" ->
    "x = 2 + 3 = 5"), another row is another item ("a &= 1 \\\\ b &= 2" -> "a = 1, b = 2")."""
    m = _ALIGNED_RE.fullmatch(s)
    if not m:
        return s
    rows = [r.replace("&", " ").strip() for r in re.split(r"\\\\", m.group(2))]
    rows = [r for r in rows if r]
    return rows[0] + "".join((" " if r.startswith(("=", "\\approx")) else ", ") + r for r in rows[1:]) if rows else s


def _decimal_comma_items(s: str) -> str:
    """"(1,5; 2,5)": when semicolons separate the items and every item is one number with a comma, the commas are
    decimal commas ("(1.5, 2.5)")."""
    inner = s.strip("()[]{} ")
    items = inner.split(";")
    if len(items) > 1 and all(re.fullmatch(r"\s*-?\d+,\d+\s*", x) for x in items):
        return re.sub(r"(\d),(\d)", r"\1.\2", s)
    return s


def _normalize(s: str, approx: bool = False) -> tuple[str, bool]:
    """-> (normalised string, had a percent sign). approx: read "a \\approx b" as b (see _approximation)."""
    for k, v in _UNICODE.items():
        if k in s:
            s = s.replace(k, v)
    s = _aligned(_DOUBLED_RE.sub(lambda m: "\\", s).strip())
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
    s = _approximation(s, approx)
    s = re.sub(r"\\[dtc]frac(?![A-Za-z])", r"\\frac", s)
    s = re.sub(r"\\[dt]binom(?![A-Za-z])", r"\\binom", s)
    s = re.sub(r"\\(le|ge)q(?:q|slant)?(?![A-Za-z])", r"\\\1", s)
    s = re.sub(r"\\neq(?![A-Za-z])|(?<![\d!])!=", r"\\ne ", s)  # (5!=120 is a factorial)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s)
    s = re.sub(r"\\(?:circ|degree)(?![A-Za-z])", "", s)
    percent = "%" in s
    s = s.replace("\\%", " ").replace("%", " ")
    s = _unwrap_text_commands(s)
    s = re.sub(r"\s+(?:and|or)\s+|(?<=[)\]])\s*(?:and|or)\s*(?=[(\[])", ", ", s)  # "1 and 2", "(3,5)or(5,3)"
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
    s = _decimal_comma_items(s).replace(";", ",")  # "(1; 2)", "1; 2": semicolons separate elements as commas do
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


# a letter picked in a short sentence: "So the choice is C.", "the final answer is (D)"
_PROSE_CHOICE_RE = re.compile(r"\b(?i:answer|choice|option)\s+(?i:is)\s*:?\s*\(?([A-J])\)?(?:[.:)]|\s|$)")


def _choice_letter(s: str, gold: bool) -> str | None:
    m = _GOLD_CHOICE_RE.fullmatch(s) if gold else _PRED_CHOICE_RE.match(s)
    if m is None and not gold and len(s) <= 200:
        picks = _PROSE_CHOICE_RE.findall(s)
        return picks[-1] if picks else None
    return m.group(1) if m else None
