"""What ``persuade train`` says about each arm's served model against the references.

The per-arm table of :func:`training.arm_choice.one_standard_error_choice` (grouped-CV
value of every candidate by ``uplift.selection_metric``, with its standard error) and, when an arm serves its
average effect, the plain statement of why and the interval of that effect.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from training import arm_choice

# each candidate's name in the table, simplest first
HEADERS = {
    arm_choice.CONSTANT: "constant", arm_choice.TURNOUT_05: "near 0.5", arm_choice.TURNOUT_SHAPE: "turnout shape",
    arm_choice.TURNOUT_05_REACH: "near 0.5 x reach",
    arm_choice.TURNOUT_05_BOOSTED: "near 0.5 + features", arm_choice.TURNOUT_SHAPE_BOOSTED: "shape + features",
    arm_choice.MODEL: "model", arm_choice.MODEL_PER_ARM: "per-arm shape",
}
Z95 = 1.959964


def arm_choice_table(result) -> Table:
    """Rows: candidates, simplest first; columns: arms; cells: CV score x1000 over its SE (a rich Table).

    ``result`` is a :class:`training.fit.FitResult`; ``*`` marks each arm's served
    candidate. Candidates are rows so that seven of them and a few arms fit 80 columns
    with whole words. Cells are plain text (never rich markup), so an arm label with
    brackets prints as it is.
    """
    table = result.arm_selection
    metric = result.selection_metric_name
    budgets = "/".join(f"{b:.0%}" for b in result.budgets)
    title = (f"Grouped CV, {result.cv_repeats} repeat(s): {metric} x1000 ± SE"
             + (f" at {budgets} budgets" if metric == "policy_value" else "") + "; * = served")
    candidates = list(dict.fromkeys(table.candidate))
    arms = list(dict.fromkeys(table.arm))
    chosen = table[table.chosen].set_index("arm")
    stable = ", ".join(f"{arm} {chosen.loc[arm, 'stability']:.0%}" for arm in arms if arm in chosen.index)
    out = Table(title=title, caption=Text(f"share of CV repeats that chose the served one: {stable}"),
                caption_justify="left")
    out.add_column("candidate", overflow="fold")
    for arm in arms:
        out.add_column(Text(arm), justify="right", overflow="fold")
    cells = table.set_index(["candidate", "arm"])
    for c in candidates:
        row = [Text(HEADERS.get(c, c))]
        for arm in arms:
            if (c, arm) not in cells.index:
                row.append(Text("-"))
                continue
            cell = cells.loc[(c, arm)]  # value over its SE: two short lines stay whole
            row.append(Text(f"{'*' if cell.chosen else ''}{cell.value * 1000:.2f}\n±{cell.se * 1000:.2f}"))
        out.add_row(*row)
    return out


def constant_statement(result) -> list[str]:
    """Plain sentences for arms that serve their average effect (empty when none do)."""
    if not result.constant_arms:
        return []
    lines = []
    if len(result.constant_arms) == len(result.served):
        lines.append("Effect heterogeneity is not detectable at this size: the model serves each arm's average "
                     "effect (grouped CV found no ranking better than it by more than one standard error).")
    else:
        lines.append(f"Arms serving their average effect (no better ranking found by grouped CV): "
                     f"{', '.join(result.constant_arms)}.")
    for arm in result.constant_arms:
        effect = result.arm_effects[arm]
        low, high = effect["ate"] - Z95 * effect["se"], effect["ate"] + Z95 * effect["se"]
        lines.append(f"  {arm}: average effect {effect['ate']:.4f}, 95% CI [{low:.4f}, {high:.4f}]")
    return lines
