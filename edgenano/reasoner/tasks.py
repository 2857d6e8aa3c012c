"""Synthetic problems for the built-in tiny reasoner: generators, step-by-step traces, checkers.

Three kinds, each with a trace where writing the steps helps a small model: addition and
subtraction column by column (carries and borrows explicit, the partial result growing to the
left), and counting one digit in a number, read digit by digit, each compared with the digit
counted, with a running count. Every answer is the line "The answer is X." so it can be checked by
machine. (Sorting by insertion was tried and dropped: at this size its trace hurt, 48% against 72%
answering directly.)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache

KINDS = ("add", "sub", "count")
PLACES = ("ones", "tens", "hundreds", "thousands", "ten thousands")

# Sizes, sized to what a few-million-parameter model learns in ~20 CPU minutes (about 30k
# training conversations): long enough that written steps beat a direct answer.
ADD_DIGITS = (2, 3)    # operands of add and sub
COUNT_DIGITS = (4, 7)  # count: length of the number

# Held-out problems come from their own seed; training never uses one of the first
# HELDOUT_MAX of each kind (see heldout_keys).
HELDOUT_SEED = 20250917
HELDOUT_MAX = 500

QUESTIONS = {
    "add": ("What is {a} + {b}?", "Calculate {a} + {b}."),
    "sub": ("What is {a} - {b}?", "Calculate {a} - {b}."),
    "count": ("How many times does the digit {digit} appear in {number}?",
              "Count the digit {digit} in {number}."),
}


@dataclass(frozen=True)
class Problem:
    """One problem: the user's question, the reasoning trace (lines ending in a newline) and
    the answer (the X of "The answer is X.")."""

    kind: str
    question: str
    trace: str
    answer: str
    key: tuple  # identity of the problem, independent of the phrasing

    @property
    def answer_line(self) -> str:
        return answer_line(self.answer)


def answer_line(answer: str) -> str:
    return f"The answer is {answer}."


# -- traces ------------------------------------------------------------------------------------

def _digits(n: int, width: int) -> list[int]:
    """Least significant first, zero-padded to `width`."""
    return [(n // 10**i) % 10 for i in range(width)]


def add_trace(a: int, b: int) -> str:
    """One line per column, ones first: `tens: 4+8+1=13 -> 32` (digit, digit, carry in = sum,
    then the result so far). A last column is added for a final carry."""
    width = max(len(str(a)), len(str(b)))
    da, db = _digits(a, width + 1), _digits(b, width + 1)
    lines, carry, so_far = [], 0, ""
    for i in range(width + 1):
        if i == width and carry == 0:
            break
        s = da[i] + db[i] + carry
        so_far = str(s % 10) + so_far
        lines.append(f"{PLACES[i]}: {da[i]}+{db[i]}+{carry}={s} -> {so_far}\n")
        carry = s // 10
    return "".join(lines)


def sub_trace(a: int, b: int) -> str:
    """a >= b. One line per column of a, ones first: `tens: 13-8-1=4 -> 49`, where a top digit
    written with a leading 1 marks the borrow from the next column (that column then takes 1
    more away). The result so far keeps leading zeros; the answer drops them."""
    assert a >= b >= 0
    width = len(str(a))
    da, db = _digits(a, width), _digits(b, width)
    lines, borrow, so_far = [], 0, ""
    for i in range(width):
        top = da[i]
        nxt = 1 if top - db[i] - borrow < 0 else 0
        top += 10 * nxt
        d = top - db[i] - borrow
        so_far = str(d) + so_far
        lines.append(f"{PLACES[i]}: {top}-{db[i]}-{borrow}={d} -> {so_far}\n")
        borrow = nxt
    return "".join(lines)


def count_trace(text: str, symbol: str) -> str:
    """One line per character of text, compared with symbol, then the running count:
    `7=7? yes 2`, `4=7? no 2`. Naming the symbol on every line keeps each step local (compare
    two adjacent tokens, add one to the count a line above): with the bare `7 2` lines the
    model copied the digits but never learned to increment."""
    lines, n = [], 0
    for ch in text:
        hit = ch == symbol
        n += hit
        lines.append(f"{ch}={symbol}? {'yes' if hit else 'no'} {n}\n")
    return "".join(lines)


# -- generators --------------------------------------------------------------------------------

def _number(rng: random.Random, lo_digits: int, hi_digits: int) -> int:
    n = rng.randint(lo_digits, hi_digits)
    return rng.randint(10 ** (n - 1), 10**n - 1)


def make_add(rng: random.Random) -> Problem:
    a, b = _number(rng, *ADD_DIGITS), _number(rng, *ADD_DIGITS)
    q = rng.choice(QUESTIONS["add"]).format(a=a, b=b)
    return Problem("add", q, add_trace(a, b), str(a + b), ("add", a, b))


def make_sub(rng: random.Random) -> Problem:
    a, b = sorted((_number(rng, *ADD_DIGITS), _number(rng, *ADD_DIGITS)), reverse=True)
    q = rng.choice(QUESTIONS["sub"]).format(a=a, b=b)
    return Problem("sub", q, sub_trace(a, b), str(a - b), ("sub", a, b))


def make_count(rng: random.Random) -> Problem:
    """A number of COUNT_DIGITS digits in which one digit occurs 0-4 times: the trace reads it
    digit by digit with a running count (digits are tokens of their own, as in 9B-v2's vocabulary,
    so the model sees each one; letters inside BPE pieces it would have to spell first)."""
    digit = rng.choice("0123456789")
    others = "0123456789".replace(digit, "")
    p = rng.choice((0.0, 0.15, 0.3, 0.45))
    n_digits = rng.randint(*COUNT_DIGITS)
    chars = [digit if rng.random() < p else rng.choice(others) for _ in range(n_digits)]
    if chars[0] == "0":
        chars[0] = rng.choice("123456789".replace(digit, "") or "1")
    number = "".join(chars)
    n = number.count(digit)
    if n > 4:
        return make_count(rng)
    q = rng.choice(QUESTIONS["count"]).format(digit=digit, number=number)
    return Problem("count", q, count_trace(number, digit), str(n), ("count", number, digit))


GENERATORS = {"add": make_add, "sub": make_sub, "count": make_count}


def heldout(n_per_kind: int, seed: int = HELDOUT_SEED) -> list[Problem]:
    """The fixed held-out set: the first n problems of every kind, kinds interleaved."""
    if not 0 < n_per_kind <= HELDOUT_MAX:
        raise ValueError(f"n_per_kind must be in 1..{HELDOUT_MAX}")
    per_kind = [_heldout_kind(kind, seed)[:n_per_kind] for kind in KINDS]
    return [p for group in zip(*per_kind) for p in group]


@lru_cache(maxsize=8)
def _heldout_kind(kind: str, seed: int) -> tuple[Problem, ...]:
    rng = random.Random(seed * 31 + KINDS.index(kind))
    out, seen = [], set()
    while len(out) < HELDOUT_MAX:
        p = GENERATORS[kind](rng)
        if p.key not in seen:
            seen.add(p.key)
            out.append(p)
    return tuple(out)


def heldout_keys(seed: int = HELDOUT_SEED) -> frozenset:
    return frozenset(p.key for kind in KINDS for p in _heldout_kind(kind, seed))


def sample_problem(rng: random.Random, weights: dict[str, float],
                   exclude: frozenset = frozenset()) -> Problem:
    """A training problem of a kind drawn with `weights`, never one whose key is in `exclude`."""
    kinds = list(weights)
    kind = rng.choices(kinds, [weights[k] for k in kinds])[0]
    while True:
        p = GENERATORS[kind](rng)
        if p.key not in exclude:
            return p


# -- checking ----------------------------------------------------------------------------------

_ANSWER = re.compile(r"The answer is ([^\n]*?)\.(?=\s|$)")


def extract_answer(text: str) -> str | None:
    """X from the first "The answer is X." in the text after the last </think> (or in all of it
    when there is none)."""
    tail = text.rsplit("</think>", 1)[-1]
    m = _ANSWER.search(tail)
    return m.group(1).strip() if m else None


def is_correct(problem: Problem, text: str) -> bool:
    return extract_answer(text) == problem.answer


def verify_trace(problem: Problem) -> bool:
    """Re-derive the result from the trace's own lines (an independent check of the writers)."""
    lines = problem.trace.splitlines()
    if problem.kind in ("add", "sub"):
        op = "+" if problem.kind == "add" else "-"
        for line in lines:
            expr, rest = line.split(": ", 1)[1].split("=")
            x, y, c = map(int, expr.split(op))
            value = int(rest.split(" -> ")[0])
            if value != (x + y + c if op == "+" else x - y - c) or not 0 <= value <= 19:
                return False
        return str(int(lines[-1].split(" -> ")[1])) == problem.answer
    number, digit = problem.key[1], problem.key[2]
    n = 0
    for ch, line in zip(number, lines, strict=True):
        head, verdict, count = line.split(" ")
        n += ch == digit
        if head != f"{ch}={digit}?" or verdict != ("yes" if ch == digit else "no") \
                or count != str(n):
            return False
    return lines[-1].split(" ")[-1] == problem.answer
