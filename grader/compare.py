"""The comparison rules: `math_equal` (the order of checks is in the package docstring, grader/__init__.py), the
whole-answer readings tried before the structural comparison, and `majority_answer`."""
from __future__ import annotations

import random
import re
import time
from fractions import Fraction

from .latex import _canonical, _free_symbols, _parse, _ParseError, _substitute, _TooBig, _Undefined
from .numeric import _as_complex, _has_decimal, _num_eval, _too_heavy, _values_close
from .limits import MAX_CHARS, MAX_ELEMENTS
from .matrix import _matrix_expression
from .normalize import _choice_letter, _key, _mixed_number, _normalize, _wrapped_by
from .relations import (_NAME_TUPLE_RE, _SIMPLE_LHS_RE, _assignments, _named_value, _ne_sides, _ratio,
                        _split_top)
from .sympy_pool import _sympy_call

# -----------------------------------------------------------------------------------------------------------------
# comparison

_PROBE_POINTS = [[0.3 + 1.4 * random.Random(1000 * trial + i).random() for i in range(32)] for trial in range(3)]


def _probe_env(names: list[str], trial: int) -> dict:
    return {n: complex(_PROBE_POINTS[trial][i % 32] + 0.013 * (i // 32)) for i, n in enumerate(names)}


def _probe_values(tree_a, tree_b, names):
    """(va, vb) complex values of both trees at each of the 3 probe points where both evaluate."""
    for trial in range(3):
        env = _probe_env(names, trial)
        try:
            yield _as_complex(_num_eval(tree_a, env)[0]), _as_complex(_num_eval(tree_b, env)[0])
        except (_TooBig, _Undefined, OverflowError, ZeroDivisionError, ValueError):
            continue


def _probe(tree_a, tree_b, names, combine) -> bool:
    """Whether the two trees clearly differ as functions: `combine(va, vb)` is True (differ) at >= 2 of 3 random
    points where both evaluate. Only ever used to say "not equal" before asking sympy."""
    return sum(bool(combine(va, vb)) for va, vb in _probe_values(tree_a, tree_b, names)) >= 2


def _far(x: complex, y: complex) -> bool:
    return abs(x - y) > 1e-6 * max(1.0, abs(x), abs(y))


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
    if a == b or _canonical(a) == _canonical(b):  # (the order of factors: \\sum_i a_i b_j = \\sum_i b_j a_i)
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
    for v1, v2 in _probe_values(d1, d2, names):
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
    # "x = 5" against "5": the value after a plain variable name (or a label, "P_1:P_2 = 3:5") counts
    for eq, side in ((pe, p), (ge, g)):
        if eq and _named_value(side) is None:
            return False
    p, g = (_mixed_number(_named_value(p)) if pe else p), (_mixed_number(_named_value(g)) if ge else g)
    if _key(p) == _key(g):
        return True
    p, g = _ratio(p) or p, _ratio(g) or g  # "4:9" is the quotient 4/9
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
    """"(p,q)=(3,2)" -> "(3,2)", "|AB| = 1" -> "1", "P_{1}:P_{2}=3:5" -> "3:5", "S = 1+2+3 = 6" -> "6",
    "(m, n) = (2, 9), (9, 2)" -> "(2, 9), (9, 2)": a whole answer written as a name (or a label) and its value, when
    the other side is not an equation itself (an equation is compared as one: "x = 3" is not "y = 3")."""
    parts = _split_top(s, "=")
    if len(parts) < 2 or len(_split_top(other, "=")) > 1 or not parts[-1].strip():
        return s
    lhs, rhs = parts[0].strip(), parts[-1].strip()
    if len(_split_top(s, ",")) > 1:  # only a tuple of names before a list of tuples
        items = _split_top(rhs, ",")
        tuples = len(parts) == 2 and all(x.strip()[:1] == "(" and _wrapped_by(x.strip()) for x in items)
        return rhs if tuples and _NAME_TUPLE_RE.fullmatch(lhs) else s
    if len(parts) <= 4 and _true_identity([x.strip() for x in parts]):
        return _mixed_number(rhs)
    value = _named_value(s)
    return s if value is None else _mixed_number(value)


def _true_identity(parts: list[str]) -> bool:
    """Whether "a = b (= c ...)" is a true chain ("e^{i\\pi} = -1", "2^{10} = 1024", "\\frac{6}{4} = \\frac{3}{2} =
    1.5", "(x+1)^2 = x^2+2x+1" at three random points): then its last value is the answer. A false one ("2 + 2 = 5",
    "x^2 = 4") is not read as its right side."""
    try:
        trees = [_parse(x) for x in parts]
        for a, b in zip(trees, trees[1:]):
            names = sorted(_free_symbols(a) | _free_symbols(b))
            if not names:
                if not _values_close(_num_eval(a), _num_eval(b), _has_decimal(a) or _has_decimal(b)):
                    return False
                continue
            values = list(_probe_values(a, b, names))
            if len(values) < 2 or any(_far(va, vb) for va, vb in values):
                return False
        return True
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


def _comparisons(s: str) -> list[tuple[str, str, str]] | None:
    """A chain of one or two inequalities ("0 < x \\le 1") -> [(lhs, op, rhs), ...], or None."""
    ops = list(_INEQ_RE.finditer(s))
    if not 1 <= len(ops) <= 2 or "=" in _INEQ_RE.sub("", s) or len(_split_top(s, ",")) > 1:
        return None
    sides = [s[a.end() if a else 0:b.start() if b else len(s)].strip()
             for a, b in zip([None] + ops, ops + [None])]
    return [(sides[i], _INEQ_OPS[m.group(0)], sides[i + 1]) for i, m in enumerate(ops)]


def _as_interval(s: str | list) -> str | None:
    """An inequality in one variable as the interval it describes ("x \\ge 5" -> "[5, \\infty)", "0<f(x)<1" ->
    "(0, 1)"), or None for anything else (two variables, not linear, an equation, a list). s may also be a list of
    comparisons that all hold (see _intervals)."""
    comparisons = _comparisons(s) if isinstance(s, str) else s
    if comparisons is None:
        return None
    bounds = {"lower": None, "upper": None}
    try:
        for lhs, op, rhs in comparisons:
            if _unbounded(lhs, rhs):
                continue
            half = _half_line(lhs, op, rhs)
            if half is None or bounds[half[0]] is not None:
                return None
            bounds[half[0]] = half[1:]
        lo, hi = bounds["lower"], bounds["upper"]
        left = "(-\\infty" if lo is None else ("[" if lo[0] else "(") + _endpoint(lo[1])
        right = "\\infty)" if hi is None else _endpoint(hi[1]) + ("]" if hi[0] else ")")
    except (_ParseError, _TooBig, _Undefined, ArithmeticError, ValueError):
        return None  # compared as written
    return f"{left}, {right}"


def _conjunction(norm: str) -> str | None:
    """"x > 2 and x < 5" (normalised to "x > 2, x < 5") -> "(2, 5)": two inequalities on the same variable, one a
    lower and one an upper bound."""
    pieces = [_comparisons(x.strip()) for x in _split_top(norm, ",")]
    if len(pieces) != 2 or None in pieces or any(len(p) != 1 for p in pieces):
        return None
    try:
        names = [frozenset(_free_symbols(_parse(lhs)) | _free_symbols(_parse(rhs))) for (lhs, _, rhs), in pieces]
    except _ParseError:
        return None
    return _as_interval(pieces[0] + pieces[1]) if len(names[0]) == 1 and names[0] == names[1] else None


_MAX_UNION = 16  # inequalities joined by "or": an answer has a few, not hundreds
_OR_RE = re.compile(r"\bor\b|\\lor(?![A-Za-z])|\\vee(?![A-Za-z])")


def _intervals(norm: str, raw: str) -> str | None:
    """An inequality as its interval; inequalities joined by "or" as the union of theirs ("x < 1 or x > 2" ->
    "(-\\infty, 1) \\cup (2, \\infty)"). `raw` is the text before normalisation, which turned "or" and "and" alike
    into commas ("x > 0 and x < 1" is no union)."""
    single = _as_interval(norm)
    if single is None and re.search(r"\band\b|\\land(?![A-Za-z])|\\wedge(?![A-Za-z])", raw):
        return _conjunction(re.sub(r"\\land(?![A-Za-z])|\\wedge(?![A-Za-z])", ",", norm))
    if single is not None or not _OR_RE.search(raw):
        return single
    pieces = _split_top(_OR_RE.sub(",", norm), ",")
    if not 2 <= len(pieces) <= _MAX_UNION:
        return None
    parts = []
    for x in pieces:  # stop at the first piece that is no inequality
        parts.append(_as_interval(x.strip()))
        if parts[-1] is None:
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


_DECIMAL_COMMA_RE = re.compile(r"(?:[A-Za-z]\s*=\s*)?(-?\d+,\d+)")
_THOUSANDS_RE = re.compile(r"-?[1-9]\d{0,2}(?:,\d{3})+")


def _decimal_comma(pn: str, gn: str) -> str | None:
    """"1000,99" (also "x = 0,25") read as 1000.99, for a gold that is one number: a comma that cannot group
    thousands (1,234 is one thousand two hundred thirty-four). Only the prediction is read so: a gold "1,3" or
    "0,5" is a list in OlympiadBench and college_math, so "1.3" is not it."""
    m = _DECIMAL_COMMA_RE.fullmatch(pn)
    if m and not _THOUSANDS_RE.fullmatch(m.group(1)) and "," not in gn:
        return m.group(1).replace(",", ".")
    return None


def _as_text(x, what: str) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, (int, float, Fraction)) and not isinstance(x, bool):
        if isinstance(x, float) and x.is_integer():
            return str(int(x))
        return str(x)
    raise TypeError(f"math_equal expects {what} as str (or a number), got {type(x).__name__}")


_TUPLES_RE = re.compile(r"\s*(?:\\\{)?\s*\(")  # a tuple or a list / set of them


def _equal_readings(pn: str, gn: str, raw: tuple[str, str], deadline: float, percent: tuple[bool, bool]) -> bool:
    """Normalised pred and gold (raw: as given), compared structurally after the whole-answer readings above."""
    pn, gn = _imaginary_unit(pn, gn)
    pn, gn = _matrix_expression(pn) or pn, _matrix_expression(gn) or gn  # [\\begin{array}..], A + B, 2A, AB
    pne, gne = _ne_sides(pn), _ne_sides(gn)
    if pne or gne:  # "x \\ne 3" = "3 \\ne x"; a side compares as a scalar
        return bool(pne and gne) and any(all(
            _pair_equal(("scalar", a), ("scalar", b), deadline, percent) for a, b in zip(pne, sides))
            for sides in (gne, gne[::-1]))
    pa, ga = _assignments(pn), _assignments(gn)
    if (pa is None) != (ga is None):  # "a=1, b=4, a=4, b=1" against tuples: the tuples of values
        pn = pa if pa is not None and _TUPLES_RE.match(gn) else pn
        gn = ga if ga is not None and _TUPLES_RE.match(pn) else gn
    pn, gn = _drop_name(pn, gn), _drop_name(gn, pn)
    pn, gn = _intervals(pn, raw[0]) or pn, _intervals(gn, raw[1]) or gn
    if _key(pn) == _key(gn) or _equal_structures(_structure(pn), _structure(gn), deadline, percent):
        return True
    comma = _decimal_comma(pn, gn)
    return comma is not None and _equal_structures(_structure(comma), _structure(gn), deadline, percent)


def math_equal(pred: str | None, gold: str, timeout: float = 2.0) -> bool:
    """Whether the predicted final answer means the same as the gold answer (see the package docstring for the
    order of checks). pred None (no answer extracted) is False. Never raises on model text; `timeout` bounds the
    seconds spent in sympy for this call (0 skips symbolic checks). A pred from extract_answer's boxes also
    remembers the response's last boxes: against a gold list of n >= 2 answers, the last n boxes together count."""
    if pred is None:
        return False
    deadline = time.monotonic() + timeout
    pred, gold = _as_text(pred, "pred"), _as_text(gold, "gold")
    if _equal_text(pred, gold, deadline):
        return True
    boxes = getattr(pred, "boxes", ())
    n = _list_length(gold) if len(boxes) >= 2 else 0
    return 2 <= n <= len(boxes) and _equal_text(", ".join(boxes[-n:]), gold, deadline)


def _list_length(gold: str) -> int:
    """How many answers a gold list or set holds (0 for anything else)."""
    try:
        st = _structure(_normalize(gold)[0]) if len(gold) <= MAX_CHARS else ("scalar",)
    except (_ParseError, ValueError, RecursionError):
        return 0
    return len(st[1]) if st[0] in ("list", "set") else 0


def _equal_text(pred: str, gold: str, deadline: float) -> bool:
    if pred.strip() == gold.strip() and gold.strip():
        return True
    if len(pred) > MAX_CHARS or len(gold) > MAX_CHARS:
        return False
    try:
        (pn, p_pct), (gn, g_pct) = _normalize(pred), _normalize(gold)
        if not pn or not gn:
            return False
        if _key(pn) == _key(gn) or _digit_list_equal(pn, gold):
            return True
        gold_letter = _choice_letter(gn, gold=True)
        if gold_letter is not None:
            return _choice_letter(pn, gold=False) == gold_letter
        if _equal_readings(pn, gn, (pred, gold), deadline, (p_pct, g_pct)):
            return True
        if "approx" in pred and "." in gold:  # "\\pi \\approx 3.14" against the rounded gold 3.14
            pn, p_pct = _normalize(pred, approx=True)
            return pn != _normalize(pred)[0] and _equal_readings(pn, gn, (pred, gold), deadline, (p_pct, g_pct))
        return False
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
