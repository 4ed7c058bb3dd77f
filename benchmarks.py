"""
The math benchmarks below the stages: loaders (GSM8K, MATH500, ... and the synthetic held-out set), few-shot /
R1-style prompts fitted to a model's context, scoring (accuracy, pass@k, maj@n) and the evaluation loop
`evaluate`, which generates with sample.generate and grades with the grader. eval_math.py (the evaluation CLI),
rl.py (periodic greedy evals, the R1 template) and study.py use it.

    from benchmarks import evaluate, load_benchmark
    evaluate(model, tokenizer, ["gsm8k", "math500"], limit=50)
"""
from __future__ import annotations

import json
import os
import random
import re
import time

from configurator import UserError, UserFileError
from data.files import write_atomic
from grader import benchmark_mode, extract_answer, last_boxed, majority_answer, math_equal

_HERE = os.path.dirname(os.path.abspath(__file__))

# -----------------------------------------------------------------------------------------------------------------
# benchmarks

BENCHMARKS = ("gsm8k", "math500", "minerva_math", "olympiadbench", "amc23", "aime24", "mmlu_stem", "svamp", "asdiv",
              "college_math", "synth")
GSM8K_STYLE = ("gsm8k", "svamp", "asdiv")   # word problems: GSM8K shots, last-number fallback
MATH_STYLE = ("math500", "minerva_math", "olympiadbench", "college_math", "aime24")
# what each benchmark file must contain (for the error message when it is missing)
_EXPECTED = {
    "gsm8k": "gsm8k/test.jsonl with fields question, answer (solution ending in '#### N')",
    "math500": "math500/test.jsonl with fields problem, answer",
    "minerva_math": "minerva_math/test.jsonl with fields problem, solution (answer in its last \\boxed{})",
    "olympiadbench": "olympiadbench/test.jsonl with fields question, final_answer (a list)",
    "amc23": "amc23/test.jsonl with fields problem (or question), answer",
    "aime24": "aime24/test.jsonl with fields problem (or question), answer",
    "mmlu_stem": "mmlu_stem/test.jsonl with fields question, choices (a list), answer (index or letter)",
    "svamp": "svamp/test.jsonl with fields Body, Question, Answer",
    "asdiv": "asdiv/test.jsonl with fields body, question, answer",
    "college_math": "college_math/test.jsonl with fields question, answer",
    "synth": "heldout.jsonl with fields question, answer (written by the synthetic world, data/synth.py)",
}


# where each benchmark keeps its gold answer (named in the error for an empty one)
_ANSWER_FIELDS = {"gsm8k": ("answer",), "math500": ("answer",), "minerva_math": ("solution",),
                  "olympiadbench": ("final_answer", "answer"), "amc23": ("answer",), "aime24": ("answer",),
                  "mmlu_stem": ("answer",), "svamp": ("Answer", "answer"), "asdiv": ("answer", "Answer"),
                  "college_math": ("answer",), "synth": ("answer",)}


def default_data_dir(benchmark: str) -> str:
    """synth: data/synth in the repo. Real benchmarks: ../shared/data beside the repo if it exists, else
    data/benchmarks in the repo."""
    if benchmark == "synth":
        return os.path.join(_HERE, "data", "synth")
    shared = os.path.normpath(os.path.join(_HERE, "..", "shared", "data"))
    return shared if os.path.isdir(shared) else os.path.join(_HERE, "data", "benchmarks")


def _benchmark_path(name: str, data_dir: str | None) -> str:
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    data_dir = data_dir or default_data_dir(name)
    rel = "heldout.jsonl" if name == "synth" else os.path.join(name, "test.jsonl")
    path = os.path.join(data_dir, rel)
    if not os.path.isfile(path):
        hint = " (run the synthetic world's generator to write it)" if name == "synth" else ""
        raise UserFileError(f"benchmark {name!r}: no file at {path}. Put {_EXPECTED[name]} there, or pass "
                            f"data_dir= / --data_dir= pointing at the folder that holds it{hint}")
    return path


