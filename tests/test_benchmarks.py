"""benchmarks.py: loaders, prompts (exemplars, the R1 template), RL's problem files, pass@k, and evaluate() against
sample.generate's contract; the layering around it (the stages share it, never each other)."""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import sys
import types
from fractions import Fraction

import pytest
from conftest import ROOT, SHARED_DATA

from benchmarks import (BENCHMARKS, GSM8K_SHOTS, MATH_SHOTS, MMLU_SHOTS, R1_TEMPLATE, build_prompt, draw_gsm8k_shots,
                        evaluate, few_shot_examples, gold_answer, load_benchmark, load_prompts, pass_at_k)
from grader import extract_answer, math_equal

# the grader's own tests are in test_grader*.py; the evaluation CLI's in test_eval_math.py


needs_data = pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason=f"benchmark files not at {SHARED_DATA}")
COUNTS = {"gsm8k": 1319, "math500": 500, "minerva_math": 272, "amc23": 40, "aime24": 30, "olympiadbench": 675,
          "mmlu_stem": 3018, "svamp": 1000, "asdiv": 2215, "college_math": 2818}


@needs_data
@pytest.mark.parametrize("name", list(COUNTS))
def test_loader_counts_and_fields(name):
    examples = load_benchmark(name, SHARED_DATA)
    assert len(examples) == COUNTS[name]
    assert all(isinstance(e["question"], str) and e["question"].strip() for e in examples)
    assert all(isinstance(e["answer"], str) and e["answer"].strip() for e in examples)
    assert len({e["id"] for e in examples}) == len(examples)
    if name != "college_math":  # college_math keeps some prose answers and \left\{ ... \right. cases as they are
        assert not any(e["answer"].startswith("$") and e["answer"].endswith("$") for e in examples)


