"""Answer extraction: the final answer in a model's response (`extract_answer`, the modes table is in the package
docstring, grader/__init__.py), boxed answers (`last_boxed`) and the benchmark -> mode assignment."""
from __future__ import annotations

import re

_BOX_RE = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")
# "The final answer is X", "Answer: X", and the bare word followed by a math span ("Answer $ 9 $"); and a
# multiple-choice pick in prose: "So the choice is C.", "the correct option is (B)"
_ANSWER_IS_RE = re.compile(r"(?:final answer|answer)(?:\s*(?:is|:)\s*:?|\s*(?=\$|\\\(|\\\[))", re.IGNORECASE)
_CHOICE_IS_RE = re.compile(r"\b(?:choice|option)\s+is\s*:?", re.IGNORECASE)  # looked for near the end only
_CHOICE_TAIL = 2000
_OPTION_RE = re.compile(r"\(([A-J])\)")
_HASHES_RE = re.compile(r"####\s*([^\n]*)")
# a number not glued to a preceding letter or subscript: "AZYUK2A" and "x_2" hold no number
_NUMBER_RE = re.compile(r"(?<![A-Za-z_\d.,])(?:[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|[-+]?\.\d+)")
# inline / display math; escapes (\\$ in "$\\$36$") are part of the content
# (no span content may hold its own opening delimiter, so a response full of unclosed "\\(" is scanned in linear time)
_MATH_SPAN_RE = re.compile(r"\$\$((?:\\.|[^\\$])+)\$\$|(?<!\\)\$((?:\\.|[^\\$])+)\$|"
                           r"\\\(((?:[^\\]|\\[^()])+)\\\)|\\\[((?:[^\\]|\\[^\[\]])+)\\\]")
# what may stand between two boxes that together answer a "find all" question: "\boxed{1}, \boxed{2}",
# "$x = \boxed{1}$ or $x = \boxed{2}$"
_BOX_GAP_RE = re.compile(r"(?:[\s$,;~]|\\[,;: ]|\\q?quad|\\text\{\s*(?:and|or|,)\s*\}|\band\b|\bor\b)*"
                         r"(?:[A-Za-z](?:_\{?\w+\}?)?\s*=\s*)?[\s$]*")
_CHOICE_RE = re.compile(r"\(([A-J])\)|(?:^|\n)\s*([A-J])[.)]|\boption\s+([A-J])\b")
MAX_RESPONSE_CHARS = 100_000  # longer responses are graded on their end (where the answer is)
MAX_BOXES = 16                # boxes examined from the end of a response (each may scan to its end)
EXTRACTION_MODES = ("boxed", "answer", "last_number", "choice")
# per benchmark, for few-shot prompts (see the table in the package docstring); r1-style prompts use "answer"
# (MMLU: "choice")
BENCHMARK_MODES = {"gsm8k": "last_number", "svamp": "last_number", "asdiv": "last_number", "mmlu_stem": "choice",
                   "math500": "answer", "minerva_math": "answer", "olympiadbench": "answer",
                   "college_math": "answer", "aime24": "answer", "amc23": "answer", "synth": "answer"}


def benchmark_mode(benchmark: str, style: str = "fewshot") -> str:
    """The extraction mode of `benchmark`'s responses to a prompt of `style` ("fewshot" or "r1")."""
    if benchmark not in BENCHMARK_MODES:
        raise ValueError(f"no extraction mode for benchmark {benchmark!r}; known: {', '.join(BENCHMARK_MODES)}")
    mode = BENCHMARK_MODES[benchmark]
    return "answer" if style == "r1" and mode == "last_number" else mode


def _matching_brace(s: str, i: int, stop: int | None = None) -> int:
    """Index of the '}' closing the '{' at s[i], or -1 when the braces never balance. Escaped \\{ \\} are skipped:
    they are printed braces, not groups, and need not pair up (\\left\\{ ... \\right. opens one and closes none)."""
    depth, j, stop = 0, i, len(s) if stop is None else stop
    while j < stop:
        c = s[j]
        if c == "\\":
            j += 2  # skip the escaped character; a row break \\ consumes its second backslash, so \\{ is a group
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    return -1


