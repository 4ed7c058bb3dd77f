"""
Math evaluation: the benchmarks, few-shot / R1-style prompts, scoring (accuracy, pass@k, maj@n) and the evaluation
loop. Answers are graded by grader.py (also RL's reward).

    python eval_math.py --ckpt=out/midtrain --benchmarks=gsm8k,math500 --limit=50      # (also `--limit 50`)

    from eval_math import evaluate, load_benchmark
    evaluate(model, tokenizer, ["gsm8k", "math500"], limit=50)
"""
from __future__ import annotations

import json
import os
import random
import re
import sys
import time

from configurator import UserError, UserFileError, run_cli
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
        return {"question": question, "answer": ", ".join(_strip_dollars(str(p)) for p in parts), "id": row.get("id")}
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

# MATH-style exemplars written for this file (not taken from any benchmark), in the few-shot answer format
MATH_SHOTS = (
    ("What is the sum of all positive divisors of $18$?",
     "The positive divisors of $18$ are $1, 2, 3, 6, 9$ and $18$. Their sum is $1+2+3+6+9+18 = 39$."
     " The answer is \\boxed{39}."),
    ("Solve for $x$: $\\frac{x+3}{2} = \\frac{2x-1}{3}$.",
     "Multiplying both sides by $6$ gives $3(x+3) = 2(2x-1)$, that is $3x + 9 = 4x - 2$, so $x = 11$."
     " The answer is \\boxed{11}."),
    ("A jar holds $4$ red marbles and $6$ blue marbles. Two marbles are drawn at random without replacement. "
     "What is the probability that both are red? Express your answer as a common fraction.",
     "The first marble is red with probability $\\frac{4}{10}$; then $3$ of the remaining $9$ marbles are red, so "
     "the second is red with probability $\\frac{3}{9}$. Both are red with probability "
     "$\\frac{4}{10} \\cdot \\frac{3}{9} = \\frac{12}{90} = \\frac{2}{15}$. The answer is \\boxed{\\frac{2}{15}}."),
    ("Find the vertex of the parabola $y = 2x^2 - 8x + 5$. Enter your answer as an ordered pair.",
     "Completing the square, $y = 2(x^2 - 4x) + 5 = 2(x-2)^2 - 8 + 5 = 2(x-2)^2 - 3$, so the vertex is at "
     "$x = 2$, $y = -3$. The answer is \\boxed{(2,-3)}."),
)
# multiple-choice STEM exemplars written for this file (MMLU's own dev split is not among the data files)
MMLU_SHOTS = (
    ("Which of the following is the SI unit of electric charge?\n(A) ampere\n(B) coulomb\n(C) volt\n(D) ohm",
     "The ampere measures current, the volt potential and the ohm resistance; charge is measured in coulombs."
     " The answer is \\boxed{B}."),
    ("What is the derivative of $\\sin(2x)$ with respect to $x$?\n(A) $\\cos(2x)$\n(B) $2\\sin(x)$\n"
     "(C) $2\\cos(2x)$\n(D) $-2\\cos(2x)$",
     "By the chain rule the derivative is $\\cos(2x) \\cdot 2 = 2\\cos(2x)$. The answer is \\boxed{C}."),
    ("Which organelle is the main site of ATP production in eukaryotic cells?\n(A) ribosome\n(B) Golgi apparatus\n"
     "(C) lysosome\n(D) mitochondrion",
     "Oxidative phosphorylation, which makes most of the cell's ATP, happens in the mitochondria."
     " The answer is \\boxed{D}."),
    ("What is the worst-case running time of binary search on a sorted array of $n$ elements?\n(A) $O(\\log n)$\n"
     "(B) $O(n)$\n(C) $O(n \\log n)$\n(D) $O(1)$",
     "Each comparison halves the part of the array that can still hold the target, so about $\\log_2 n$ steps are "
     "needed. The answer is \\boxed{A}."),
)
GSM8K_SHOT_SEED, GSM8K_SHOTS = 0, 8
_shot_cache: dict = {}