def _read_jsonl_lines(path: str) -> list[tuple[int, dict]]:
    """(line number, object) per non-blank line, so errors can point at the line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append((lineno, row))
    return rows


def _read_jsonl(path: str) -> list[dict]:
    return [row for _, row in _read_jsonl_lines(path)]


def _field(row: dict, names: tuple[str, ...], path: str, line: int):
    for n in names:
        if row.get(n) is not None:
            return row[n]
    raise UserError(f"{path}:{line}: has none of the fields {names} (it has {sorted(row)})")


def _number_text(x) -> str:
    """27.0 -> '27', 2.5 -> '2.5', '025' stays (math_equal reads it as 25)."""
    if isinstance(x, bool):
        raise UserError(f"expected a number, got {x!r}")
    if isinstance(x, float):
        return str(int(x)) if x.is_integer() else repr(x)
    return str(x).strip()


def _strip_dollars(s: str) -> str:
    s = s.strip()
    if s.startswith("$") and s.endswith("$"):
        s = s.strip("$").strip()
    return s


def _olympiad_gold(part: str) -> str:
    """One OlympiadBench final answer without its math delimiters: "$69$,$84$" -> "69,84" (21 golds hold several
    $...$ spans; no gold uses $ as a currency sign)."""
    return re.sub(r"(?<!\\)\$", "", part).strip().rstrip(".").strip()


def _gsm8k_gold(solution: str) -> str:
    if "####" not in solution:
        raise UserError(f"GSM8K solution without '#### answer': {solution[-80:]!r}")
    return solution.split("####")[-1].strip().replace(",", "")


def _load_row(name: str, row: dict, path: str, line: int) -> dict:
    """One file row -> {question, answer, ...}: each benchmark names its fields differently."""
    if name == "gsm8k":
        return {"question": row["question"], "answer": _gsm8k_gold(_field(row, ("answer",), path, line))}
    if name == "math500":
        return {"question": _field(row, ("problem", "question"), path, line),
                "answer": str(_field(row, ("answer",), path, line)).strip(), "id": row.get("unique_id")}
    if name == "minerva_math":
        solution = _field(row, ("solution",), path, line)
        found, gold = last_boxed(solution)
        if not gold:
            raise UserError(f"{path}:{line}: no complete \\boxed{{}} answer in its solution")
        return {"question": _field(row, ("problem", "question"), path, line), "answer": gold, "id": row.get("idx")}
    if name == "olympiadbench":
        final = _field(row, ("final_answer", "answer"), path, line)
        parts = final if isinstance(final, list) else [final]
        question = row["question"] if not row.get("context") else f"{row['context']}\n{row['question']}"
        return {"question": question, "answer": ", ".join(_olympiad_gold(str(p)) for p in parts), "id": row.get("id")}
    if name in ("amc23", "aime24"):
        return {"question": _field(row, ("problem", "question"), path, line),
                "answer": _number_text(_field(row, ("answer",), path, line)), "id": row.get("id")}
    if name == "mmlu_stem":
        choices = _field(row, ("choices",), path, line)
        answer = _field(row, ("answer",), path, line)
        if not isinstance(choices, list) or not 2 <= len(choices) <= 10:
            raise UserError(f"{path}:{line}: choices must be a list of 2..10 options")
        if isinstance(answer, bool) or (isinstance(answer, int) and not 0 <= answer < len(choices)):
            raise UserError(f"{path}:{line}: field 'answer' is {answer!r}, not an index into {len(choices)} choices")
        letter = "ABCDEFGHIJ"[answer] if isinstance(answer, int) else str(answer).strip().strip("()").upper()
        if letter not in "ABCDEFGHIJ"[:len(choices)] or len(letter) != 1:
            raise UserError(f"{path}:{line}: answer {answer!r} does not name one of {len(choices)} choices")
        lettered = "\n".join(f"({'ABCDEFGHIJ'[k]}) {c}" for k, c in enumerate(choices))
        return {"question": f"{row['question'].strip()}\n{lettered}", "answer": letter, "choices": choices}
    if name == "svamp":
        body = _field(row, ("Body", "body"), path, line).strip()
        body = body if body.endswith(".") else body + "."
        return {"question": f"{body} {_field(row, ('Question', 'question'), path, line).strip()}",
                "answer": _number_text(_field(row, ("Answer", "answer"), path, line)), "id": row.get("ID")}
    if name == "asdiv":
        body = _field(row, ("body", "Body"), path, line).strip()
        answer = str(_field(row, ("answer", "Answer"), path, line)).strip()
        answer = re.sub(r"\s*\([^()\d]*\)\s*$", "", answer)  # "9 (apples)" -> "9", but -(1/3) is math: it stays
        return {"question": f"{body} {_field(row, ('question', 'Question'), path, line).strip()}", "answer": answer,
                "id": row.get("idx")}
    if name == "college_math":
        return {"question": row["question"], "answer": _strip_dollars(str(_field(row, ("answer",), path, line))),
                "id": f"{row.get('data_source')}/{row.get('question_number')}"}
    if name == "synth":
        return {k: v for k, v in row.items() if k not in ("question", "answer")} | {
            "question": _field(row, ("question",), path, line), "answer": str(_field(row, ("answer",), path, line))}
    raise UserError(f"unknown benchmark {name!r}")


def load_benchmark(name: str, data_dir: str | None = None) -> list[dict]:
    """The test set of `name` as a list of {question, answer (gold final answer, str), id, ...}.
    data_dir None: see default_data_dir."""
    path = _benchmark_path(name, data_dir)
    out = []
    for line, row in _read_jsonl_lines(path):
        try:
            ex = _load_row(name, row, path, line)
        except KeyError as e:
            raise UserError(f"{path}:{line}: lacks field {e}; expected {_EXPECTED[name]}") from None
        if not isinstance(ex["question"], str) or not ex["question"].strip():
            raise UserError(f"{path}:{line}: empty question")
        if not ex["answer"].strip():  # an empty gold would grade every answer wrong without a word
            field = next((f for f in _ANSWER_FIELDS[name] if row.get(f) is not None), _ANSWER_FIELDS[name][0])
            raise UserError(f"{path}:{line}: empty gold answer in field {field!r} ({row.get(field)!r})")
        ex["source_id"] = ex.get("id")
        out.append(ex)
    if not out:
        raise UserError(f"{path}: no examples")
    # the file's own ids when they are unique (college_math's question numbers repeat across books), else the row
    ids = [e["source_id"] for e in out]
    use_own = None not in ids and len(set(map(str, ids))) == len(ids)
    for i, e in enumerate(out):
        e["id"] = f"{name}-{e['source_id'] if use_own else i}"
    return out


# -----------------------------------------------------------------------------------------------------------------
# prompts

# R1-Zero-style template for base models (rl.py uses it too): R1_TEMPLATE.format(question=...)
R1_TEMPLATE = ("A conversation between User and Assistant. The User asks a math question; the Assistant first "
               "reasons through it step by step and then states the final answer in \\boxed{{}}.\n"
               "User: {question}\nAssistant:")
FEWSHOT_STOP = ("\n\nQuestion:", "Question:")
R1_STOP = ("\nUser:",)
ZERO_SHOT_INSTRUCTION = "Solve the problem. Reason step by step and put the final answer in \\boxed{}.\n\n"

# MATH-style (MATH500, Minerva, OlympiadBench, college_math, AIME): the four problems of Minerva's published 4-shot
# MATH prompt (Lewkowycz et al. 2022), their solutions rewritten in this file's answer format
MATH_SHOTS = (
    ("Find the domain of the expression $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.",
     "Both square roots need non-negative arguments: $x-2 \\ge 0$ gives $x \\ge 2$ and $5-x \\ge 0$ gives $x \\le 5$. "
     "The denominator must not vanish, so $5-x > 0$, that is $x < 5$. The domain is $2 \\le x < 5$."
     " The answer is \\boxed{[2,5)}."),
    ("If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
     "The determinant of a product is the product of the determinants: "
     "$\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = 2 \\cdot 12 = 24$."
     " The answer is \\boxed{24}."),
    ("Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many times "
     "must Terrell lift them in order to lift the same total weight?",
     "Lifting two 20-pound weights 12 times moves $2 \\cdot 20 \\cdot 12 = 480$ pounds in total. Lifting two 15-pound "
     "weights $n$ times moves $2 \\cdot 15 \\cdot n = 30n$ pounds. From $30n = 480$ we get $n = 16$."
     " The answer is \\boxed{16}."),
    ("If the system of equations $6x-4y=a$, $6y-9x=b$ has a solution $(x, y)$ where $x$ and $y$ are both nonzero, "
     "find $\\frac{a}{b},$ assuming $b$ is nonzero.",
     "Multiplying the first equation by $-\\frac{3}{2}$ gives $6y-9x = -\\frac{3}{2}a$. The left side is $b$, so "
     "$b = -\\frac{3}{2}a$ and $\\frac{a}{b} = -\\frac{2}{3}$. The answer is \\boxed{-\\frac{2}{3}}."),
)
# MMLU-STEM: four questions of MMLU's few-shot (dev) split, subject abstract_algebra, with their keys; the dev split
# has no worked answers, so the one-line reasons are written here. (Its fifth question is left out: its key says
# "False, False" for "|aH| divides |a|", which is true.)
MMLU_SHOTS = (
    ("Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\n(A) 0\n(B) 1\n(C) 2\n(D) 3",
     "The quotient is a field exactly when $x^2 + c$ is irreducible over $\\mathbb{Z}_3$, that is when $-c$ is not a "
     "square mod 3. The squares mod 3 are 0 and 1, so $-c \\equiv 2$ and $c = 1$. The answer is \\boxed{B}."),
    ("Statement 1 | Every element of a group generates a cyclic subgroup of the group. Statement 2 | The symmetric "
     "group S_10 has 10 elements.\n(A) True, True\n(B) False, False\n(C) True, False\n(D) False, True",
     "The powers of any element form a cyclic subgroup, so Statement 1 is true. $S_{10}$ has $10! = 3628800$ "
     "elements, so Statement 2 is false. The answer is \\boxed{C}."),
    ("Statement 1| Every function from a finite set onto itself must be one to one. Statement 2 | Every subgroup of "
     "an abelian group is abelian.\n(A) True, True\n(B) False, False\n(C) True, False\n(D) False, True",
     "A map of a finite set onto itself cannot send two elements to one image, or fewer images than elements would be "
     "left, so Statement 1 is true. Elements of a subgroup commute because all elements of the group do, so "
     "Statement 2 is true. The answer is \\boxed{A}."),
    ("Find the characteristic of the ring 2Z.\n(A) 0\n(B) 3\n(C) 12\n(D) 30",
     "No positive multiple $n \\cdot 2$ of the element 2 is 0 in $2\\mathbb{Z}$, so the characteristic is 0."
     " The answer is \\boxed{A}."),
)
# GSM8K-style (GSM8K, SVAMP, ASDiv): 8 problems of GSM8K's train split drawn by draw_gsm8k_shots(train.jsonl) (seed
# 0), stored here so that prompts need no data folder (tests check they are that draw)
GSM8K_SHOTS = (
    ('The state of Virginia had 3.79 inches of rain in March, 4.5 inches of rain in April, 3.95 inches of rain in '
     'May, 3.09 inches of rain in June and 4.67 inches in July.  What is the average rainfall amount, in inches, in '
     'Virginia?',
     'It rained for a total of 3.79+4.5+3.95+3.09+4.67 = 20 inches\nThe rain period is from March through July for a '
     'total of 5 months so the average rainfall is 20/5 = 4 inches of rain per month\nThe answer is \\boxed{4}.'),
    ("A chocolate box contains 200 bars. Thomas and his 4 friends take 1/4 of the bars and decide to divide them "
     "equally between them. One of Thomas's friends doesn't like chocolate bars very much and returns 5 of his bars "
     "to the box. Later, his sister Piper comes home and takes 5 fewer bars than those taken in total by Thomas and "
     "his friends so she can also share with her friends. What's the total number of bars left in the box?",
     'Thomas and his friends took 1/4*200 = 50 bars.\nThe total number of bars left in the box was 200-50 = 150 '
     'bars.\nSince there are five of them sharing, each of them got 50/5 = 10 bars.\nAfter a friend returned 5 bars, '
     'there were 150 + 5 = 155 bars in the box.\nPiper took five fewer bars, that is 50 - 5 = 45 bars.\nThe total '
     'remaining bars left in the box is 155 - 45 = 110 bars.\nThe answer is \\boxed{110}.'),
    ('Gilbert grows herbs in his yard to use in his cooking. At the beginning of the spring, he planted three basil '
     'bushes, a parsley plant, and two kinds of mint. Halfway through spring, one of the basil plants dropped seeds '
     'from a flower and made an extra basil plant grow. However, a rabbit came by the garden near the end of spring '
     'and ate all the mint. How many herb plants did Gilbert have when spring ended?',
     'Gilbert planted 3 + 1 + 2 = 6 herb plants.\nHe gained a basil plant when one of the basil plants seeded a new '
     'plant, so he had 6 + 1 = 7 plants.\nThe rabbit ate both mint plants, so Gilbert had 7 - 2 = 5 herb plants when '
     'spring ended.\nThe answer is \\boxed{5}.'),
    ('Marta was about to start the school year and needed to buy the necessary textbooks. She managed to buy five on '
     'sale, for $10 each. She had to order two textbooks online, which cost her a total of $40, and three she bought '
     'directly from the bookstore for a total of three times the cost of the online ordered books. How much in total '
     'did Martha spend on textbooks?',
     'Marta bought five textbooks on sale, for a total of 5 * 10 = $50.\nThree textbooks from the bookstore had a '
     'cost of 3 * 40 = $120.\nThat means that Marta spent in total 50 + 40 + 120 = $210 on textbooks.\nThe answer is '
     '\\boxed{210}.'),
    ("At the burger hut, you can buy a burger for $5, french fries for $3, and a soft drink for $3.  If you order a "
     "special burger meal, you get all 3 of these food items for $9.50. A kid’s burger is $3, a kid’s french fries "
     "are $2, and a kid's juice box is $2.  They also have a kids meal of all 3 kids' food items for $5. Mr. Parker "
     "buys 2 burger meals for his wife and himself.  He also buys 2 burger meals and 2 kid's meals for his 4 "
     "children.  How much money does Mr. Parker save by buying the 6 meals versus buying the individual food items?",
     "To buy regular food items individually, they cost $5 + $3 + $3 = $11.\nTo buy kids food items individually, "
     "they cost $3 + $2 + $2 = $7.\nIf you buy the special burger meal, you save $11 - $9.50 = $1.50.\nIf you buy the "
     "kid's meal, you save $7 - $5 = $2.\nMr. Parker buys 4 special burger meals, bringing his discount to 4 x $1.50 "
     "= $6.\nHe buys 2 kid's meals, bringing his discount to 2 x $2 = $4.\nThe total savings for Mr. Parker is $6 + "
     "$4 = $10.\nThe answer is \\boxed{10}."),
    ('A roadwork company is paving a newly constructed 16-mile road. They use a mixture of pitch and gravel to make '
     'the asphalt to pave the road. Each truckloads of asphalt uses two bags of gravel and five times as many bags of '
     'gravel as it does barrels of pitch to make. It takes three truckloads of asphalt to pave each mile of road. The '
     'company paved 4 miles of road on one day, then one mile less than double that on the second day. How many '
     'barrels of pitch will the company need to finish the remaining road on the third day?',
     'On the second day, the company paved 4 * 2 - 1 = 7 miles.\nThe company has 16 - 7 - 4 = 5 miles of road '
     'remaining to pave.\nThey will need 3 * 5 = 15 truckloads of asphalt to pave 5 miles of road.\nFor 15 '
     'truckloads, they will need 15 * 2 = 30 bags of gravel.\nThus, the company will need 30 / 5 = 6 barrels of pitch '
     'to finish the road on the third day.\nThe answer is \\boxed{6}.'),
    ('Nancy wanted to make peanut butter cookies for a family gathering, but her cousin is allergic to peanuts. She '
     'decided to make almond butter cookies instead. A jar of almond butter costs three times the amount that a jar '
     'of peanut butter does. It takes half a jar to make a batch of cookies. A jar of peanut butter costs $3. How '
     'many dollars more does it cost per batch to make almond butter cookies instead of peanut butter cookies?',
     'A jar of almond butter costs 3 * 3 = $9.\nIt takes half a jar to make a batch of cookies, so it costs 9 / 2 = '
     '$4.50 to use almond butter.\nIt costs 3 / 2 = $1.50 to use peanut butter.\nThus, it costs 4.50 - 1.50 = $3 more '
     'to make a batch of almond butter cookies than peanut butter cookies.\nThe answer is \\boxed{3}.'),
    ("Barry goes to a shop to buy a shirt he'd been admiring for quite some time. He tells the attendant that it's "
     "his birthday so she decides to give him a 15% special discount. The price tag on the shirt says $80. How much "
     "is he supposed to pay now, considering the special discount?",
     '15% of $80 = (15/100)*$80 = $12\nThe dollar amount of the discount is $12 so he is supposed to pay just $80-$12 '
     '= $68\nThe answer is \\boxed{68}.'),
)


def draw_gsm8k_shots(train_path: str, seed: int = 0, k: int = 8) -> list[tuple[str, str]]:
    """k exemplars drawn with `seed` from a GSM8K train file, answers rewritten to the few-shot format: calculator
    annotations <<...>> removed, '#### N' -> 'The answer is \\boxed{N}.' (no blank line inside an answer, so the stop
    string "\\n\\nQuestion:" only ever ends a whole answer). GSM8K_SHOTS is draw_gsm8k_shots(gsm8k/train.jsonl)."""
    rows = _read_jsonl(train_path)
    shots = []
    for i in random.Random(seed).sample(range(len(rows)), k):
        steps, _, final = rows[i]["answer"].rpartition("####")
        steps = re.sub(r"<<[^>]*>>", "", steps).strip()
        steps = "\n".join(line.strip() for line in steps.splitlines() if line.strip())  # no blank lines
        shots.append((rows[i]["question"].strip(),
                      f"{steps}\nThe answer is \\boxed{{{final.strip().replace(',', '')}}}."))
    return shots


def few_shot_examples(benchmark: str) -> list[tuple[str, str]]:
    """The (question, answer) exemplars of the few-shot prompt of `benchmark` ([] for 0-shot ones)."""
    if benchmark in GSM8K_STYLE:
        return list(GSM8K_SHOTS)
    if benchmark in MATH_STYLE:
        return list(MATH_SHOTS)
    if benchmark == "mmlu_stem":
        return list(MMLU_SHOTS)
    if benchmark in ("amc23", "synth"):
        return []
    raise UserError(f"unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}")


def build_prompt(example: dict, benchmark: str, style: str = "fewshot", n_shots: int | None = None) -> str:
    """style "fewshot": base-model chain-of-thought prompt, "Question: ...\\nAnswer:" after the benchmark's
    exemplars (GSM8K 8-shot from its train split, Minerva's MATH 4-shot, MMLU-STEM 4-shot from its dev split, AMC
    0-shot with a one-line instruction; the synthetic set uses its own zero-shot "Question/Answer" format, the one
    its QA corpus is written in). style "r1": R1_TEMPLATE. An example with a "prompt" field (synth) is used as it
    is. n_shots: only the first n_shots exemplars (None = all; evaluate drops the ones the context cannot hold)."""
    if style not in ("fewshot", "r1"):
        raise UserError(f"style must be 'fewshot' or 'r1', got {style!r}")
    question = example.get("question")
    if not isinstance(question, str) or not question.strip():
        raise UserError(f"example has no question: {str(example)[:200]}")
    question = question.strip()
    if style == "r1":
        return R1_TEMPLATE.format(question=question)
    if benchmark == "synth" and isinstance(example.get("prompt"), str):
        return example["prompt"]
    shots = few_shot_examples(benchmark)[:n_shots]
    head = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in shots)
    if benchmark == "amc23":
        head = ZERO_SHOT_INSTRUCTION
    return f"{head}Question: {question}\nAnswer:"


def stop_strings(style: str) -> tuple[str, ...]:
    return R1_STOP if style == "r1" else FEWSHOT_STOP


def answer_mode(benchmark: str, style: str) -> str:
    """grader's extraction mode for the benchmark (the table in grader/__init__.py's docstring)."""
    return benchmark_mode(benchmark, style)


# -----------------------------------------------------------------------------------------------------------------
# problem files for RL (rl.py's prompt_file): any jsonl with a question and a gold answer field, in a template


def gold_answer(value) -> str:
    """A gold field -> the final answer string. GSM8K's solutions end in '#### 1,234': the part after ####."""
    if isinstance(value, bool) or value is None:
        raise UserError(f"gold answer must be a string or number, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if "####" in text:
        text = text.split("####")[-1].strip().replace(",", "")
    return text


def render_prompt(template: str, question: str) -> str:
    return (R1_TEMPLATE if template == "r1" else template).format(question=question.strip())


def load_prompts(path: str, tok, template: str, max_prompt_len: int, question_field: str = "question",
                 answer_field: str = "answer", log=print) -> list[dict]:
    """-> [{question, answer, prompt_ids}], prompts longer than max_prompt_len tokens dropped (with a count)."""
    if not os.path.isfile(path):
        hint = " (the synthetic set is written by `python midtrain.py` or `python -m data.synth`)" \
            if "synth" in path else ""
        raise UserFileError(f"prompt_file {path!r} does not exist{hint}")
    rows = []
    for lineno, row in _read_jsonl_lines(path):
        if question_field not in row or answer_field not in row:
            raise UserError(f"{path}:{lineno}: needs fields {question_field!r} and {answer_field!r} "
                            f"(question_field / answer_field knobs), has {sorted(row)}")
        q = row[question_field]
        if not isinstance(q, str) or not q.strip():
            raise UserError(f"{path}:{lineno}: empty or non-string {question_field!r}")
        rows.append({"question": q, "answer": gold_answer(row[answer_field])})
    if not rows:
        raise UserError(f"{path}: no problems in it")
    bos = tok.bos_id is not None  # the same prompt sample.generate would build from the text (BOS first)
    ids = tok.encode_batch([render_prompt(template, r["question"]) for r in rows], bos=bos)
    kept = [r | {"prompt_ids": p} for r, p in zip(rows, ids) if len(p) <= max_prompt_len]
    dropped = len(rows) - len(kept)
    log(f"prompts: {len(kept)} of {len(rows)} from {path}" +
        (f" ({dropped} dropped: longer than max_prompt_len={max_prompt_len} tokens)" if dropped else ""))
    if not kept:
        raise UserError(f"no prompt in {path} fits max_prompt_len={max_prompt_len} tokens (the shortest has "
                        f"{min(map(len, ids))}): raise max_prompt_len")
    return kept


# -----------------------------------------------------------------------------------------------------------------
# scoring

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k), as a running product
    (no huge binomials): C(n-c, k)/C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def score_samples(records: list[dict], n: int) -> dict:
    """records: one per sample, grouped by problem (n consecutive per problem), each with correct, extracted,
    gold, response_tokens, finish_reason. -> accuracy (mean over samples), pass@k (k = 1, 2, 4, .. n), maj@n."""
    if n < 1 or len(records) % n:
        raise ValueError(f"{len(records)} samples are not a whole number of groups of n={n}")
    groups = [records[i:i + n] for i in range(0, len(records), n)]
    out = {
        "accuracy": sum(r["correct"] for r in records) / max(1, len(records)),
        "count": len(groups),
        "samples": len(records),
        "extracted": sum(r["extracted"] is not None for r in records) / max(1, len(records)),
        "truncated": sum(r.get("finish_reason") == "length" for r in records) / max(1, len(records)),
        "mean_response_tokens": sum(r["response_tokens"] for r in records) / max(1, len(records)),
    }
    if n > 1:
        ks = sorted({2 ** i for i in range(n.bit_length()) if 2 ** i <= n} | {n})
        for k in ks:
            out[f"pass@{k}"] = sum(pass_at_k(n, sum(r["correct"] for r in g), k) for g in groups) / len(groups)
        out[f"maj@{n}"] = sum(math_equal(majority_answer([r["extracted"] for r in g]), g[0]["gold"])
                              for g in groups) / len(groups)
    return out