@needs_data
def test_loader_field_mapping():
    first = {name: load_benchmark(name, SHARED_DATA)[0] for name in COUNTS}
    assert first["gsm8k"]["answer"] == "18" and first["gsm8k"]["question"].startswith("Janet")
    assert first["math500"]["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert first["minerva_math"]["answer"] == "1.6"
    assert first["amc23"]["answer"] == "27" and first["aime24"]["answer"] == "204"
    assert first["asdiv"]["answer"] == "9" and first["asdiv"]["question"] == (
        "Seven red apples and two green apples are in the basket. How many apples are in the basket?")
    assert first["svamp"]["answer"] == "145" and first["svamp"]["question"].endswith(
        "into 93 groups. How big is each group of bananas?")
    mmlu = first["mmlu_stem"]
    assert mmlu["answer"] == "C" and "\n(C) reduce the carrying capacity" in mmlu["question"]
    assert first["college_math"]["answer"] == "10-4 n"
    assert not any("," in e["answer"] for e in load_benchmark("gsm8k", SHARED_DATA))
    olympiad = load_benchmark("olympiadbench", SHARED_DATA)
    assert any(e["answer"].startswith("(0,1,1),(0,-1,-1)") for e in olympiad)  # multi-part answers joined



def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"gsm8k/test\.jsonl") as err:
        load_benchmark("gsm8k", str(tmp_path))
    assert str(tmp_path) in str(err.value)
    with pytest.raises(FileNotFoundError, match="heldout.jsonl"):
        load_benchmark("synth", str(tmp_path))
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("gsm9k", str(tmp_path))
    (tmp_path / "math500").mkdir()
    (tmp_path / "math500" / "test.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n{not json\n')
    with pytest.raises(ValueError, match=r"test\.jsonl:2"):
        load_benchmark("math500", str(tmp_path))
    (tmp_path / "math500" / "test.jsonl").write_text('{"question_text": "1+1?", "answer": "2"}\n')
    with pytest.raises(ValueError, match="problem"):
        load_benchmark("math500", str(tmp_path))


def write_rows(tmp_path, name, rows):
    (tmp_path / name).mkdir(exist_ok=True)
    (tmp_path / name / "test.jsonl").write_text("".join(json.dumps(r) + "\n" if r else "\n" for r in rows))


@pytest.mark.parametrize("name,row,field", [
    ("math500", {"problem": "1+1?", "answer": ""}, "answer"),
    ("math500", {"problem": "1+1?", "answer": "  "}, "answer"),
    ("olympiadbench", {"question": "Find x.", "final_answer": []}, "final_answer"),
    ("olympiadbench", {"question": "Find x.", "final_answer": ["$ $"]}, "final_answer"),
    ("gsm8k", {"question": "How many?", "answer": "3 + 4 = 7\n#### "}, "answer"),
    ("asdiv", {"body": "Some apples.", "question": "How many?", "answer": "(apples)"}, "answer"),
    ("college_math", {"question": "Find x.", "answer": "$$"}, "answer"),
    ("svamp", {"Body": "Some apples", "Question": "How many?", "Answer": " "}, "Answer"),
])
def test_loader_rejects_empty_gold_answers(tmp_path, name, row, field):
    good = {"math500": {"problem": "2+2?", "answer": "4"}, "olympiadbench": {"question": "Q", "final_answer": ["1"]},
            "gsm8k": {"question": "Q", "answer": "#### 1"}, "asdiv": {"body": "B", "question": "Q", "answer": "1"},
            "college_math": {"question": "Q", "answer": "1"},
            "svamp": {"Body": "B", "Question": "Q", "Answer": 1}}[name]
    write_rows(tmp_path, name, [good, None, row])  # a blank line between: the error names the file's line 3
    with pytest.raises(ValueError, match=rf"{name}/test\.jsonl:3: empty gold answer in field '{field}'"):
        load_benchmark(name, str(tmp_path))


def test_loader_rejects_choice_index_out_of_range(tmp_path):
    choices = ["a", "b", "c", "d"]
    for answer in (4, 12, -1, True):  # 12 used to raise a bare IndexError, -1 to pick the last letter
        write_rows(tmp_path, "mmlu_stem", [{"question": "Q", "choices": choices, "answer": 1},
                                           {"question": "Q", "choices": choices, "answer": answer}])
        with pytest.raises(ValueError, match=rf"test\.jsonl:2: field 'answer' is {answer!r}, not an index into 4"):
            load_benchmark("mmlu_stem", str(tmp_path))
    write_rows(tmp_path, "mmlu_stem", [{"question": "Q", "choices": choices, "answer": a} for a in (0, 3, "(C)")])
    assert [e["answer"] for e in load_benchmark("mmlu_stem", str(tmp_path))] == ["A", "D", "C"]


def test_olympiad_loader_strips_every_math_delimiter(tmp_path):
    finals = [["$69$,$84$"], ["$(-\\infty, 0) \\cup\\{1\\}$."], ["$f(n)=n$, $g(n)=1$"], ["\\$5"], ["$3$", "$4$"]]
    write_rows(tmp_path, "olympiadbench", [{"question": "Q", "final_answer": f} for f in finals])
    golds = [e["answer"] for e in load_benchmark("olympiadbench", str(tmp_path))]
    assert golds == ["69,84", "(-\\infty, 0) \\cup\\{1\\}", "f(n)=n, g(n)=1", "\\$5", "3, 4"]
    assert math_equal("84, 69", golds[0]) and math_equal("n, 1", golds[2])


def test_asdiv_loader_drops_only_unit_labels(tmp_path):
    answers = ["9 (apples)", "-(1/3)", "2.5 (kg)", "(1/2)"]
    write_rows(tmp_path, "asdiv", [{"body": "B", "question": "Q", "answer": a} for a in answers])
    golds = [e["answer"] for e in load_benchmark("asdiv", str(tmp_path))]
    assert golds == ["9", "-(1/3)", "2.5", "(1/2)"]
    assert math_equal("-\\frac{1}{3}", golds[1]) and not math_equal("1/3", golds[1])


def test_synth_loader_and_prompt(tmp_path):
    rows = [{"question": "What is 3 plus 4?", "answer": "7", "skill": "add"}, {"question": "Q2", "answer": "\\frac12"}]
    (tmp_path / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = load_benchmark("synth", str(tmp_path))
    assert [e["answer"] for e in examples] == ["7", "\\frac12"] and examples[0]["skill"] == "add"
    assert build_prompt(examples[0], "synth") == "Question: What is 3 plus 4?\nAnswer:"
    assert build_prompt({**examples[0], "prompt": "P: 3+4="}, "synth") == "P: 3+4="
    assert build_prompt(examples[0], "synth", "r1") == R1_TEMPLATE.format(question="What is 3 plus 4?")


def brute_pass_at_k(n, c, k):
    """Fraction of all k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_brute_force():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)
    # large n: the product form stays finite and equals the exact binomial ratio
    exact = 1 - Fraction(math.comb(1000 - 3, 100), math.comb(1000, 100))
    assert pass_at_k(1000, 3, 100) == pytest.approx(float(exact), rel=1e-9)
    for bad in ((4, 5, 1), (4, 1, 0), (4, 1, 5), (4, -1, 1)):
        with pytest.raises(ValueError):
            pass_at_k(*bad)



@needs_data
@pytest.mark.parametrize("name", [b for b in BENCHMARKS if b != "synth"])
def test_prompts_hold_no_test_set_text(name):
    examples = load_benchmark(name, SHARED_DATA)
    shots = few_shot_examples(name)
    tests = {e["question"].strip() for e in examples}
    for bench in COUNTS:  # an exemplar question must not appear in ANY test set
        tests |= {e["question"].strip() for e in load_benchmark(bench, SHARED_DATA)} if bench in (
            "gsm8k", "math500", "minerva_math", "mmlu_stem") else set()
    for q, a in shots:
        assert q not in tests and not any(q in t for t in tests), q[:60]
        assert a.endswith("}.") and extract_answer(a) is not None
    prompt = build_prompt(examples[0], name)
    assert prompt.endswith(f"Question: {examples[0]['question'].strip()}\nAnswer:")
    head = prompt[: -len(f"Question: {examples[0]['question'].strip()}\nAnswer:")]
    assert head.count("Question: ") == len(shots) and "\n\n\n" not in head
    for q, a in shots:  # no blank line inside an exemplar answer: the stop string ends only whole answers
        assert "\n\n" not in a
    expected = {"gsm8k": 8, "svamp": 8, "asdiv": 8, "amc23": 0, "mmlu_stem": 4}.get(name, 4)
    assert len(shots) == expected
    if name in ("gsm8k", "svamp", "asdiv"):
        train_file = os.path.join(SHARED_DATA, "gsm8k", "train.jsonl")
        train = {json.loads(line)["question"].strip() for line in open(train_file)}
        assert all(q in train for q, _ in shots)  # drawn from the train split


@needs_data
def test_stored_gsm8k_exemplars_are_the_seeded_train_draw():
    assert list(GSM8K_SHOTS) == draw_gsm8k_shots(os.path.join(SHARED_DATA, "gsm8k", "train.jsonl"))


def test_prompts_need_no_data_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing to read: the exemplars live in the repo
    for name in ("gsm8k", "math500", "mmlu_stem", "amc23"):
        prompt = build_prompt({"question": "What is 1+1?"}, name)
        assert prompt.endswith("Question: What is 1+1?\nAnswer:")
    assert build_prompt({"question": "Q"}, "gsm8k").count("Question: ") == 9


def test_exemplar_answers_are_right():
    answers = [extract_answer(a) for _, a in MATH_SHOTS]
    # domain of sqrt(x-2)/sqrt(5-x): both roots real and the denominator nonzero
    domain = [x / 4 for x in range(-40, 40) if x / 4 - 2 >= 0 and 5 - x / 4 > 0]
    assert math_equal(answers[0], f"[{min(domain)}, 5)") and max(domain) < 5
    assert math_equal(answers[1], str(2 * 12))                           # det(AB) = det A det B
    assert math_equal(answers[2], str(2 * 20 * 12 // (2 * 15)))          # the same total weight
    x, y = 3, 5                                                          # any nonzero solution: a/b is fixed
    assert math_equal(answers[3], str(Fraction(6 * x - 4 * y, 6 * y - 9 * x)))
    # MMLU abstract algebra: c with x^2 + c irreducible over Z_3 (no root), |S_10| = 10!, char(2Z) = 0
    irreducible = [c for c in range(3) if all((x * x + c) % 3 for x in range(3))]
    assert irreducible == [1] and math.factorial(10) != 10
    assert [extract_answer(a) for _, a in MMLU_SHOTS] == ["B", "C", "A", "A"]
    assert [extract_answer(a) for _, a in GSM8K_SHOTS] == ["4", "110", "5", "210", "10", "6", "3", "68"]


def test_r1_template():
    text = R1_TEMPLATE.format(question="What is 2+2?")
    preamble, rest = text.split("\n", 1)
    assert "User" in preamble and "Assistant" in preamble and "\\boxed{}" in preamble
    assert rest == "User: What is 2+2?\nAssistant:"
    with pytest.raises(ValueError, match="style"):
        build_prompt({"question": "q"}, "math500", "chat")
    with pytest.raises(ValueError, match="question"):
        build_prompt({"question": " "}, "math500", "r1")


def write_mini_data(root):
    (root / "gsm8k").mkdir(parents=True)
    train = [{"question": f"Train question {i}?", "answer": f"Step <<1+{i}={1 + i}>>{1 + i}.\n#### {1 + i}"}
             for i in range(10)]
    (root / "gsm8k" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    test = [{"question": f"How many apples are {i}+{i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i:,}"}
            for i in range(998, 1004)]
    (root / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    (root / "math500").mkdir()
    test = [{"problem": f"Simplify $\\frac{{{i}}}{{{2 * i}}}$.", "answer": "\\frac{1}{2}"} for i in range(1, 4)]
    (root / "math500" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))


def fake_sample_module(calls):
    """A stand-in for sample.py that follows DESIGN.md's generate() contract and answers by a fixed rule."""
    def generate(model, tokenizer, prompts, *, n=1, max_new_tokens=256, temperature=0.0, top_k=0, top_p=1.0,
                 stop=(), seed=None, batch_size=None, progress=False):
        calls.append({"prompts": prompts, "n": n, "stop": stop, "temperature": temperature})
        out = []
        for i, p in enumerate(prompts):
            q = p.rsplit("Question:", 1)[-1]
            for j in range(n):
                if "apples" in q:  # gsm8k: sample j of prompt i is right when (i + j) is even, by last number
                    a, b = (int(x) for x in re.findall(r"(\d+)\+(\d+)", q)[0])
                    text = f" We add them to get {a + b + (i + j) % 2}"
                else:              # math500: right in \boxed, for every other sample
                    text = " So \\boxed{0.5}." if j % 2 == 0 else " So \\boxed{\\frac{1}{3}}."
                out.append(types.SimpleNamespace(prompt_index=i, prompt_tokens=[1, 2], tokens=list(range(5 + j)),
                                                 text=text, logprobs=None, finish_reason="stop"))
        return out
    return types.SimpleNamespace(generate=generate)


def test_evaluate_with_contract_generate(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    write_mini_data(data)
    calls = []
    monkeypatch.setitem(sys.modules, "sample", fake_sample_module(calls))
    out = tmp_path / "eval"
    report = evaluate(None, None, ["gsm8k", "math500"], data_dir=str(data), limit=4, out_dir=str(out),
                      progress=False)
    gsm, m5 = report["benchmarks"]["gsm8k"], report["benchmarks"]["math500"]
    assert gsm["count"] == 4 and gsm["accuracy"] == 0.5 and m5["count"] == 3 and m5["accuracy"] == 1.0
    assert gsm["mean_response_tokens"] == 5 and report["average_accuracy"] == 0.75
    assert calls[0]["stop"] == ("\n\nQuestion:", "Question:") and calls[0]["n"] == 1
    assert calls[0]["prompts"][0].count("Question: ") == 9  # 8 stored exemplars + the question
    assert json.load(open(out / "results.json")) == json.loads(json.dumps(report))
    rows = [json.loads(line) for line in open(out / "samples_gsm8k.jsonl")]
    assert [r["correct"] for r in rows] == [True, False, True, False]
    assert rows[0]["gold"] == "1996" and rows[0]["extracted"] == "1996" and rows[0]["prompt"].endswith("Answer:")
    assert set(rows[0]) >= {"prompt", "completion", "extracted", "gold", "correct"}
    table = capsys.readouterr().out
    assert "gsm8k" in table and "50.0" in table and "100.0" in table

    # n samples with temperature: accuracy over samples, pass@k, maj@n
    report = evaluate(None, None, "gsm8k,math500", data_dir=str(data), n=4, temperature=0.7, out_dir=None,
                      progress=False)
    gsm, m5 = report["benchmarks"]["gsm8k"], report["benchmarks"]["math500"]
    assert gsm["samples"] == 24 and gsm["accuracy"] == 0.5 and gsm["pass@1"] == 0.5 and gsm["pass@4"] == 1.0
    assert gsm["pass@2"] == pytest.approx(1 - math.comb(2, 2) / math.comb(4, 2))
    assert m5["maj@4"] == 1.0  # 0.5 vs 1/3 tie 2:2, first seen (0.5) wins
    assert calls[-1]["temperature"] == 0.7 and calls[-1]["n"] == 4

    # other stop strings replace the style's own and are recorded in the report
    report = evaluate(None, None, ["gsm8k"], data_dir=str(data), limit=2, stop=["\n\n", "Question:"],
                      progress=False)
    assert calls[-1]["stop"] == ("\n\n", "Question:") and report["config"]["stop"] == ["\n\n", "Question:"]


def test_evaluate_rejects_bad_arguments(monkeypatch):
    monkeypatch.setitem(sys.modules, "sample", fake_sample_module([]))
    for kwargs, match in [({"benchmarks": ["gsm9k"]}, "unknown"), ({"benchmarks": []}, "benchmarks"),
                          ({"benchmarks": ["gsm8k"], "n": 4}, "temperature"),
                          ({"benchmarks": ["gsm8k"], "style": "chat"}, "style"),
                          ({"benchmarks": ["gsm8k"], "n": 0}, "n must"),
                          ({"benchmarks": ["gsm8k"], "stop": ["\n", ""]}, "stop must")]:
        with pytest.raises(ValueError, match=match):
            evaluate(None, None, **kwargs)


# ---- problem files for RL (load_prompts) ---------------------------------------------------------------------------

WORDS = "Question: Mia has 3 apples and buys 4 more. How many apples? Answer: 3 + 4 = 7. The answer is \\boxed{7}."


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    from data.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("problems")
    with open(root / "prompts.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"problem": f"Mia has {i} apples and buys {i % 7} more. How many apples?",
                                "solution": f"{i} + {i % 7} = {2 * i}\n#### {i + i % 7}"}) + "\n")
        f.write(json.dumps({"problem": "Mia " * 200, "solution": "#### 1"}) + "\n")  # too long: dropped
    return types.SimpleNamespace(tok=Tokenizer.train([WORDS] * 3, vocab_size=290), prompts=str(root / "prompts.jsonl"))


def test_gold_answer():
    assert gold_answer("Natalia sold 48/2 = 24 clips.\n#### 1,234") == "1234"
    assert gold_answer(72.0) == "72" and gold_answer(" \\frac{1}{2} ") == "\\frac{1}{2}"
    with pytest.raises(ValueError):
        gold_answer(None)


def test_load_prompts_fields_gsm8k_gold_and_length_filter(problems):
    logs = []
    ex = load_prompts(problems.prompts, problems.tok, "Q: {question}\nA:", 64, "problem", "solution", log=logs.append)
    assert len(ex) == 40 and "1 dropped" in logs[0]
    assert ex[3]["answer"] == "6" and ex[3]["prompt_ids"][0] == problems.tok.bos_id
    assert problems.tok.decode(ex[3]["prompt_ids"][1:]) == "Q: Mia has 3 apples and buys 3 more. How many apples?\nA:"
    r1 = load_prompts(problems.prompts, problems.tok, "r1", 400, "problem", "solution", log=logs.append)
    assert "\\boxed{}" in problems.tok.decode(r1[0]["prompt_ids"])  # the R1 template, its braces unescaped
    with pytest.raises(ValueError, match="max_prompt_len"):
        load_prompts(problems.prompts, problems.tok, "Q: {question}", 5, "problem", "solution", log=logs.append)
    with pytest.raises(ValueError, match="question_field"):
        load_prompts(problems.prompts, problems.tok, "Q: {question}", 64, log=logs.append)


def imported_names(name: str) -> set[str]:
    """Top-level module names a project file imports, function-level imports included."""
    from test_runtime import imported_modules
    return imported_modules(os.path.join(ROOT, f"{name}.py"))


def test_benchmarks_sit_below_the_stages():
    """rl.py and study.py evaluate through benchmarks.py, not through the eval_math stage; benchmarks.py imports no
    stage; the W&B logger is runtime's, so no stage (nor runtime) imports plot.py."""
    stages = {"midtrain", "rl", "eval_math", "study"}
    mods = {n: imported_names(n) for n in ("benchmarks", "rl", "study", "midtrain", "eval_math", "runtime")}
    assert {"sample", "grader"} <= mods["benchmarks"] and not mods["benchmarks"] & (stages | {"runtime", "plot"})
    assert "benchmarks" in mods["rl"] and "benchmarks" in mods["study"] and "benchmarks" in mods["eval_math"]
    assert not (mods["rl"] | mods["midtrain"]) & {"eval_math", "plot"} and "eval_math" not in mods["study"]
    assert not mods["eval_math"] & stages - {"eval_math"} and "plot" not in mods["runtime"]