def _box_at(text: str, m, stop: int | None = None) -> tuple[int, str | None]:
    """The box whose marker is the match m -> (index just after it, its content or None when the content is
    unbalanced or empty). `stop`: where the box must have closed (the next box's marker)."""
    i = m.end()
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        j = _matching_brace(text, i, stop)
        if j < 0:
            return len(text), None  # cut off mid-answer (e.g. generation hit max tokens)
        return j + 1, text[i + 1:j].strip() or None
    if i > m.end():
        # `\boxed 5`: TeX takes one token; people write a short answer up to the closing `$` or whitespace
        content = re.match(r"[^\s$]*", text[i:]).group(0)
        return i + len(content), content.rstrip(".,;") or None
    return m.end(), None


class Answer(str):
    """An answer taken from a box: the text, which also remembers the contents of the response's last boxes in
    order (`boxes`). Several boxes in separate sentences ("$x = \\boxed{2}$. ... The other root is $\\boxed{5}$")
    may together answer a question whose gold is a list of that many answers; math_equal reads them then."""
    boxes: tuple[str, ...] = ()


def _boxes(text: str) -> tuple[int, int, str | None, tuple[str, ...]] | None:
    """The final boxed answer -> (start, end, content, the contents of the last boxes in order) or None when there
    is no box. Boxes separated only by commas, "and"/"or" or a variable name ("x = \\boxed{1}$ or $x =
    \\boxed{2}") form one list answer "1, 2"."""
    markers = list(_BOX_RE.finditer(text))[-MAX_BOXES:]
    if not markers:
        return None
    # (end, content) of each; a box closes before the next one starts, so each scan is short
    found = [_box_at(text, m, nxt.start()) for m, nxt in zip(markers, markers[1:])] + [_box_at(text, markers[-1])]
    end, content = found[-1]
    start, parts = markers[-1].start(), [content]
    for m, (prev_end, prev) in zip(markers[-2::-1], found[-2::-1]):
        if content is None:
            break
        gap = text[prev_end:start]
        if prev is None or prev_end > start or len(gap) > 200 or not _BOX_GAP_RE.fullmatch(gap):
            break
        start = m.start()
        parts.insert(0, prev)
    boxes = tuple(c for _, c in found if c is not None)
    return start, end, None if content is None else ", ".join(parts), boxes


def _answer(box) -> Answer | None:
    if box[2] is None:
        return None
    out = Answer(box[2])
    out.boxes = box[3]
    return out


def last_boxed(text: str) -> tuple[bool, str | None]:
    """(found a box marker, the final box's content, or None if it is unbalanced/empty). Adjacent boxes of one list
    answer are joined (see _boxes)."""
    found = _boxes(text)
    return (False, None) if found is None else (True, found[2])


def _mask_math(s: str) -> str:
    """s with its math spans blanked out (same length), so prose words can be found outside them."""
    return _MATH_SPAN_RE.sub(lambda m: "#" * len(m.group(0)), s)


def _unwrap_math(s: str) -> str:
    s = s.strip()
    m = _MATH_SPAN_RE.fullmatch(s)
    if m:
        return next(g for g in m.groups() if g is not None).strip()
    return s


def _sentence_value(s: str) -> str:
    """"The largest $n$ is 34" -> "34": an answer phrased as a sentence is the part after its last "is" / "are" /
    "equals" (outside math). Expressions ("x = 5", "(B)", "$3.5$") are returned as they are."""
    if not re.match(r"[A-Za-z]{2}", s) or s.startswith("\\"):
        return s
    verbs = list(re.finditer(r"\s(?:is|are|equals|was)\s", _mask_math(s)))
    if not verbs:
        return s
    tail = s[verbs[-1].end():].strip()
    # a value follows ("is 34", "is $\\frac12$"), not more prose ("They are equal" stays a worded answer)
    words = re.findall(r"[A-Za-z]{2,}", _mask_math(tail))
    return tail if re.search(r"[\d$\\]", tail) and len(words) <= 2 else s


