"""Write this example's data: unit conversions with exact answers, seeded.

    python examples/unit_conversions/make_data.py      # rewrites train.jsonl and test.jsonl

Each row: ``id``, ``question`` ("How many metres are in 3.5 kilometres?"), ``solution``
(one worked line) and ``answer`` (a number). The factors are exact (1 km = 1000 m,
1 ft = 12 in, ...), so every answer is exact too; values are chosen so answers have at
most two decimals. The same seed always writes the same files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 16
TRAIN_ROWS, TEST_ROWS = 300, 60
HERE = Path(__file__).resolve().parent

# (from unit, plural, to unit, plural, how many "to" in one "from")
FACTORS = [
    ("kilometre", "kilometres", "metre", "metres", 1000),
    ("metre", "metres", "centimetre", "centimetres", 100),
    ("centimetre", "centimetres", "millimetre", "millimetres", 10),
    ("kilogram", "kilograms", "gram", "grams", 1000),
    ("litre", "litres", "millilitre", "millilitres", 1000),
    ("hour", "hours", "minute", "minutes", 60),
    ("minute", "minutes", "second", "seconds", 60),
    ("day", "days", "hour", "hours", 24),
    ("week", "weeks", "day", "days", 7),
    ("foot", "feet", "inch", "inches", 12),
    ("yard", "yards", "foot", "feet", 3),
    ("pound", "pounds", "ounce", "ounces", 16),
    ("hour", "hours", "second", "seconds", 3600),
    ("kilometre", "kilometres", "centimetre", "centimetres", 100000),
]


def number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def row(rng: random.Random, index: int) -> dict[str, object]:
    big, bigs, small, smalls, factor = rng.choice(FACTORS)
    if rng.random() < 0.5:  # big -> small: multiply; amounts like 3, 2.5, 0.25
        amount = rng.choice([rng.randint(1, 40), rng.randint(1, 19) + 0.5, rng.choice([0.25, 0.75, 1.25])])
        answer = amount * factor
        question = f"How many {smalls} are in {number(amount)} {bigs if amount != 1 else big}?"
        solution = f"One {big} is {factor} {smalls}, so {number(amount)} x {factor} = {number(answer)} {smalls}."
    else:  # small -> big: divide; amounts that give a whole or half result
        answer = rng.choice([rng.randint(1, 30), rng.randint(1, 9) + 0.5])
        amount = answer * factor
        question = f"How many {bigs} are in {number(amount)} {smalls}?"
        solution = f"One {big} is {factor} {smalls}, so {number(amount)} / {factor} = {number(answer)} {bigs}."
    return {"id": f"uc-{index:04d}", "question": question, "solution": solution, "answer": float(number(answer)) if "." in number(answer) else int(answer)}


def main() -> None:
    rng = random.Random(SEED)
    rows, seen = [], set()
    while len(rows) < TRAIN_ROWS + TEST_ROWS:
        candidate = row(rng, len(rows))
        if candidate["question"] not in seen:  # no question in both splits, none twice
            seen.add(candidate["question"])
            rows.append(candidate)
    for name, part in (("train.jsonl", rows[:TRAIN_ROWS]), ("test.jsonl", rows[TRAIN_ROWS:])):
        (HERE / name).write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
        print(f"wrote {len(part)} rows to {HERE / name}")


if __name__ == "__main__":
    main()