def gsm8k_shots(data_dir: str | None = None) -> list[tuple[str, str]]:
    """8 exemplars drawn (fixed seed) from GSM8K's TRAIN split, answers rewritten to the few-shot format:
    calculator annotations <<...>> removed, '#### N' -> 'The answer is \\boxed{N}.' (no blank line inside an
    answer, so the stop string "\\n\\nQuestion:" only ever ends a whole answer)."""
    path = os.path.join(data_dir or default_data_dir("gsm8k"), "gsm8k", "train.jsonl")
    if path not in _shot_cache:
        if not os.path.isfile(path):
            raise UserFileError(f"GSM8K-style few-shot prompts draw their exemplars from the GSM8K train split: "
                                f"no file at {path}. Put gsm8k/train.jsonl (fields question, answer) there.")
        rows = _read_jsonl(path)
        shots = []
        for i in random.Random(GSM8K_SHOT_SEED).sample(range(len(rows)), GSM8K_SHOTS):
            steps, _, final = rows[i]["answer"].rpartition("####")
            steps = re.sub(r"<<[^>]*>>", "", steps).strip()
            steps = "\n".join(line.strip() for line in steps.splitlines() if line.strip())  # no blank lines
            shots.append((rows[i]["question"].strip(),
                          f"{steps}\nThe answer is \\boxed{{{final.strip().replace(',', '')}}}."))
        _shot_cache[path] = shots
    return _shot_cache[path]


def few_shot_examples(benchmark: str, data_dir: str | None = None) -> list[tuple[str, str]]:
    """The (question, answer) exemplars of the few-shot prompt of `benchmark` ([] for 0-shot ones)."""
    if benchmark in GSM8K_STYLE:
        return gsm8k_shots(data_dir)
    if benchmark in MATH_STYLE:
        return list(MATH_SHOTS)
    if benchmark == "mmlu_stem":
        return list(MMLU_SHOTS)
    if benchmark in ("amc23", "synth"):
        return []
    raise UserError(f"unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}")


def build_prompt(example: dict, benchmark: str, style: str = "fewshot", data_dir: str | None = None) -> str:
    """style "fewshot": base-model chain-of-thought prompt, "Question: ...\\nAnswer:" after the benchmark's
    exemplars (GSM8K 8-shot from its train split, MATH-style 4-shot, MMLU-STEM 4-shot, AMC 0-shot with a one-line
    instruction; the synthetic set uses its own zero-shot "Question/Answer" format, the one its QA corpus is
    written in). style "r1": R1_TEMPLATE. An example with a "prompt" field (synth) is used as it is."""
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
    shots = few_shot_examples(benchmark, data_dir)
    head = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in shots)
    if benchmark == "amc23":
        head = ZERO_SHOT_INSTRUCTION
    return f"{head}Question: {question}\nAnswer:"


def stop_strings(style: str) -> tuple[str, ...]:
    return R1_STOP if style == "r1" else FEWSHOT_STOP


def answer_mode(benchmark: str, style: str) -> str:
    """grader's extraction mode for the benchmark (the table in grader.py's docstring)."""
    return benchmark_mode(benchmark, style)


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


