"""What ``persuade score`` says about drift: a few lines at 80 columns, the full table in the provenance file.

The counts come from the local engine's scorer (:func:`serving.batch.score_file`); the Spark
engine's executors do not send theirs back, so a list scored on Spark says drift was not
computed. The report is :meth:`features.drift.DriftCounts.report` (aggregates only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from features.drift import NO_REFERENCE, STABLE, TOO_FEW, DriftCounts, no_reference_report

NOT_COMPUTED = "drift: not computed by the spark engine (score with --engine local to compare with training)"


def drift_report(counts: DriftCounts | None) -> dict[str, Any]:
    """The full report of a scored list (each column's bins with their training and scored shares)."""
    return counts.report(bins=True) if counts is not None else no_reference_report()


def drift_lines(report: Mapping[str, Any], *, top: int = 5, width: int = 80) -> list[str]:
    """A few lines for a terminal ``width`` columns wide: the columns with the highest PSI and their reading.

    Parameters
    ----------
    report : mapping
        :meth:`~features.drift.DriftCounts.report` (or :func:`~features.drift.no_reference_report`).
    top : int
        Most columns listed: those not stable, highest PSI first ("all stable" when none is).
    width : int
        Longest line; a longer column name is cut.
    """
    status, voters = report["status"], int(report["voters"])
    if status == NO_REFERENCE:
        return ["drift: not computed, the model has no drift reference (saved before models recorded one)"]
    if status == TOO_FEW:
        return [f"drift: too few voters to judge ({voters:,} scored; at least {report['min_voters']:,})"]
    rows = [(r, "") for r in report["features"]] + [(r, " (score)") for r in report["scores"]]
    rows.sort(key=lambda item: item[0]["psi"], reverse=True)
    drifted = [item for item in rows if item[0]["band"] != STABLE]
    if not drifted:
        first, suffix = rows[0]
        return [_cut(f"drift against training: all stable ({voters:,} voters; highest PSI "
                     f"{first['psi']:.3f}, {first['name']}{suffix})", width)]
    lines = [f"drift against the training population ({voters:,} voters scored):", "  PSI     reading   column"]
    lines += [_cut(f"  {row['psi']:<7.3f} {row['band']:<9} {row['name']}{suffix}", width)
              for row, suffix in drifted[:top]]
    if len(drifted) > top:
        lines.append(f"  and {len(drifted) - top} more not stable")
    if stable := len(rows) - len(drifted):
        lines.append(f"  the other {stable} column{'s are' if stable > 1 else ' is'} stable")
    return lines


def _cut(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ``...`` marking a cut."""
    return text if len(text) <= width else text[: width - 3] + "..."
