"""The numeric evaluation of a parse tree (latex.py's tuples): exact fractions while exact, complex floats
otherwise, every size checked before it is computed; the comparison of two values (tolerances); and what is
safe to hand to sympy (`_too_heavy`)."""
from __future__ import annotations

import cmath
import math
from fractions import Fraction

from .latex import _free_symbols, _ParseError, _TooBig, _Undefined
from .limits import FLOAT_NOISE, MAX_BITS, MAX_FACTORIAL, MAX_SYMBOLIC_EXPONENT, REL_TOL

## numeric evaluation of a tree. Values are (value, level): level 0 = exact rational (Fraction), 1 = exact rational
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
    if kind == "bigop":
        raise _Undefined("a sum or product with symbolic bounds")
    raise _ParseError(f"unknown node {kind}")


def _has_decimal(tree) -> bool:
    """Whether a number in the tree was written with a decimal point or exponent (so it may be rounded)."""
    kind = tree[0]
    if kind == "num":
        return tree[3]
    if kind in ("sym", "const"):
        return False
    if kind == "bigop":
        return any(_has_decimal(c) for c in tree[3:] if c is not None)
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


def _too_heavy(tree) -> bool:
    """Whether handing the tree to sympy risks unbounded work: a symbol-free part too large to evaluate, or a
    symbolic power with a huge exponent."""
    kind = tree[0]
    if kind in ("num", "sym", "const"):
        return False
    if kind == "bigop":  # sympy sums one with both bounds and no subscripted symbol (a_k is no function of k there)
        _, _, index, lower, upper, body = tree
        if index is None or lower is None or upper is None or any("_" in n for n in _free_symbols(body)):
            return True
        return not _summable(body, index) or any(_too_heavy(c) for c in (lower, upper, body))
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


def _summable(tree, index: str) -> bool:
    """Whether sympy sums `tree` over `index` in closed form quickly: sums, products and quotients of polynomials
    (powers up to 10); k^k, x^k, k!, sin k and the like are not tried."""
    kind = tree[0]
    if kind in ("num", "sym", "const"):
        return True
    if kind in ("add", "mul"):
        return all(_summable(t, index) for t in tree[1])
    if kind in ("neg", "inv"):
        return _summable(tree[1], index)
    if kind == "pow" and not _free_symbols(tree[2]):
        try:
            e = _as_complex(_num_eval(tree[2])[0])
        except (_TooBig, _Undefined, OverflowError, ZeroDivisionError, ValueError):
            return False
        return abs(e) <= 10 and _summable(tree[1], index)
    return False
