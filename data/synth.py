"""The built-in corpus: a synthetic "math world" (people, items, prices, counts), generated from a seed.

It stands in for the paper's data at toy scale so the whole OctoThinker recipe runs on a CPU in minutes:
  web.jsonl        {"text"}  stable-stage "math web" pages: lessons, worked examples in prose, fact tables
  web_noisy.jsonl  {"text"}  the same kind of pages degraded (navigation, ads, chatter, wrong arithmetic,
                             shuffled sentences) at rate `noise`: the FineMath vs MegaMath-Web-Pro quality contrast
  qa_short.jsonl   {"question", "answer", "final", "steps", "kind", "magnitude"}  compact solutions
  qa_long.jsonl    same fields, long chain of thought (restates the problem, steps, "Let me double-check: ...")
  instruct.jsonl   {"text"}  "User: ...\nAssistant: ..." instructions (solve, rewrite, list, explain, check)
  rl_train.jsonl   {"id", "question", "answer", "steps", "kind", "magnitude"}  RL prompt pool, answer = "N"
  heldout.jsonl    same fields: evaluation problems, never seen in any training text
  manifest.json    seed, knobs, rows/bytes per file; written last (its presence means the set is complete)

Formats (eval/RL prompt in-distribution with these):
  QA training text   QA_TEMPLATE   = "Question: {question}\nAnswer: {answer}"
  instruction text   CHAT_TEMPLATE = "User: {prompt}\nAssistant: {response}"  (an R1-style prompt is
                     "User: {question}\nAssistant:")
  every solution (QA answer, solve-instruction response) ends with "The answer is \\boxed{N}."
  N is a non-negative integer; all intermediate numbers are non-negative integers; divisions are exact.

Problems (each step is one integer operation a op b = c, op in + - * /):
  word      a story about one person's items over 1..k steps (buy, give, sell, double, split equally,
            "B has n more/fewer/k times as many as A") ending in a question (how many now, together,
            how many more, how many dollars, how many each), with optional distractor sentences.
  arith     "What is (5 + 3) * 2?": k operators, parenthesised so left-to-right is the right order.
  equation  "Solve for x: 3 * (x + 2) - 4 = 11.": k operations applied to x, solved by undoing them.
Difficulty knobs: steps (1..max_steps), number magnitude (small <= small_number, else <= max_number),
distractor_prob; max_answer_share < 1 thins the problems whose answer is common (0, 1, 3, ...), so that guessing
one does not pay. Every solution step is written "a op b = c" with the true result, so solutions are checkable.

Leakage control: a problem's split is a hash of its exact question text (problem_bucket): 10% "heldout",
10% "rl", 80% "train". heldout.jsonl and rl_train.jsonl draw only from their bucket, and every training text
(web pages, worked examples, QA, instructions) only from "train", so no held-out or RL question appears in
training text, for any seed or scale. Within each file questions are unique.

Determinism: pure Python random.Random with one string-seeded stream per file (str seeds hash with SHA-512, not
PYTHONHASHSEED), so the same knobs give byte-identical files and one file's knobs never shift another file.
The problems themselves (world, kinds, buckets, solutions) live in data/synth_problems.py; this module
writes the pages, QA, instructions and files from them.
CLI: python -m data.synth --out_dir data/synth --seed 0 [--scale 1.0 --noise 0.3 --max_steps 4 ...]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import time

from data.files import write_atomic
from data.synth_problems import (CONTAINERS, ITEMS, PEOPLE, PLACES, Problem, _cap, _count, draw_from_bucket,
                                 long_solution, prose_solution, short_solution)

QA_TEMPLATE = "Question: {question}\nAnswer: {answer}"
CHAT_TEMPLATE = "User: {prompt}\nAssistant: {response}"
GENERATOR_VERSION = 1
FILES = ("web.jsonl", "web_noisy.jsonl", "qa_short.jsonl", "qa_long.jsonl", "instruct.jsonl",
         "rl_train.jsonl", "heldout.jsonl")
MANIFEST = "manifest.json"

# Sizes at scale=1.0 (rows, or characters for the web corpora).
BASE_SIZES = {"web_chars": 3_000_000, "noisy_chars": 3_000_000, "n_qa": 20_000, "n_instruct": 3_000,
              "n_rl": 2_000, "n_heldout": 500}
# The default world is sized for the built-in ~1M-parameter model to learn in minutes on a CPU: its arithmetic
# facts must be few enough to memorise. Measured: the "nano" model after 2M tokens of QA alone still gets 4% of
# held-out problems with numbers up to 100 (4 steps), and 21% with numbers up to 10 (3 steps) after the 2.9M-token
# default mid-training. Raise max_number / max_steps for bigger models.
DEFAULT_KNOBS = {"max_steps": 3, "max_number": 10, "small_number": 5, "small_frac": 0.5,
                 "distractor_prob": 0.3, "noise": 0.3, "kind_weights": {"word": 0.6, "arith": 0.2, "equation": 0.2},
                 "max_answer_share": 1.0}  # < 1: answers more common than this share are thinned (draw_problem)


# ---- web pages ---------------------------------------------------------------------------------------------------
def _people_item(rng: random.Random):
    return rng.sample(PEOPLE, 2), rng.choice(ITEMS)


def _lesson_add(rng: random.Random, hi: int) -> str:
    (a_name, b_name), item = _people_item(rng)
    plur = item[1]
    a, b = rng.randint(2, hi), rng.randint(1, hi)
    x, y = rng.randint(10, 9 * hi), rng.randint(1, 9)
    pool = [f"Addition puts two groups together into one group.",
            f"If {a_name} has {a} {plur} and gets {b} more, we add to find the total: {a} + {b} = {a + b}.",
            f"The order of the numbers does not matter, because {b} + {a} = {a + b} as well.",
            f"The result of an addition is called the sum, so the sum of {a} and {b} is {a + b}.",
            f"Words like \"more\", \"in all\", \"together\" and \"total\" usually mean we should add.",
            f"Adding {y} to {x} gives {x + y}, so {x} + {y} = {x + y}.",
            f"Adding zero changes nothing: {a} + 0 = {a}."]
    return "Adding numbers. " + " ".join([pool[0], pool[1]] + rng.sample(pool[2:], 3))


def _lesson_sub(rng: random.Random, hi: int) -> str:
    (a_name, b_name), item = _people_item(rng)
    plur = item[1]
    a = rng.randint(3, max(3, hi))
    b = rng.randint(1, a - 2)
    pool = [f"Subtraction takes some away and tells us how many are left.",
            f"{a_name} has {a} {plur} and gives {b} of them to {b_name}. Then {a_name} has {a} - {b} = {a - b} {plur} left.",
            f"To check a subtraction, add the part that was taken away back: {a - b} + {b} = {a}.",
            f"The result of a subtraction is called the difference.",
            f"Words like \"left\", \"fewer\", \"gives away\" and \"how many more\" often mean we should subtract.",
            f"To find how many more {plur} {a_name} has than {b_name} when they have {a} and {b}, subtract: {a} - {b} = {a - b}.",
            f"Taking away zero leaves the number as it is: {a} - 0 = {a}."]
    return "Subtracting numbers. " + " ".join([pool[0], pool[1]] + rng.sample(pool[2:], 3))


def _lesson_mul(rng: random.Random, hi: int) -> str:
    (a_name, _), (sing, plur, _) = _people_item(rng)
    cont, conts = rng.choice(CONTAINERS)
    k, m = rng.randint(2, 6), rng.randint(2, 12)
    p = rng.randint(2, 20)
    pool = [f"Multiplication is repeated addition of equal groups.",
            f"{a_name} has {k} {conts} with {m} {plur} in each {cont}, which is {k} * {m} = {k * m} {plur}.",
            f"Adding {m} again and again, {k} times, gives the same {k * m}.",
            f"The result of a multiplication is called the product, so the product of {k} and {m} is {k * m}.",
            f"Doubling a number means multiplying by 2: double {m} is {m} * 2 = {m * 2}.",
            f"Tripling a number means multiplying by 3: {k} * 3 = {k * 3}.",
            f"If one {sing} costs {p} dollars, then {k} of them cost {k} * {p} = {k * p} dollars.",
            f"The order does not matter: {m} * {k} = {k * m} too."]
    return "Multiplying numbers. " + " ".join([pool[0], pool[1]] + rng.sample(pool[2:], 3))


def _lesson_div(rng: random.Random, hi: int) -> str:
    (a_name, _), item = _people_item(rng)
    plur = item[1]
    k, q = rng.randint(2, 6), rng.randint(1, 12)
    n = k * q
    pool = [f"Division splits a number into equal groups.",
            f"{a_name} shares {n} {plur} equally among {k} friends, so each friend gets {n} / {k} = {_count(q, item)}.",
            f"We can check a division with a multiplication: {q} * {k} = {n}.",
            f"The result of a division is called the quotient.",
            f"Half of a number is the number divided by 2, so half of {2 * q} is {2 * q} / 2 = {q}.",
            f"Words like \"equally\", \"each\" and \"per\" often mean we should divide.",
            f"Splitting {n} into groups of {q} gives {n} / {q} = {k} groups."]
    return "Dividing numbers. " + " ".join([pool[0], pool[1]] + rng.sample(pool[2:], 3))


def _lesson_compare(rng: random.Random, hi: int) -> str:
    (a_name, b_name), item = _people_item(rng)
    plur = item[1]
    a, n, k = rng.randint(2, hi), rng.randint(1, hi), rng.randint(2, 4)
    m = rng.randint(1, a - 1)
    return " ".join([
        "Comparing amounts.",
        f"If {a_name} has {a} {plur} and {b_name} has {n} more than {a_name}, then {b_name} has {a} + {n} = {a + n} {plur}.",
        f"If {b_name} has {m} fewer than {a_name}, then {b_name} has {a} - {m} = {_count(a - m, item)}.",
        f"If {b_name} has {k} times as many as {a_name}, then {b_name} has {a} * {k} = {a * k} {plur}.",
        "Read carefully which person the sentence is about: \"more than\" adds to the other person's amount."])


def _lesson_equation(rng: random.Random, knobs: dict, hi: int) -> str:
    p = _train_problem(rng, knobs, "equation")
    intro = rng.choice(["An equation says that two sides are equal. To solve it, we undo what was done to x, "
                        "in reverse order, and do the same thing to both sides.",
                        "Solving equations. Whatever we do to one side of an equation we must also do to the other side."])
    return f"{intro} For example, take {p.lhs[-1]} = {p.forward[-1].c}. {prose_solution(p)}"


def _lesson_order(rng: random.Random, knobs: dict, hi: int) -> str:
    p = _train_problem(rng, knobs, "arith")
    intro = rng.choice(["Order of operations. Work inside parentheses first, then multiply and divide, then add "
                        "and subtract, going from left to right.",
                        "When an expression has several operations, parentheses tell us what to do first."])
    return f"{intro} For example, to find {p.goal}: {prose_solution(p)}"


def _worked_example(rng: random.Random, knobs: dict, hi: int) -> str:
    p = _train_problem(rng, knobs, "word")
    head = rng.choice(["Here is a worked example.", "Example.", "Let us look at a story problem.", "Practice problem."])
    return f"{head} {p.question} {prose_solution(p)}"


def _table_times(rng: random.Random, hi: int) -> str:
    n = rng.randint(2, 12)
    rows = [f"{n} * {i} = {n * i}" for i in range(1, rng.randint(6, 12) + 1)]
    return f"Times table for {n}:\n" + "\n".join(rows)


def _table_add(rng: random.Random, hi: int) -> str:
    n = rng.randint(1, hi)
    rows = [f"{n} + {i} = {n + i}" for i in range(1, rng.randint(6, 10) + 1)]
    return f"Addition facts for {n}:\n" + "\n".join(rows)


def _table_prices(rng: random.Random, hi: int) -> str:
    place = rng.choice(PLACES)
    items = rng.sample(ITEMS, rng.randint(3, 5))
    prices = [rng.randint(1, 20) for _ in items]
    rows = [f"| {sing} | {p} dollars |" for (sing, _, _), p in zip(items, prices)]
    (sing, plur, _), p, k = items[0], prices[0], rng.randint(2, 9)
    return (f"Prices at {place}:\n| item | price |\n" + "\n".join(rows) +
            f"\nSo {k} {plur} cost {k} * {p} = {k * p} dollars.")


def _glossary(rng: random.Random, hi: int) -> str:
    a, b = rng.randint(2, hi), rng.randint(2, 12)
    entries = [f"Sum: the result of adding. The sum of {a} and {b} is {a + b}.",
               f"Difference: the result of subtracting. The difference of {a + b} and {b} is {a}.",
               f"Product: the result of multiplying. The product of {a} and {b} is {a * b}.",
               f"Quotient: the result of dividing. The quotient of {a * b} and {b} is {a}.",
               f"Even number: a number that can be split into 2 equal parts, like {2 * a}.",
               f"Double: two times a number. Double {a} is {2 * a}.",
               f"Half: a number divided by 2. Half of {2 * b} is {b}."]
    return "Math words.\n" + "\n".join(rng.sample(entries, 4))


WEB_TITLES = ["Lesson: {t}", "Math notes: {t}", "{t} - practice page", "Learning about {t}", "Homework help: {t}"]
WEB_TOPICS = ["adding and subtracting", "multiplying and dividing", "story problems", "equations", "numbers",
              "shopping math", "sharing equally"]


def web_document(rng: random.Random, knobs: dict) -> str:
    """One clean page: a title and 2-5 sections (lessons, worked examples, fact tables)."""
    hi = knobs["small_number"] if rng.random() < knobs["small_frac"] else knobs["max_number"]
    title = rng.choice(WEB_TITLES).format(t=rng.choice(WEB_TOPICS))
    simple = [_lesson_add, _lesson_sub, _lesson_mul, _lesson_div, _lesson_compare, _table_times, _table_add,
              _table_prices, _glossary]
    rich = [_lesson_equation, _lesson_order, _worked_example, _worked_example]
    sections = []
    for _ in range(rng.randint(2, 5)):
        if rng.random() < 0.5:
            sections.append(rng.choice(simple)(rng, hi))
        else:
            sections.append(rng.choice(rich)(rng, knobs, hi))
    return "\n\n".join([_cap(title)] + sections)


def _train_problem(rng: random.Random, knobs: dict, kind: str) -> Problem:
    """A training-bucket problem of one kind (web pages and instructions never show held-out/RL questions)."""
    one_kind = dict(knobs, kind_weights={kind: 1.0})
    return draw_from_bucket(rng, one_kind, "train")


# ---- noisy web -----------------------------------------------------------------------------------------------------
NAV_LINES = ["Home | Lessons | Worksheets | About | Contact", "Menu   Search   Sign in   Register",
             "You are here: Home > Math > Lessons", "Skip to main content", "Log in to save your progress",
             "Grade 1 | Grade 2 | Grade 3 | Grade 4 | Grade 5 | More..."]
FOOTER_LINES = ["Copyright 2024 MathPages. All rights reserved.", "Privacy Policy | Terms of Use | Cookie Settings",
                "Share this page: Facebook Twitter Email", "Was this page helpful? Yes No",
                "Related posts: 10 fun facts about sharks | Best pizza in town | Top 5 phones",
                "Comments (0) - Leave a reply"]
AD_LINES = ["BIG SALE!!! Buy 2 get 1 free on sneakers, click here", "Advertisement",
            "Sponsored: doctors hate this one simple trick", "Download our free app now! 4.8 stars",
            "Limited offer: 50% off premium membership, only today", "Hot singles in your area - click to chat"]
CHATTER_LINES = ["lol i hate math homework", "first!!", "anyone here in 2019?", "my cat just walked on my keyboard",
                 "thanks this helped me a lot", "can someone do my homework pls", "great post, check out my blog",
                 "The weather is really nice today, I might go to the beach.", "who else is watching the game tonight"]
_EQUATION_RE = re.compile(r"(?<![-+*/] )\b(\d+) ([-+*/]) (\d+) = (\d+)\b")


def degrade(text: str, rng: random.Random, noise: float) -> str:
    """Turn a clean page into a low-quality web page. noise=0 returns text unchanged; each corruption fires with a
    probability proportional to noise, so the expected amount of junk grows with it."""
    if noise <= 0:
        return text

    def corrupt(m: re.Match) -> str:
        if rng.random() >= noise * 0.5:
            return m.group(0)
        c = int(m.group(4))
        wrong = max(0, c + rng.choice([d for d in range(-10, 11) if d]))
        if wrong == c:
            wrong = c + 1
        return f"{m.group(1)} {m.group(2)} {m.group(3)} = {wrong}"

    out = []
    if rng.random() < noise:
        out.extend(rng.sample(NAV_LINES, rng.randint(1, 2)))
    for para in text.split("\n\n"):
        if rng.random() < noise * 0.5:  # shuffled sentences (or table rows): the steps lose their order
            sep = "\n" if "\n" in para else " "
            parts = para.split("\n") if sep == "\n" else re.split(r"(?<=[.!?]) ", para)
            rng.shuffle(parts)
            para = sep.join(parts)
        out.append(_EQUATION_RE.sub(corrupt, para))
        if rng.random() < noise * 0.5:
            out.append(rng.choice(AD_LINES if rng.random() < 0.5 else CHATTER_LINES))
    if rng.random() < noise:
        out.extend(rng.sample(FOOTER_LINES, rng.randint(1, 2)))
    return "\n\n".join(out)


# ---- instructions ------------------------------------------------------------------------------------------------
def instruct_example(rng: random.Random, knobs: dict) -> str:
    kind = rng.choices(["solve", "rewrite", "list", "explain", "check", "compare", "write"],
                       weights=[4, 1, 1, 1, 1, 1, 1])[0]
    if kind == "solve":
        p = draw_from_bucket(rng, knobs, "train")
        return CHAT_TEMPLATE.format(prompt=p.question, response=long_solution(p, rng))
    if kind == "rewrite":
        p = _train_problem(rng, knobs, "word")
        new = rng.sample([n for n in PEOPLE if n not in p.names], len(p.names))
        renamed = p.question
        for old, nw in zip(p.names, new):  # new names are not among the old ones, so no replacement collides
            renamed = re.sub(rf"\b{old}\b", nw, renamed)
        return CHAT_TEMPLATE.format(prompt=f"Rewrite this problem with different names: {p.question}",
                                    response=renamed)
    if kind == "list":
        p = _train_problem(rng, knobs, "word")
        nums = re.findall(r"\d+", p.question)
        listed = nums[0] if len(nums) == 1 else ", ".join(nums[:-1]) + " and " + nums[-1]
        return CHAT_TEMPLATE.format(prompt=f"List the numbers that appear in this problem: {p.question}",
                                    response=f"The numbers are {listed}.")
    if kind == "explain":
        p = _train_problem(rng, knobs, rng.choice(["word", "arith", "equation"]))
        return CHAT_TEMPLATE.format(prompt=f"Explain how to solve this problem step by step: {p.question}",
                                    response=prose_solution(p))
    hi = knobs["small_number"] if rng.random() < knobs["small_frac"] else knobs["max_number"]
    if kind == "check":
        a, b = rng.randint(1, hi), rng.randint(1, hi)
        op = rng.choice("+*")
        true = a + b if op == "+" else a * b
        shown = true if rng.random() < 0.5 else true + rng.choice([-2, -1, 1, 2, 10])
        reply = (f"Yes. {a} {op} {b} = {true}, so it is correct." if shown == true
                 else f"No. {a} {op} {b} = {true}, not {shown}.")
        return CHAT_TEMPLATE.format(prompt=f"Is {a} {op} {b} = {shown} correct?", response=reply)
    if kind == "compare":
        a, b = rng.sample(range(0, hi + 1), 2)
        big, small = max(a, b), min(a, b)
        return CHAT_TEMPLATE.format(prompt=f"Which number is larger, {a} or {b}?",
                                    response=f"{big} is larger than {small}, because {big} - {small} = {big - small}.")
    p = _train_problem(rng, dict(knobs, max_steps=2), "word")
    return CHAT_TEMPLATE.format(prompt=f"Write a short word problem whose answer is {p.answer}.",
                                response=f"{p.question} {short_solution(p)}")


# ---- corpus files -------------------------------------------------------------------------------------------------
def resolve_knobs(seed: int = 0, scale: float = 1.0, **overrides) -> dict:
    """All knobs that determine the output, with sizes resolved from scale (explicit sizes win)."""
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    unknown = set(overrides) - set(DEFAULT_KNOBS) - set(BASE_SIZES)
    if unknown:
        raise ValueError(f"unknown synth knobs: {sorted(unknown)}")
    knobs = {"generator_version": GENERATOR_VERSION, "seed": int(seed), "scale": float(scale)}
    knobs.update({k: v for k, v in DEFAULT_KNOBS.items()})
    knobs.update({k: max(1, round(v * scale)) for k, v in BASE_SIZES.items()})
    knobs.update({k: v for k, v in overrides.items() if v is not None})
    kw = knobs["kind_weights"]
    if not kw or any(w < 0 for w in kw.values()) or sum(kw.values()) <= 0 or set(kw) - {"word", "arith", "equation"}:
        raise ValueError(f"kind_weights must map word/arith/equation to non-negative weights, got {kw}")
    if not 1 <= knobs["max_steps"] <= 10:
        raise ValueError(f"max_steps must be in 1..10, got {knobs['max_steps']}")
    if not 4 <= knobs["small_number"] <= knobs["max_number"]:
        raise ValueError(f"need 4 <= small_number <= max_number, got {knobs['small_number']}, {knobs['max_number']}")
    for k in ("small_frac", "distractor_prob", "noise"):
        if not 0.0 <= knobs[k] <= 1.0:
            raise ValueError(f"{k} must be in [0, 1], got {knobs[k]}")
    if not 0.01 <= knobs["max_answer_share"] <= 1.0:
        raise ValueError(f"max_answer_share must be in [0.01, 1] (1 = no thinning), got {knobs['max_answer_share']}")
    return knobs


def _stream(knobs: dict, name: str) -> random.Random:
    return random.Random(f"nanoocto-synth:{knobs['seed']}:{name}")


def make_web(knobs: dict, noisy: bool) -> list[dict]:
    """Pages until the character budget is reached. The noisy corpus draws its pages from its own stream and
    degrades them with a separate noise stream, so noise=0 gives clean pages and the noise knob changes only
    the degradation, never the underlying pages."""
    name = "web_noisy" if noisy else "web"
    docs_rng, noise_rng = _stream(knobs, name), _stream(knobs, name + ":noise")
    budget = knobs["noisy_chars" if noisy else "web_chars"]
    rows, total = [], 0
    while total < budget:
        text = web_document(docs_rng, knobs)
        if noisy:
            text = degrade(text, noise_rng, knobs["noise"])
        rows.append({"text": text})
        total += len(text)
    return rows


def _unique_problems(knobs: dict, stream: str, bucket: str, n: int, balanced_steps: bool) -> list[Problem]:
    """n problems from one bucket with distinct question texts; balanced_steps cycles 1..max_steps."""
    rng = _stream(knobs, stream)
    seen, out, tries = set(), [], 0
    while len(out) < n:
        steps = len(out) % knobs["max_steps"] + 1 if balanced_steps else None
        p = draw_from_bucket(rng, knobs, bucket, steps)
        tries += 1
        if tries > 50 * n + 1000:
            raise RuntimeError(f"{stream}: only {len(out)} distinct problems after {tries} draws; "
                               "raise max_number or lower the requested size")
        if p.question in seen:
            continue
        seen.add(p.question)
        out.append(p)
    return out


def make_qa(knobs: dict, style: str) -> list[dict]:
    rng = _stream(knobs, f"qa_{style}:text")
    rows = []
    for p in _unique_problems(knobs, f"qa_{style}", "train", knobs["n_qa"], balanced_steps=False):
        answer = short_solution(p) if style == "short" else long_solution(p, rng)
        rows.append({"question": p.question, "answer": answer, "final": str(p.answer), "steps": len(p.steps),
                     "kind": p.kind, "magnitude": p.magnitude})
    return rows


def make_eval_set(knobs: dict, split: str) -> list[dict]:
    bucket, n, prefix = ("heldout", knobs["n_heldout"], "heldout") if split == "heldout" else ("rl", knobs["n_rl"], "rl")
    probs = _unique_problems(knobs, split, bucket, n, balanced_steps=True)
    return [{"id": f"{prefix}-{i:05d}", "question": p.question, "answer": str(p.answer), "steps": len(p.steps),
             "kind": p.kind, "magnitude": p.magnitude} for i, p in enumerate(probs)]


def make_instruct(knobs: dict) -> list[dict]:
    rng = _stream(knobs, "instruct")
    return [{"text": instruct_example(rng, knobs)} for _ in range(knobs["n_instruct"])]


def _write_jsonl_atomic(path: str, rows: list[dict]) -> int:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    write_atomic(path, data)
    return len(data)


def read_jsonl(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {n} is not valid JSON ({e})") from None
    return rows


def corpus_is_complete(out_dir: str, knobs: dict) -> bool:
    """True when out_dir holds a manifest with exactly these knobs and every file at its recorded size."""
    path = os.path.join(out_dir, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    if manifest.get("knobs") != json.loads(json.dumps(knobs)):  # compare as JSON would store them
        return False
    files = manifest.get("files", {})
    return all(name in files and os.path.isfile(os.path.join(out_dir, name))
               and os.path.getsize(os.path.join(out_dir, name)) == files[name]["bytes"] for name in FILES)


def generate_corpus(out_dir: str, seed: int = 0, scale: float = 1.0, force: bool = False, verbose: bool = False,
                    **knob_overrides) -> dict:
    """Write every corpus file to out_dir and return the manifest. Skips the work when out_dir already holds a
    complete corpus with the same knobs (unless force). knob_overrides: any DEFAULT_KNOBS / BASE_SIZES key."""
    knobs = resolve_knobs(seed, scale, **knob_overrides)
    if not force and corpus_is_complete(out_dir, knobs):
        with open(os.path.join(out_dir, MANIFEST), encoding="utf-8") as f:
            return json.load(f)
    os.makedirs(out_dir, exist_ok=True)
    manifest_path = os.path.join(out_dir, MANIFEST)
    if os.path.exists(manifest_path):  # remove first: a crash below must not leave an old manifest "complete"
        os.remove(manifest_path)
    t0 = time.time()
    makers = {"web.jsonl": lambda: make_web(knobs, noisy=False), "web_noisy.jsonl": lambda: make_web(knobs, noisy=True),
              "qa_short.jsonl": lambda: make_qa(knobs, "short"), "qa_long.jsonl": lambda: make_qa(knobs, "long"),
              "instruct.jsonl": lambda: make_instruct(knobs), "rl_train.jsonl": lambda: make_eval_set(knobs, "rl"),
              "heldout.jsonl": lambda: make_eval_set(knobs, "heldout")}
    files = {}
    for name in FILES:
        rows = makers[name]()
        nbytes = _write_jsonl_atomic(os.path.join(out_dir, name), rows)
        chars = sum(len(r["text"]) if "text" in r else len(r["question"]) + len(r["answer"]) for r in rows)
        files[name] = {"rows": len(rows), "bytes": nbytes, "chars": chars}
        if verbose:
            print(f"synth: {name}: {len(rows):,} rows, {chars:,} chars")
    manifest = {"format": "nanoocto-synth", "knobs": knobs, "files": files, "qa_template": QA_TEMPLATE,
                "chat_template": CHAT_TEMPLATE, "seconds": round(time.time() - t0, 2)}
    write_atomic(manifest_path, json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Generate the synthetic math-world corpus (seeded, deterministic).")
    ap.add_argument("--out_dir", default="data/synth")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every size (web chars, rows)")
    ap.add_argument("--force", action="store_true", help="regenerate even if a complete corpus is there")
    for k in ("max_steps", "max_number", "small_number"):
        ap.add_argument(f"--{k}", type=int, default=None, help=f"default {DEFAULT_KNOBS[k]}")
    for k in ("small_frac", "distractor_prob", "noise", "max_answer_share"):
        ap.add_argument(f"--{k}", type=float, default=None, help=f"default {DEFAULT_KNOBS[k]}")
    for k in BASE_SIZES:
        ap.add_argument(f"--{k}", type=int, default=None, help=f"default {BASE_SIZES[k]} * scale")
    args = vars(ap.parse_args(argv))
    out_dir, seed, scale, force = args.pop("out_dir"), args.pop("seed"), args.pop("scale"), args.pop("force")
    manifest = generate_corpus(out_dir, seed=seed, scale=scale, force=force, verbose=True, **args)
    print(f"synth: corpus in {out_dir} ({manifest['seconds']} s to generate)")


if __name__ == "__main__":
    main()
