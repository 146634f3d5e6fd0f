"""What ``persuade train`` prints about each arm's candidates: readable at 80 columns."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pandas as pd
from rich.console import Console

from training.arm_choice import MODEL
from training.choice_summary import HEADERS, arm_choice_table


def test_every_candidate_value_and_its_se_print_whole_at_80_columns():
    values = dict(zip(HEADERS, [0.0, 0.01342, 0.01055, 0.01388, 0.01517, 0.01691, 0.00975, 0.01249], strict=True))
    rows = [{"arm": arm, "candidate": c, "value": v, "se": 0.00111 + 0.01 * (c == MODEL), "chosen": c == MODEL,
             "stability": 0.5 if c == MODEL else float("nan")}
            for arm in ("Civic Duty", "[Neighbors]", "Hawthorne", "Self") for c, v in values.items()]
    result = SimpleNamespace(arm_selection=pd.DataFrame(rows), selection_metric_name="policy_value",
                             budgets=[0.1, 0.2, 0.3], cv_repeats=2)
    console = Console(width=80, record=True, color_system=None)
    console.print(arm_choice_table(result))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    numbers = set(re.findall(r"\*?\d+\.\d\d|±\d+\.\d\d", text))
    for v in values.values():  # each value and SE on its own line, never cut by the column width
        assert f"{v * 1000:.2f}" in {n.lstrip("*") for n in numbers}
    assert "*9.75" in numbers and "±11.11" in numbers and "±1.11" in numbers
    assert "[Neighbors]" in text  # an arm label is printed as it is, never read as markup
    for name in ("constant", "near 0.5 x reach", "near 0.5 + features", "shape + features", "per-arm shape"):
        assert name in text  # whole words
    assert all(line.rstrip().endswith(("┓", "┃", "┩", "│", "┘")) for line in text.splitlines()
               if line.lstrip().startswith(("┏", "┃", "┡", "│", "└")))  # no column cut off at the edge
    assert "chose the served one: Civic Duty 50%, [Neighbors] 50%, Hawthorne 50%" in " ".join(text.split())