def _answer_is(text: str) -> tuple[int, str, bool] | None:
    """The last "the (final) answer is X" / "Answer: X" / "Answer $X$" -> (where it starts, X, whether it is a
    statement of the answer: "final answer" or "answer is", not a bare "answer $x$ ...") or None."""
    matches = list(_ANSWER_IS_RE.finditer(text))
    matches += list(_CHOICE_IS_RE.finditer(text, max(0, len(text) - _CHOICE_TAIL)))  # "So the choice is C."
    matches.sort(key=lambda m: m.start())
    if not matches:
        return None
    rest = text[matches[-1].end():].strip()
    # a display (\[ ... \] or $$ ... $$) may run over several lines: all of it is the answer
    span = _MATH_SPAN_RE.match(rest) if rest.startswith(("$$", "\\[")) else None
    rest = span.group(0) if span else rest.split("\n", 1)[0]
    # the answer ends at the end of its sentence: a period followed by a space (not a decimal point) outside math
    stop = re.search(r"\.\s", _mask_math(rest))
    rest = rest[:stop.start()] if stop else rest
    rest = rest.strip().strip("*").strip()  # markdown bold
    rest = _unwrap_math(rest.rstrip(".").strip())
    rest = _unwrap_math(_sentence_value(rest).rstrip(".").strip())
    phrase = matches[-1].group(0).lower()
    return (matches[-1].start(), rest, "final" in phrase or "is" in phrase) if rest else None


def _last_math(text: str) -> str | None:
    """The content of the last math span ($...$, $$...$$, \\(...\\), \\[...\\]): "Therefore $x \\geq 5$ is the
    solution." -> "x \\geq 5"."""
    spans = list(_MATH_SPAN_RE.finditer(text))
    for m in reversed(spans):
        content = next(g for g in m.groups() if g is not None).strip().rstrip(".,;").strip()
        if content:
            return content
    return None


def _last_choice(text: str) -> str | None:
    letters = [next(g for g in m.groups() if g) for m in _CHOICE_RE.finditer(text)]
    return letters[-1] if letters else None


def extract_answer(text: str, mode: str = "answer") -> str | None:
    """The final answer in a model's response, or None. The modes (see the table in the package docstring):

    "boxed": the last \\boxed{...} / \\fbox{...} only (nested braces; also `\\boxed 5`; boxes separated by commas or
        "and"/"or" are one list answer). A response cut off inside its box has no answer. A box's answer is an
        `Answer` (a str) that also carries the response's last boxes (see math_equal).
    "answer": the box, unless a "the (final) answer is X" phrase comes after it (intermediate boxes, then "The final
        answer is $10,455$"); with no box that phrase, "Answer: X", "Answer $X$" (a sentence "The largest $n$ is
        34" gives 34), then GSM8K's "#### N", then the content of the last math span; with no math, the last option
        written "(C)".
    "last_number": "answer" without the math span, then the last number that is not part of a word.
    "choice": "answer" without the math span, then the last option letter written "(B)", "B." or "option B"."""
    if mode not in EXTRACTION_MODES:
        raise ValueError(f"extract_answer mode must be one of {EXTRACTION_MODES}, got {mode!r}")
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"extract_answer expects a str, got {type(text).__name__}")
    text = text[-MAX_RESPONSE_CHARS:]
    box = _boxes(text)
    if mode == "boxed":
        return None if box is None else _answer(box)
    said = _answer_is(text)
    if box is not None:
        later = said is not None and said[0] > box[1] and said[2] and re.search(r"[\d$\\]", said[1])
        return said[1] if later else _answer(box)
    if said is not None:
        return said[1]
    hashes = _HASHES_RE.findall(text)
    if hashes and hashes[-1].strip():
        return hashes[-1].strip().rstrip(".").strip()
    if mode == "last_number":
        numbers = _NUMBER_RE.findall(text)
        return numbers[-1].replace(",", "").lstrip("+") if numbers else None
    if mode == "choice":
        return _last_choice(text)
    math = _last_math(text)
    if math is None:  # no math at all: an option picked in prose ("Among the options, (C) is correct.")
        letters = _OPTION_RE.findall(text[-_CHOICE_TAIL:])
        return letters[-1] if letters else None
    return math
