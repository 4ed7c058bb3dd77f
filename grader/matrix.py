"""Matrices written as LaTeX environments: one literal in any environment and bracket (`\\left[\\begin{array}{cc}
... \\end{array}\\right]`, pmatrix, bmatrix) as the pmatrix the comparison reads, and sums and products of literal
matrices and numbers evaluated exactly first (`2\\begin{pmatrix}..\\end{pmatrix} + \\begin{pmatrix}..\\end{pmatrix}`).
Cells are parsed with latex.py, never eval()ed; sizes are bounded by MAX_ELEMENTS and the number of factors."""
from __future__ import annotations

import re
from fractions import Fraction

from .latex import _free_symbols, _parse, _TooBig, _Undefined
from .numeric import _as_complex, _checked, _num_eval
from .limits import MAX_CHARS, MAX_ELEMENTS
from .relations import _split_top

_ENV = r"(?:[pbBvV]?matrix|array)"
# a literal, with an optional bracket around it (\\left[ \\right] are plain brackets after normalisation)
_LITERAL_RE = re.compile(r"[(\[]?\s*\\begin\{(" + _ENV + r")\}(?:\{[^{}]*\})?((?:(?!\\begin\{).)*?)"
                         r"\\end\{\1\}\s*[)\]]?", re.S)
_MAX_MATRICES = 8
_MARK = "\\matrixliteral"  # stands for the k-th literal while the expression around them is read


def _cells(body: str) -> list[list[str]] | None:
    rows = [r for r in re.split(r"\\\\", body) if r.strip()]
    cells = [[c.strip() for c in r.split("&")] for r in rows]
    if not cells or sum(len(r) for r in cells) > MAX_ELEMENTS or len({len(r) for r in cells}) != 1:
        return None
    return cells


def _pmatrix(cells: list[list[str]]) -> str:
    return "\\begin{pmatrix}" + " \\\\ ".join(" & ".join(r) for r in cells) + "\\end{pmatrix}"


def _value(s: str):
    """A cell or a scalar factor -> (value, level) as numeric._num_eval gives it; symbols are _Undefined."""
    tree = _parse(s)
    if _free_symbols(tree):
        raise _Undefined("a symbol in a matrix expression")
    return _num_eval(tree)


def _add(a, b):
    (x, lx), (y, ly) = a, b
    return (_checked(x + y), max(lx, ly)) if max(lx, ly) < 2 else (_as_complex(x) + _as_complex(y), 2)


def _mul(a, b):
    (x, lx), (y, ly) = a, b
    return (_checked(x * y), max(lx, ly)) if max(lx, ly) < 2 else (_as_complex(x) * _as_complex(y), 2)


def _text(v) -> str:
    x, level = v
    if level < 2:
        if level == 1:  # written with a decimal point: keep it a decimal, compared with a tolerance
            return repr(float(x))
        return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"
    z = _as_complex(x)
    if abs(z.imag) > 1e-12 * max(1.0, abs(z)):
        raise _Undefined("a complex matrix entry")
    return repr(z.real)


def _product(factors: list) -> list[list] | None:
    """factors: scalars (value, level) and matrices (lists of rows of values) -> their product, a matrix."""
    scalar, out = (Fraction(1), 0), None
    for f in factors:
        if not isinstance(f, list):
            scalar = _mul(scalar, f)
        elif out is None:
            out = f
        else:
            if len(out[0]) != len(f):
                return None  # shapes do not chain: not a product we can read
            out = [[_sum([_mul(row[k], f[k][j]) for k in range(len(f))]) for j in range(len(f[0]))] for row in out]
    if out is None:
        return None
    return [[_mul(scalar, c) for c in row] for row in out]


def _sum(values):
    acc = (Fraction(0), 0)
    for v in values:
        acc = _add(acc, v)
    return acc


_MAX_POWER = 16


