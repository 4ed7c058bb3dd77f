"""The synthetic math world's problems, below data/synth.py (which imports them; this module never imports it).

The world (people, items, containers, places); the three kinds of problem (word stories, bare arithmetic,
equations) as Problem objects whose steps are checkable "a op b = c" operations; drawing them at the knobs'
difficulty (draw_problem) and from one split (problem_bucket: a hash of the question text); and their written
solutions (short, long chain of thought, web prose, the boxed answer). data/synth.py turns these into web pages,
QA rows, instructions and the corpus files: the problems are kept apart from what is written with them.
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field

HELDOUT_PER_MILLE, RL_PER_MILLE = 100, 100  # problem_bucket's split: 10% heldout, 10% rl, 80% train


# ---- the world -------------------------------------------------------------------------------------------------
PEOPLE = ["Mia", "Noah", "Ava", "Liam", "Zoe", "Omar", "Lena", "Ravi", "Sara", "Tom", "Nina", "Ben", "Ivy", "Leo",
          "Emma", "Sam", "Yuki", "Max", "Lily", "Jack", "Hana", "Eli", "Rosa", "Kai", "Anna", "Finn", "Maya", "Owen",
          "Chloe", "Luis"]
ITEMS = [("apple", "apples", "food"), ("orange", "oranges", "food"), ("cookie", "cookies", "food"),
         ("muffin", "muffins", "food"), ("egg", "eggs", "food"), ("banana", "bananas", "food"),
         ("pencil", "pencils", "thing"), ("marble", "marbles", "thing"), ("sticker", "stickers", "thing"),
         ("book", "books", "thing"), ("card", "cards", "thing"), ("shell", "shells", "thing"),
         ("stamp", "stamps", "thing"), ("balloon", "balloons", "thing"), ("toy car", "toy cars", "thing"),
         ("flower", "flowers", "thing"), ("coin", "coins", "thing"), ("ribbon", "ribbons", "thing")]
CONTAINERS = [("box", "boxes"), ("bag", "bags"), ("basket", "baskets"), ("jar", "jars"), ("pack", "packs"),
              ("crate", "crates")]
PLACES = ["the market", "the bakery", "the toy shop", "the school fair", "the corner store", "the library sale"]
OP_NAMES = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide"}
INVERSE = {"+": "-", "-": "+", "*": "/", "/": "*"}


@dataclass
class Step:
    """One operation of a solution: a op b = c. `clause` says why (used by both CoT styles)."""
    a: int
    op: str
    b: int
    c: int
    clause: str = ""
    result: str = ""  # sentence stating the new fact, e.g. "Mia has 8 apples"


@dataclass
class Problem:
    kind: str  # "word" | "arith" | "equation"
    question: str
    answer: int
    steps: list[Step]
    magnitude: str  # "small" | "large"
    facts: list[str] = field(default_factory=list)  # story sentences without distractors (word problems)
    distractors: list[str] = field(default_factory=list)
    goal: str = ""  # "how many apples Mia has now"
    final: str = ""  # "Mia has 6 apples now"
    names: list[str] = field(default_factory=list)
    lhs: list[str] = field(default_factory=list)  # equation: expression after 0..k operations on x
    forward: list[Step] = field(default_factory=list)  # equation: the operations applied to x


def _eq(s: Step) -> str:
    return f"{s.a} {s.op} {s.b} = {s.c}"


def _op_phrase(s: Step) -> str:
    """'add 5', 'subtract 5', 'multiply by 5', 'divide by 5'."""
    return f"{OP_NAMES[s.op]} {'by ' if s.op in '*/' else ''}{s.b}"


def _inverse_eq(s: Step) -> str:
    """The check that undoes a step: c inv b = a (always true arithmetic)."""
    return f"{s.c} {INVERSE[s.op]} {s.b} = {s.a}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def problem_bucket(question: str) -> str:
    """Which split a question belongs to, from a hash of its exact text: "heldout" | "rl" | "train"."""
    h = int.from_bytes(hashlib.sha256(question.strip().encode("utf-8")).digest()[:8], "big") % 1000
    if h < HELDOUT_PER_MILLE:
        return "heldout"
    return "rl" if h < HELDOUT_PER_MILLE + RL_PER_MILLE else "train"


# ---- word problems ---------------------------------------------------------------------------------------------
def _count(n: int, item) -> str:
    """'1 apple', '3 apples'."""
    return f"{n} {item[0] if n == 1 else item[1]}"


def _word_op(rng: random.Random, s: int, hi: int, cap: int, who: str, giver: str, fresh: list[str], item,
             last: bool):
    """Pick one feasible operation on the holder's count s. Returns (story sentence or None, Step, new holder,
    question or None, goal or None). New people (another holder, someone to compare with) are popped from
    `fresh`, so a sentence never restates the amount of someone the story already counted. Final-only operations
    (together, compare, price, each) also set the question."""
    sing, plur, kind = item
    place = rng.choice(PLACES)
    choices = []
    if s + 1 <= cap:
        choices += ["gain", "gain", "more_than"]
    if s >= 2:
        choices += ["lose", "lose", "fewer_than"]
    if 2 * s <= cap:
        choices += ["scale", "times_as_many"]
    divisors = [k for k in range(2, 7) if s % k == 0]
    if divisors:
        choices += ["split"]
    if last:
        choices += ["together", "together", "price"] + (["compare"] if s >= 2 else []) + (["each"] if divisors else [])
    op = rng.choice(choices)
    if op == "gain":
        n = rng.randint(1, min(hi, cap - s))
        text = rng.choice([f"{who} buys {n} more {plur} at {place}", f"{giver} gives {who} {_count(n, item)}",
                           f"{who} gets {n} more {plur} from {giver}",
                           f"{who} finds {n} more {plur}" if kind == "thing" else f"{who} picks up {n} more {plur}"])
        return text + ".", Step(s, "+", n, s + n, text, f"{who} has {_count(s + n, item)}"), who, None, None
    if op == "lose":
        n = rng.randint(1, min(hi, s - 1))
        text = rng.choice([f"{who} gives {_count(n, item)} to {giver}", f"{who} sells {_count(n, item)} at {place}",
                           f"{who} eats {n} of the {plur}" if kind == "food" else f"{who} loses {_count(n, item)}"])
        return text + ".", Step(s, "-", n, s - n, text, f"{who} has {_count(s - n, item)} left"), who, None, None
    if op == "scale":
        k = rng.randint(2, min(4, cap // s))
        text = {2: f"{who} doubles the number of {plur}", 3: f"{who} triples the number of {plur}"}.get(
            k, f"{who} ends up with {k} times as many {plur} as before")
        return text + ".", Step(s, "*", k, s * k, text, f"{who} has {_count(s * k, item)}"), who, None, None
    if op == "split":
        k = rng.choice(divisors)
        text = rng.choice([f"{who} splits the {plur} equally into {k} bags and keeps one bag",
                           f"{who} shares the {plur} equally with {k - 1} friend{'s' if k > 2 else ''}, "
                           f"so {k} people get the same number, {who} included"])
        return text + ".", Step(s, "/", k, s // k, text, f"{who} keeps {_count(s // k, item)}"), who, None, None
    if op in ("more_than", "fewer_than", "times_as_many"):
        other = fresh.pop()
        if op == "more_than":
            n = rng.randint(1, min(hi, cap - s))
            text, step_op, c = f"{other} has {n} more {plur} than {who} has now", "+", s + n
        elif op == "fewer_than":
            n = rng.randint(1, min(hi, s - 1))
            text, step_op, c = f"{other} has {n} fewer {plur} than {who} has now", "-", s - n
        else:
            n = rng.randint(2, min(4, cap // s))
            text, step_op, c = f"{other} has {n} times as many {plur} as {who} has now", "*", s * n
        return text + ".", Step(s, step_op, n, c, text, f"{other} has {_count(c, item)}"), other, None, None
    if op == "together":
        other, n = fresh.pop(), rng.randint(1, hi)
        step = Step(s, "+", n, s + n, f"{who} and {other} put their {plur} together",
                    f"{who} and {other} have {_count(s + n, item)} together")
        return (f"{other} has {_count(n, item)}.", step, who, f"How many {plur} do {who} and {other} have together?",
                f"how many {plur} {who} and {other} have together")
    if op == "compare":
        other, n = fresh.pop(), rng.randint(1, min(hi, s - 1))
        step = Step(s, "-", n, s - n, f"{who} has {_count(s, item)} and {other} has {n}",
                    f"{who} has {s - n} more {plur if s - n != 1 else sing} than {other}")
        return (f"{other} has {_count(n, item)}.", step, who, f"How many more {plur} does {who} have than {other}?",
                f"how many more {plur} {who} has than {other}")
    if op == "price":
        p = rng.randint(2, max(2, min(hi, 20)))
        step = Step(s, "*", p, s * p, f"{_count(s, item)} at {p} dollars each", f"{who} gets {s * p} dollars")
        return (f"Each {sing} sells for {p} dollars at {place}.", step, who,
                f"How many dollars does {who} get for selling all of the {plur}?",
                f"how many dollars {who} gets for selling all of the {plur}")
    k = rng.choice(divisors)  # "each": share equally, asked in the question itself
    step = Step(s, "/", k, s // k, f"{_count(s, item)} shared equally among {k} friends",
                f"each friend gets {_count(s // k, item)}")
    return (None, step, who, f"If {who} shares the {plur} equally among {k} friends, how many {plur} does each "
            "friend get?", f"how many {plur} each friend gets")


def _distractor(rng: random.Random, name: str, item, hi: int) -> str:
    other = rng.choice([it for it in ITEMS if it != item])
    return rng.choice([f"{name} is {rng.randint(6, 14)} years old.",
                       f"{name} has {rng.randint(2, hi)} {other[1]}.",
                       f"{_cap(rng.choice(PLACES))} opens at {rng.randint(7, 11)} o'clock.",
                       f"It takes {name} {rng.randint(3, 30)} minutes to walk to {rng.choice(PLACES)}."])


def word_problem(rng: random.Random, n_steps: int, hi: int, distractor_prob: float, magnitude: str) -> Problem:
    item = rng.choice(ITEMS)
    sing, plur, _ = item
    # holder, giver, then one fresh name per step (new holders, compare/together) and per distractor
    names = rng.sample(PEOPLE, min(len(PEOPLE), n_steps + 4))
    holder, giver, fresh = names[0], names[1], names[2:]
    cap = max(4 * hi, 40)
    facts, steps, question, goal = [], [], None, None
    if rng.random() < 0.25:  # the start itself is a multiplication step: k containers of m items
        cont, conts = rng.choice(CONTAINERS)
        k, m = rng.randint(2, 9), rng.randint(2, max(2, min(12, hi // 2)))
        facts.append(f"{holder} buys {k} {conts} of {plur}, and each {cont} holds {m} {plur}.")
        steps.append(Step(k, "*", m, k * m, f"{k} {conts} with {m} {plur} each", f"{holder} has {_count(k * m, item)}"))
        s = k * m
    else:
        s = rng.randint(2, hi)
        facts.append(f"{holder} has {_count(s, item)}.")
    who = holder
    while len(steps) < n_steps:
        last = len(steps) == n_steps - 1
        text, step, who, question, goal = _word_op(rng, s, hi, cap, who, giver, fresh, item, last)
        if text:
            facts.append(text)
        steps.append(step)
        s = step.c
    if question is None:
        question = f"How many {plur} does {who} have now?"
        goal, final = f"how many {plur} {who} has now", f"{who} has {_count(s, item)} now"
    else:
        final = steps[-1].result
    distractors, body = [], list(facts)
    for _ in range(sum(rng.random() < distractor_prob for _ in range(2))):
        d = _distractor(rng, fresh.pop() if fresh else giver, item, hi)
        distractors.append(d)
        body.insert(rng.randint(1, len(body)), d)  # never before the first fact
    text = " ".join(body + [question])
    used = [n for n in PEOPLE if re.search(rf"\b{n}\b", text)]
    return Problem("word", text, s, steps, magnitude, facts, distractors, goal, final, used)


# ---- bare arithmetic and equations ------------------------------------------------------------------------------
def _apply_op(rng: random.Random, s: int, hi: int, cap: int) -> tuple[str, int]:
    """Pick an operation that keeps the running value a non-negative integer <= cap."""
    options = ["+"] if s + 1 <= cap else []
    if s >= 1:
        options.append("-")
    if 2 <= s and 2 * s <= cap:
        options.append("*")
    if any(s % k == 0 for k in range(2, 10)) and s >= 2:
        options.append("/")
    op = rng.choice(options)
    if op == "+":
        return op, rng.randint(1, min(hi, cap - s))
    if op == "-":
        return op, rng.randint(1, min(hi, s))
    if op == "*":
        return op, rng.randint(2, min(9, cap // s))
    return op, rng.choice([k for k in range(2, 10) if s % k == 0])


def _wrap(expr: str, top: str | None, op: str) -> str:
    """Parenthesise expr when op binds tighter than expr's top operator, so the written expression evaluates
    in the order the steps were taken."""
    return f"({expr})" if op in "*/" and top in ("+", "-") else expr


def arith_problem(rng: random.Random, n_steps: int, hi: int, magnitude: str) -> Problem:
    cap = max(10 * hi, 100)
    s = rng.randint(1, hi)
    expr, top, steps = str(s), None, []
    for _ in range(n_steps):
        op, b = _apply_op(rng, s, hi, cap)
        c = {"+": s + b, "-": s - b, "*": s * b, "/": s // b}[op]
        expr, top = f"{_wrap(expr, top, op)} {op} {b}", op
        steps.append(Step(s, op, b, c))
        s = c
    question = rng.choice(["What is {e}?", "Compute {e}.", "Calculate {e}.", "Find the value of {e}."]).format(e=expr)
    return Problem("arith", question, s, steps, magnitude, goal=f"the value of {expr}",
                   final=f"the value is {s}")


def equation_problem(rng: random.Random, n_steps: int, hi: int, magnitude: str) -> Problem:
    cap = max(10 * hi, 100)
    x = rng.randint(0, hi)
    s, expr, top = x, "x", None
    lhs, forward = ["x"], []
    for _ in range(n_steps):
        op, b = _apply_op(rng, s, hi, cap)
        if op == "*":  # the factor goes in front, as people write it: 3 * (x + 2)
            expr = f"{b} * {_wrap(expr, top, op)}"
        else:
            expr = f"{_wrap(expr, top, op)} {op} {b}"
        c = {"+": s + b, "-": s - b, "*": s * b, "/": s // b}[op]
        forward.append(Step(s, op, b, c))
        lhs.append(expr)
        s, top = c, op
    rhs = s
    steps = []
    undo = {"+": "Subtract {b} from both sides", "-": "Add {b} to both sides", "*": "Divide both sides by {b}",
            "/": "Multiply both sides by {b}"}
    for i in range(n_steps, 0, -1):  # undo the last operation first
        f = forward[i - 1]
        steps.append(Step(f.c, INVERSE[f.op], f.b, f.a, undo[f.op].format(b=f.b), f"{lhs[i - 1]} = {f.a}"))
    eq = f"{expr} = {rhs}"
    question = rng.choice(["Solve for x: {q}.", "Find x if {q}.", "What value of x makes {q} true?"]).format(q=eq)
    return Problem("equation", question, x, steps, magnitude, goal=f"the value of x that makes {eq} true",
                   final=f"x = {x}", lhs=lhs, forward=forward)


def draw_problem(rng: random.Random, knobs: dict, n_steps: int | None = None) -> Problem:
    """One problem with the knobs' difficulty mix; n_steps fixes the step count (else uniform 1..max_steps).
    knobs["max_answer_share"] < 1 thins common answers: a problem whose answer a has share f(a) among the knobs'
    problems is kept with probability min(1, max_answer_share / f(a)), so that no answer is a good guess (in the
    default world "1" is the gold of 12% of problems)."""
    share = knobs.get("max_answer_share", 1.0)
    while True:
        p = _draw_one(rng, knobs, n_steps)
        if share >= 1.0:  # no extra draw from rng: the default world stays byte-identical
            return p
        if rng.random() * answer_shares(knobs).get(p.answer, 0.0) <= share:
            return p


_SHARES: dict[str, dict[int, float]] = {}
SHARE_DRAWS = 20_000  # problems drawn to estimate the answer shares (the top share's standard error ~0.2 points)


def answer_shares(knobs: dict) -> dict[int, float]:
    """{answer: its share among problems drawn with these knobs, unthinned}, from a fixed stream (so the thinning
    is deterministic), cached per knob set."""
    key = repr(sorted((k, v) for k, v in knobs.items() if k in ("kind_weights", "max_steps", "max_number",
                                                                "small_number", "small_frac", "distractor_prob")))
    if key not in _SHARES:
        rng = random.Random(f"nanoocto-synth:answer-shares:{key}")
        counts: dict[int, int] = {}
        for _ in range(SHARE_DRAWS):
            a = _draw_one(rng, knobs, None).answer
            counts[a] = counts.get(a, 0) + 1
        _SHARES[key] = {a: n / SHARE_DRAWS for a, n in counts.items()}
    return _SHARES[key]


def _draw_one(rng: random.Random, knobs: dict, n_steps: int | None) -> Problem:
    kinds = knobs["kind_weights"]
    kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
    n = n_steps if n_steps is not None else rng.randint(1, knobs["max_steps"])
    small = rng.random() < knobs["small_frac"]
    hi, magnitude = (knobs["small_number"], "small") if small else (knobs["max_number"], "large")
    if kind == "word":
        return word_problem(rng, n, hi, knobs["distractor_prob"], magnitude)
    if kind == "arith":
        return arith_problem(rng, n, hi, magnitude)
    return equation_problem(rng, n, hi, magnitude)


def draw_from_bucket(rng: random.Random, knobs: dict, bucket: str, n_steps: int | None = None,
                     max_tries: int = 1000) -> Problem:
    for _ in range(max_tries):
        p = draw_problem(rng, knobs, n_steps)
        if problem_bucket(p.question) == bucket:
            return p
    raise RuntimeError(f"no {bucket!r} problem in {max_tries} draws (steps={n_steps}): the problem space is too small")


# ---- solutions -------------------------------------------------------------------------------------------------
def boxed(answer) -> str:
    return f"The answer is \\boxed{{{answer}}}."


def short_solution(p: Problem) -> str:
    """Compact steps, then the boxed answer. Every "a op b = c" is true arithmetic."""
    if p.kind == "word":
        body = [f"{_cap(s.clause)}: {_eq(s)}." for s in p.steps]
    elif p.kind == "arith":
        body = [f"{_eq(s)}." for s in p.steps]
    else:
        body = [f"{s.clause}: {p.lhs[len(p.steps) - i - 1]} = {_eq(s)}." for i, s in enumerate(p.steps)]
    return " ".join(body + [boxed(p.answer)])


def long_solution(p: Problem, rng: random.Random) -> str:
    """Verbose reasoning: restate, one sentence per step, a backwards check, then the boxed answer."""
    lines = []
    if p.kind == "word":
        lines.append(rng.choice(["Let me restate the problem.", "Let's read the problem carefully.",
                                 "First, let me write down what we know."]) + " " + " ".join(p.facts))
        lines.append(f"We need to find {p.goal}.")
        for i, s in enumerate(p.steps, 1):
            lines.append(f"Step {i}: {_cap(s.clause)}, so we {OP_NAMES[s.op]}. {_eq(s)}. {_cap(s.result)}.")
        for d in p.distractors:
            lines.append(f"The sentence \"{d}\" is extra information and does not change the answer.")
        checks = ", and ".join(_inverse_eq(s) for s in reversed(p.steps))
        lines.append(f"Let me double-check by working backwards: {checks}. "
                     f"We get back to {p.steps[0].a}, which matches the problem.")
        lines.append(f"So {p.final}. {boxed(p.answer)}")
    elif p.kind == "arith":
        lines.append(f"We need to find {p.goal}.")
        if len(p.steps) > 1:
            lines.append("I will do one operation at a time, starting inside the parentheses.")
        for i, s in enumerate(p.steps, 1):
            lines.append(f"Step {i}: {_op_phrase(s)}: {_eq(s)}.")
        checks = ", and ".join(_inverse_eq(s) for s in reversed(p.steps))
        lines.append(f"Let me double-check by undoing each step: {checks}. "
                     f"That is the number we started with, {p.steps[0].a}.")
        lines.append(f"So {p.final}. {boxed(p.answer)}")
    else:
        lines.append(f"We need to find {p.goal}.")
        lines.append("To find x, I undo the operations one at a time, the last one first.")
        n = len(p.steps)
        for i, s in enumerate(p.steps, 1):
            lines.append(f"Step {i}: {s.clause}. Then {p.lhs[n - i]} = {_eq(s)}.")
        checks = ", then ".join(_eq(f) for f in p.forward)
        lines.append(f"Let me double-check by putting x = {p.answer} back in: {checks}. "
                     f"That matches the right side, {p.forward[-1].c}.")
        lines.append(f"So {p.final}. {boxed(p.answer)}")
    return "\n".join(lines)


def prose_solution(p: Problem) -> str:
    """A worked example as web prose: no Question/Answer markers, no \\boxed."""
    words = ["First", "Next", "Then", "After that", "Finally"]
    parts = []
    for i, s in enumerate(p.steps):
        lead = words[min(i, 3)] if i < len(p.steps) - 1 or i == 0 else words[-1]
        if p.kind == "word":
            parts.append(f"{lead}, {s.clause}, so we {OP_NAMES[s.op]}: {_eq(s)}.")
        elif p.kind == "arith":
            parts.append(f"{lead}, we {_op_phrase(s)}: {_eq(s)}.")
        else:
            parts.append(f"{lead}, we {s.clause[0].lower() + s.clause[1:]}: {p.lhs[len(p.steps) - i - 1]} = {_eq(s)}.")
    return " ".join(parts) + f" So {p.final}."