def evaluate(model, tokenizer, benchmarks: list[str], data_dir: str | None = None, style: str = "fewshot",
             n: int = 1, temperature: float = 0.0, max_new_tokens: int = 512, limit: int | None = None,
             batch_size: int = 16, out_dir: str | None = None, progress: bool = True, top_p: float = 1.0,
             seed: int = 0, grade_timeout: float = 2.0) -> dict:
    """Generate with sample.generate and grade each benchmark; one model, several benchmarks.

    Greedy by default; n > 1 samples per problem (temperature > 0) add pass@k and maj@n. Writes
    out_dir/results.json (this return value) and out_dir/samples_<bench>.jsonl (prompt, completion, extracted, gold,
    correct) when out_dir is given. -> {"benchmarks": {name: {accuracy, count, ..., seconds}}, "average_accuracy",
    "config"}"""
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
    import sample  # the one generation path (sample.py); imported here so the grader has no torch dependency

    config = {"benchmarks": benchmarks, "data_dir": data_dir, "style": style, "n": n, "temperature": temperature,
              "top_p": top_p, "max_new_tokens": max_new_tokens, "limit": limit, "batch_size": batch_size,
              "seed": seed}
    results = {}
    for bench in benchmarks:
        t0 = time.time()
        examples = load_benchmark(bench, _data_dir_for(bench, data_dir))
        examples = examples[:limit] if limit else examples
        prompts = [build_prompt(ex, bench, style, data_dir=_data_dir_for("gsm8k", data_dir)) for ex in examples]
        completions = sample.generate(model, tokenizer, prompts, n=n, max_new_tokens=max_new_tokens,
                                      temperature=temperature, top_p=top_p, stop=stop_strings(style), seed=seed,
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
        results[bench] = summary
        if out_dir:
            write_atomic(os.path.join(out_dir, f"samples_{bench}.jsonl"),
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    report = {"benchmarks": results,
              "average_accuracy": sum(r["accuracy"] for r in results.values()) / len(results),
              "config": config}
    if out_dir:
        write_atomic(os.path.join(out_dir, "results.json"), json.dumps(report, indent=2) + "\n")
    _print_table(results)
    return report


# -----------------------------------------------------------------------------------------------------------------
# command line (nanoGPT-style knobs; `--key=value` or `--key value`, or a config file)

ckpt = "out/midtrain"          # checkpoint folder, run folder (follows `latest`) or any HF Llama snapshot
benchmarks = "gsm8k,math500"   # comma-separated, from BENCHMARKS
data_dir = ""                  # "" = default_data_dir(benchmark)
style = "fewshot"              # fewshot | r1
n = 1                          # samples per problem (n > 1 needs temperature > 0)
temperature = 0.0
top_p = 1.0
max_new_tokens = 512
limit = 0                      # first `limit` problems of each benchmark; 0 = all
batch_size = 16
out_dir = ""                   # "" = out/eval/<checkpoint name>-<style>
device = "auto"                # auto = cuda if available, else cpu
dtype = "auto"                 # auto = bfloat16 on cuda, float32 on cpu
seed = 0
progress = True
CLI_KNOBS = ("ckpt", "benchmarks", "data_dir", "style", "n", "temperature", "top_p", "max_new_tokens", "limit",
             "batch_size", "out_dir", "device", "dtype", "seed", "progress")


def _join_spaced_flags(argv: list[str]) -> list[str]:
    """`--limit 50` -> `--limit=50` (configurator reads `--key=value`); config file paths pass through."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and "=" not in a and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
        else:
            out.append(a)
            i += 1
    return out


def main(argv: list[str] | None = None) -> dict:
    from configurator import configure

    knobs = {k: globals()[k] for k in CLI_KNOBS}
    cfg = configure(knobs, _join_spaced_flags(sys.argv[1:] if argv is None else argv))
    import torch

    import model as model_lib

    dev = cfg["device"] if cfg["device"] != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = {"auto": torch.bfloat16 if dev.startswith("cuda") else torch.float32, "bfloat16": torch.bfloat16,
              "float16": torch.float16, "float32": torch.float32}
    if cfg["dtype"] not in dtypes:
        raise UserError(f"dtype must be one of {sorted(dtypes)}, got {cfg['dtype']!r}")
    if not os.path.exists(cfg["ckpt"]):
        raise UserFileError(f"ckpt={cfg['ckpt']!r} not found: pass a checkpoint or run folder (`python midtrain.py` "
                            "writes out/midtrain) or an HF Llama snapshot")
    path = model_lib.resolve_checkpoint(cfg["ckpt"])
    net, tok, _ = model_lib.load_checkpoint(path, dtype=dtypes[cfg["dtype"]], device=dev)
    net.eval()
    out = cfg["out_dir"] or os.path.join("out", "eval", f"{os.path.basename(os.path.normpath(path))}-{cfg['style']}")
    report = evaluate(net, tok, cfg["benchmarks"].split(","), data_dir=cfg["data_dir"] or None, style=cfg["style"],
                      n=cfg["n"], temperature=cfg["temperature"], top_p=cfg["top_p"],
                      max_new_tokens=cfg["max_new_tokens"], limit=cfg["limit"] or None,
                      batch_size=cfg["batch_size"], out_dir=out, progress=cfg["progress"], seed=cfg["seed"])
    print(f"wrote {os.path.join(out, 'results.json')}")
    return report


if __name__ == "__main__":
    run_cli(main)