def _factors(term: str, literals: list) -> list | None:
    """"2\\matrixliteral0\\cdot\\matrixliteral1^{2}" -> [scalar, matrix, matrix, matrix]."""
    out = []
    pieces = re.split(r"(\\matrixliteral\d+)", term)
    for piece in pieces:
        m = re.fullmatch(r"\\matrixliteral(\d+)", piece)
        if m:
            out.append(literals[int(m.group(1))])
            continue
        power = re.match(r"\s*\^\s*(?:\{\s*(\d+)\s*\}|(\d))", piece)
        if power and out and isinstance(out[-1], list):  # a power of a square matrix, repeated products
            n = int(power.group(1) or power.group(2))
            if not 1 <= n <= _MAX_POWER or len(out[-1]) != len(out[-1][0]):
                return None
            out += [out[-1]] * (n - 1)
            piece = piece[power.end():]
        piece = re.sub(r"\\(?:cdot|times)(?![A-Za-z])|\*", " ", piece).strip()
        if piece:
            out.append(_value(piece))
    return out


def _determinant(cells: list[list[str]]) -> str | None:
    """The determinant of a square matrix of numbers, by exact elimination; None for anything else."""
    n = len(cells)
    if any(len(r) != n for r in cells):
        return None
    try:
        a = [[_value(c) for c in row] for row in cells]
    except (_TooBig, _Undefined, ArithmeticError, ValueError):
        return None
    if any(v[1] >= 2 for row in a for v in row):
        return None  # (irrational cells: not read)
    m = [[v[0] for v in row] for row in a]
    det = Fraction(1)
    try:
        for i in range(n):
            pivot = next((r for r in range(i, n) if m[r][i] != 0), None)
            if pivot is None:
                return "0"
            if pivot != i:
                m[i], m[pivot], det = m[pivot], m[i], -det
            det = _checked(det * m[i][i])
            for r in range(i + 1, n):
                f = m[r][i] / m[i][i]
                m[r] = [_checked(x - f * y) for x, y in zip(m[r], m[i])]
    except _TooBig:
        return None
    return _text((det, max(v[1] for row in a for v in row)))


def _matrix_expression(s: str) -> str | None:
    """s with a matrix as the whole answer -> that matrix as a pmatrix (evaluated when s is a sum or product of
    literals and numbers), or None when s is something else or cannot be evaluated."""
    if "\\begin" not in s:
        return None
    found = list(_LITERAL_RE.finditer(s))
    if not found or len(found) > _MAX_MATRICES:
        return None
    if len(found) == 1 and found[0].span() == (0, len(s)):
        cells = _cells(found[0].group(2))
        if cells is not None and found[0].group(1) == "vmatrix":  # a determinant
            return _determinant(cells)
        return None if cells is None else _pmatrix(cells)
    rest = s
    for k, m in reversed(list(enumerate(found))):
        rest = rest[:m.start()] + f" {_MARK}{k} " + rest[m.end():]
    if "\\begin" in rest or "=" in rest or "," in rest:
        return None
    try:
        literals = []
        for m in found:
            cells = _cells(m.group(2))
            if cells is None:
                return None
            literals.append([[_value(c) for c in row] for row in cells])
        total = None
        for i, term in enumerate(_split_top(rest.replace("-", "+-"), "+")):
            term = term.strip()
            if not term:
                continue
            sign = term.startswith("-")
            factors = _factors(term.lstrip("-").strip(), literals)
            matrix = None if factors is None else _product(factors)
            if matrix is None:
                return None
            if sign:
                matrix = [[_mul((Fraction(-1), 0), c) for c in row] for row in matrix]
            if total is None:
                total = matrix
            elif len(total) != len(matrix) or len(total[0]) != len(matrix[0]):
                return None
            else:
                total = [[_add(a, b) for a, b in zip(r1, r2)] for r1, r2 in zip(total, matrix)]
        out = None if total is None else _pmatrix([[_text(c) for c in row] for row in total])
        return out if out is not None and len(out) <= MAX_CHARS else None  # (longer answers only match as text)
    except (_TooBig, _Undefined, ArithmeticError, ValueError, IndexError):
        return None
