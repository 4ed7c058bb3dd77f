"""Whole-answer readings of relations and labelled answers, on normalised strings (no parsing, no arithmetic):
top-level splitting, "name = value" and labels whose value is the answer (`P_{1}:P_{2}=3:5`), "a \\ne b",
ratios, and several solutions written as assignments (`a=1,b=4;a=4,b=1` -> `(1,4),(4,1)`)."""
from __future__ import annotations

import re

from .limits import MAX_ELEMENTS

# a name on the left of "=" whose value is the answer: x, x_1, f(x), f(2), AB, \\alpha, |AB|, \\angle ABC, area
_SIMPLE_LHS_RE = re.compile(r"(?:[A-Za-z]{1,12}|\\[A-Za-z]+)(?:_\{?\w+\}?)?(?:\([A-Za-z0-9]\))?|\|[A-Za-z]{1,3}\||"
                            r"(?:m\s*)?\\angle\s*[A-Z]{1,3}")
# ... or a tuple of names: "(p, q) = (3, 2)"
_NAME_TUPLE_RE = re.compile(r"\(\s*[A-Za-z](?:_\{?\w+\}?)?(?:\s*,\s*[A-Za-z](?:_\{?\w+\}?)?)+\s*\)")
# a label that is an expression of names only: "\\frac{AM}{MB}", "P_{1}:P_{2}", "S_{ABC}:S", "AB:BC", "xy",
# "\\sin \\theta", "P(A)" (no digits, powers or arithmetic outside subscripts)
_SUBSCRIPT_RE = re.compile(r"_(?:\{[^{}]{0,20}\}|\w)")
_LABEL_RE = re.compile(r"(?:\\[A-Za-z]+|[A-Za-z{}:/ |()])+")
# commands that compute something: "\\sqrt{x} = 3" or "a \\cdot b = 6" is an equation, not a label
_COMPUTING = {"cdot", "times", "div", "pm", "mp", "sqrt", "sum", "prod", "int", "binom", "cup", "cap", "approx", "le",
              "ge", "lt", "gt", "ne", "leq", "geq", "neq", "in", "subset", "subseteq", "to", "mid"}
_NE_RE = re.compile(r"\\ne(?![A-Za-z])")


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


def _is_label(lhs: str) -> bool:
    """Whether `lhs` names a quantity without computing anything: letters, subscripts, fractions and ratios of
    names. "2x", "x + y", "x^2" compute something (so "2x = 4" is an equation, not the answer 4)."""
    bare = _SUBSCRIPT_RE.sub("", lhs.strip())
    if not bare or len(bare) > 60 or _LABEL_RE.fullmatch(bare) is None:
        return False
    return not set(re.findall(r"\\([A-Za-z]+)", bare)) & _COMPUTING and re.search(r"[A-Za-z]", bare) is not None


def _named_value(s: str) -> str | None:
    """"x = 5", "P_{1}:P_{2}=3:5", "S = 1 + 2 + 3 = 6" -> the value after the last top-level "=" when the left
    side is a name or a label; None otherwise."""
    parts = _split_top(s, "=")
    if len(parts) < 2 or not parts[-1].strip():
        return None
    lhs = parts[0].strip()
    if _SIMPLE_LHS_RE.fullmatch(lhs) or _NAME_TUPLE_RE.fullmatch(lhs) or _is_label(lhs):
        return parts[-1].strip()
    return None


def _ne_sides(s: str) -> tuple[str, str] | None:
    """"x \\ne 3" -> ("x", "3"); None unless s is one "\\ne" between two non-empty sides."""
    parts = _NE_RE.split(s)
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip() or re.search(r"[=<>]", s):
        return None
    return parts[0].strip(), parts[1].strip()


def _ratio(s: str) -> str | None:
    """"3:5" -> "(3)/(5)": a ratio of two parts is the quotient (one top-level colon, not ":=")."""
    parts = _split_top(s, ":")
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip() or parts[1].startswith("="):
        return None
    return f"({parts[0].strip()})/({parts[1].strip()})"


def _assignments(s: str) -> str | None:
    """Several solutions written as assignments -> the tuples of their values, in the order the names are first
    written: "a=1,b=4,a=4,b=1" -> "(1,4),(4,1)", "x=2, y=3" -> "(2,3)". None unless every item assigns a plain name
    and the names repeat in whole groups (one name alone is a list of values, read elsewhere)."""
    items = _split_top(s, ",")
    if len(items) < 2 or len(items) > MAX_ELEMENTS:
        return None
    pairs = []
    for item in items:
        parts = _split_top(item, "=")
        if len(parts) != 2 or not _SIMPLE_LHS_RE.fullmatch(parts[0].strip()) or not parts[1].strip():
            return None
        pairs.append((parts[0].strip(), parts[1].strip()))
    names = list(dict.fromkeys(n for n, _ in pairs))
    k = len(names)
    if k < 2 or len(pairs) % k:
        return None
    groups = []
    for i in range(0, len(pairs), k):
        group = dict(pairs[i:i + k])
        if sorted(group) != sorted(names):
            return None
        groups.append("(" + ", ".join(group[n] for n in names) + ")")
    return ", ".join(groups)