# -----------------------------------------------------------------------------------------------------------------
# evaluation

def _print_table(results: dict):
    rows = [("benchmark", "accuracy", "count", "resp tok", "seconds")]
    for name, r in results.items():
        rows.append((name, f"{100 * r['accuracy']:.1f}", str(r["count"]), f"{r['mean_response_tokens']:.0f}",
                     f"{r['seconds']:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for j, row in enumerate(rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def _data_dir_for(bench: str, data_dir: str | None) -> str | None:
    """One data_dir serves the real benchmarks; the synthetic set keeps its own folder (data/synth) unless the
    given folder holds a heldout.jsonl."""
    if bench == "synth" and data_dir and not os.path.isfile(os.path.join(data_dir, "heldout.jsonl")):
        return None
    return data_dir


# few-shot exemplars are dropped (the last first) until the longest prompt leaves this share of the model's context
# (or max_new_tokens, when that is less) to answer in
ANSWER_ROOM_SHARE = 0.25


def fit_prompts(examples: list[dict], bench: str, style: str, tokenizer, context: int | None,
                max_new_tokens: int) -> tuple[list[str], int | None, int]:
    """Prompts the model's context can hold -> (prompts, few-shot exemplars used or None, max_new_tokens).
    Exemplars that leave too little room to answer are dropped, and max_new_tokens is capped to what the longest
    prompt leaves; each change is printed in one line. context None (a model without a config): as built."""
    total = len(few_shot_examples(bench)) if style == "fewshot" else 0
    if context is None or tokenizer is None:
        return [build_prompt(e, bench, style) for e in examples], (total if total else None), max_new_tokens
    bos = tokenizer.bos_id is not None

    def lengths(k, among):
        return [len(tokenizer.encode(build_prompt(e, bench, style, n_shots=k), bos=bos)) for e in among]

    room = min(max_new_tokens, max(1, int(context * ANSWER_ROOM_SHARE)))
    zero = lengths(0, examples)
    worst = [examples[max(range(len(examples)), key=zero.__getitem__)]]  # the longest question is the longest prompt
    k = total
    while k > 0 and lengths(k, worst)[0] + room > context:
        k -= 1
    while True:  # exact lengths at k (BPE merges across the exemplar boundary could add a token)
        prompts = [build_prompt(e, bench, style, n_shots=k) for e in examples]
        longest = max(len(tokenizer.encode(p, bos=bos)) for p in prompts)
        if k == 0 or longest + room <= context:
            break
        k -= 1
    if longest >= context:
        raise UserError(f"{bench}: the longest prompt ({style}{', 0-shot' if total else ''}) is {longest} tokens, the "
                        f"model's whole context of {context}: nothing is left to answer in; use a model with a "
                        "longer context (or a subset of shorter problems)")
    if k < total:
        print(f"{bench}: {total}-shot prompts leave less than {room} of the model's {context} context tokens to "
              f"answer in: using {k} of {total} shots (longest prompt {longest} tokens); --style=r1 is the "
              "zero-shot R1 template")
    if longest + max_new_tokens > context:
        print(f"{bench}: max_new_tokens capped {max_new_tokens} -> {context - longest}: the longest prompt is "
              f"{longest} tokens of the model's {context}-token context")
    return prompts, (k if total else None), min(max_new_tokens, context - longest)


def evaluate(model, tokenizer, benchmarks: list[str], data_dir: str | None = None, style: str = "fewshot",
             n: int = 1, temperature: float = 0.0, max_new_tokens: int = 512, limit: int | None = None,
             batch_size: int = 16, out_dir: str | None = None, progress: bool = True, top_p: float = 1.0,
             seed: int = 0, grade_timeout: float = 2.0, meta: dict | None = None,
             stop: list[str] | tuple[str, ...] | None = None) -> dict:
    """Generate with sample.generate and grade each benchmark; one model, several benchmarks.

    Greedy by default; n > 1 samples per problem (temperature > 0) add pass@k and maj@n. Writes
    out_dir/results.json (this return value) and out_dir/samples_<bench>.jsonl (prompt, completion, extracted, gold,
    correct) when out_dir is given. Prompts and max_new_tokens are fitted to the model's context (fit_prompts; the
    shots and max_new_tokens used are in each benchmark's entry). -> {**meta, "benchmarks": {name: {accuracy, count,
    ..., seconds, shots, max_new_tokens}}, "average_accuracy", "config"}. stop: the responses' stop strings (None =
    the style's own, stop_strings)."""
    if isinstance(benchmarks, str):
        benchmarks = [b for b in benchmarks.split(",") if b.strip()]
    benchmarks = [b.strip() for b in benchmarks]
    unknown = [b for b in benchmarks if b not in BENCHMARKS]
    if not benchmarks or unknown:
        raise UserError(f"unknown or no benchmarks {unknown or benchmarks}; known: {', '.join(BENCHMARKS)}")
    if style not in ("fewshot", "r1"):
        raise UserError(f"style must be 'fewshot' or 'r1', got {style!r}")
    if not isinstance(n, int) or n < 1:
        raise UserError(f"n must be a positive int, got {n!r}")
    if temperature < 0 or (n > 1 and temperature == 0):
        raise UserError(f"temperature {temperature} with n={n}: n > 1 samples need temperature > 0")
    if limit is not None and limit < 0:
        raise UserError(f"limit must be >= 0 (0 or None = all), got {limit}")
    stop = stop_strings(style) if stop is None else tuple(stop)
    if not all(isinstance(s, str) and s for s in stop):
        raise UserError(f"stop must be a list of non-empty strings, got {list(stop)!r}")
    import sample  # the one generation path; imported here so loading benchmarks needs no torch

    config = {"benchmarks": benchmarks, "data_dir": data_dir, "style": style, "n": n, "temperature": temperature,
              "top_p": top_p, "max_new_tokens": max_new_tokens, "limit": limit, "batch_size": batch_size,
              "seed": seed, "stop": list(stop)}
    results = {}
    for bench in benchmarks:
        t0 = time.time()
        examples = load_benchmark(bench, _data_dir_for(bench, data_dir))
        examples = examples[:limit] if limit else examples
        context = getattr(getattr(model, "config", None), "max_seq_len", None)
        prompts, shots, bench_new_tokens = fit_prompts(examples, bench, style, tokenizer, context, max_new_tokens)
        completions = sample.generate(model, tokenizer, prompts, n=n, max_new_tokens=bench_new_tokens,
                                      temperature=temperature, top_p=top_p, stop=stop, seed=seed,
                                      batch_size=batch_size, progress=progress)
        if len(completions) != len(prompts) * n:
            raise RuntimeError(f"sample.generate returned {len(completions)} completions for {len(prompts)} "
                               f"prompts x n={n}")
        mode = answer_mode(bench, style)
        records = []
        for i, c in enumerate(completions):
            ex = examples[i // n]
            extracted = extract_answer(c.text, mode=mode)
            records.append({"id": ex["id"], "sample": i % n, "prompt": prompts[i // n], "completion": c.text,
                            "extracted": extracted, "gold": ex["answer"],
                            "correct": bool(math_equal(extracted, ex["answer"], timeout=grade_timeout)),
                            "response_tokens": len(c.tokens), "finish_reason": c.finish_reason})
        summary = score_samples(records, n)
        summary["seconds"] = time.time() - t0
        summary["shots"], summary["max_new_tokens"] = shots, bench_new_tokens
        results[bench] = summary
        if out_dir:
            write_atomic(os.path.join(out_dir, f"samples_{bench}.jsonl"),
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    report = {**(meta or {}), "benchmarks": results,
              "average_accuracy": sum(r["accuracy"] for r in results.values()) / len(results),
              "config": config}
    if out_dir:
        write_atomic(os.path.join(out_dir, "results.json"), json.dumps(report, indent=2) + "\n")
    _print_table(results)
    return report
