"""The small LaTeX tokenizer and recursive-descent parser: a string -> a plain tuple tree (no sympy), under the
size limits. numeric.py evaluates the trees."""
from __future__ import annotations

import math
import re
from fractions import Fraction
from functools import lru_cache

from .limits import MAX_BITS, MAX_DEPTH, MAX_NODES

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


_ATOM_CMDS = ({"frac", "sqrt", "pi", "infty", "binom", "lfloor", "lceil", "imagunit", "sum", "prod"} | set(_FUNCS)
              | _GREEK)
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
        if name in ("sum", "prod"):
            return self.big_operator(name)
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

    def big_operator(self, name):
        """\\sum_{k=1}^{n} body, \\prod_{i} body -> ("bigop", name, index or None, lower or None, upper or None,
        body); the body is the product that follows (\\sum_i a_i b_i + c sums a_i b_i only)."""
        if self.peek() == ("cmd", "limits"):
            self.take()
        index = lower = upper = None
        if self.peek() == ("op", "_"):
            self.take()
            braced = self.peek() == ("op", "{")
            if braced:
                self.take()
            t = self.take()
            if t[0] != "word" or len(t[1]) != 1:
                raise _ParseError("a sum's index must be one letter")
            index = t[1]
            if braced and self.peek() == ("op", "="):
                self.take()
                lower = self.expr()
            if braced:
                self.expect("}")
        if self.peek() == ("op", "^"):
            self.take()
            upper = self.arg()
        return self.node("bigop", name, index, lower, upper, self.term())

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
        return _expand_big_operators(_Parser(_tokenize(s)).parse())
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
    elif kind == "bigop":  # the index is bound (a subscripted a_k stays a symbol of its own)
        _free_symbols(tree[3], out), _free_symbols(tree[4], out)
        out |= _free_symbols(tree[5]) - {tree[2]}
    else:
        for t in tree[1:]:
            _free_symbols(t, out)
    return out


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


MAX_BIGOP_TERMS = 100  # \\sum / \\prod with numeric bounds are written out as sums / products up to this many terms


def _expand_big_operators(tree):
    """The tree with each \\sum / \\prod whose bounds are integers written out as the sum / product of its terms
    (\\sum_{k=1}^{3} k^2 -> 1^2 + 2^2 + 3^2); ones with symbolic bounds are kept. Bounded: at most
    MAX_BIGOP_TERMS terms each, and a written-out tree still passes the node budget of parsing."""
    budget = [MAX_NODES * 4]

    def walk(t):
        if not isinstance(t, tuple) or not t or not isinstance(t[0], str):
            return t
        if t[0] in ("num", "sym", "const"):
            return t
        out = tuple(tuple(walk(x) for x in c) if isinstance(c, tuple) and c and not isinstance(c[0], str)
                    else walk(c) for c in t)
        if out[0] != "bigop":
            return out
        _, name, index, lower, upper, body = out
        bounds = [_integer(b) for b in (lower, upper)]
        if index is None or None in bounds or not 0 <= bounds[1] - bounds[0] + 1 <= MAX_BIGOP_TERMS:
            return out
        budget[0] -= (bounds[1] - bounds[0] + 1) * _size(body)
        if budget[0] < 0:
            raise _ParseError("written-out sum too large")
        terms = tuple(_substitute(body, index, ("num", k, 1, False)) for k in range(bounds[0], bounds[1] + 1))
        if not terms:
            return ("num", 0 if name == "sum" else 1, 1, False)
        return ("add" if name == "sum" else "mul", terms)

    return walk(tree)


def _integer(t) -> int | None:
    """A bound written as an integer literal (or its negation) -> that integer, else None."""
    if t is not None and t[0] == "neg":
        v = _integer(t[1])
        return None if v is None else -v
    return t[1] if t is not None and t[0] == "num" and t[2] == 1 and not t[3] and abs(t[1]) < 10 ** 6 else None


def _size(t) -> int:
    if not isinstance(t, tuple):
        return 0
    return 1 + sum(_size(c) if isinstance(c, tuple) and c and isinstance(c[0], str) else
                   sum(_size(x) for x in c) if isinstance(c, tuple) else 0 for c in t[1:])


def _canonical(tree):
    """The tree with the children of every sum and product in a fixed order (a_i b_j and b_j a_i are one tree)."""
    if not isinstance(tree, tuple) or not tree or tree[0] in ("num", "sym", "const"):
        return tree
    out = tuple(tuple(_canonical(x) for x in c) if isinstance(c, tuple) and c and not isinstance(c[0], str)
                else _canonical(c) for c in tree)
    if out[0] in ("add", "mul"):
        out = (out[0], tuple(sorted(out[1], key=repr)))
    return out
