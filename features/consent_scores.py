"""Applying consent decisions to scores: masked uplift, the best eligible arm, suppression counts.

:func:`apply_eligibility` is the one place a decision (:meth:`features.consent.ConsentRules.for_voters`)
changes scores, for every engine and the HTTP service's lists alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.calling_hours import TIME_ZONE_COLUMN
from features.consent_rules import Arms, arm_deliveries, possible_reasons
from features.consent_table import PHONE_HASH_COLUMN, ConsentError

CONTROL_ARM = "control"  # the best_arm value of "contact nobody" (as serving.bundle.CONTROL_ARM)


def apply_eligibility(scores: pd.DataFrame, eligibility: pd.DataFrame, arms: Arms,
                      by_position: bool = False) -> pd.DataFrame:
    """Apply eligibility to scores before they are returned.

    For each arm, the uplift of voters who may not get it becomes NaN, and the columns
    ``eligible_<slug>`` (bool) and ``suppression_<slug>`` (a :class:`Reason` value, missing
    when eligible) follow its ``uplift_<slug>`` column. ``best_arm`` and
    ``best_uplift`` are chosen again among the eligible arms only: an ineligible arm
    is never a voter's best arm, and ``control`` (contact nobody) is always possible.
    When the eligibility has a ``phone_hash`` column (the number decided for), the
    scores get it after ``voter_id``: a dialer must dial that number and no other; and
    its ``time_zone`` (the voter's local time zone) after that, so that a dialer keeps
    the calling window at send time.

    Parameters
    ----------
    scores : DataFrame
        Output of ``ScoringModel.score``: ``voter_id``, ``uplift_<slug>`` per arm,
        ``best_arm``, ``best_uplift``.
    eligibility : DataFrame
        Output of :meth:`ConsentRules.for_voters` for (at least) the scored voters.
    arms : sequence of arms (``ScoringModel.arms``) or mapping of config arm specs
    by_position : bool
        The eligibility rows are the scores' rows, in order (one decision per row);
        otherwise rows are matched by ``voter_id``.

    Returns
    -------
    DataFrame
        A new frame, rows in the order of ``scores``.
    """
    specs = arm_deliveries(arms)
    if "voter_id" not in scores.columns:
        raise ConsentError("scores: the 'voter_id' column is missing")
    needed = [f"{p}_{slug}" for _, slug, _ in specs for p in ("eligible", "suppression")]
    missing = [c for c in ["voter_id", *needed] if c not in eligibility.columns]
    if missing:
        raise ConsentError(f"eligibility: columns {missing} are missing")
    if by_position:
        if len(eligibility) != len(scores):
            raise ConsentError(f"eligibility: {len(eligibility)} rows for {len(scores)} scored voters")
        rows = eligibility.reset_index(drop=True)
    else:
        lookup = eligibility.drop_duplicates("voter_id").set_index("voter_id")
        ids = scores.voter_id.astype(str)
        unknown = ~ids.isin(lookup.index)
        if unknown.any():
            raise ConsentError(f"eligibility: {int(unknown.sum())} scored voters have no eligibility row")
        rows = lookup.loc[ids.to_numpy()].reset_index()
    out = scores.copy()
    place = out.columns.get_loc("voter_id") + 1
    for column in (PHONE_HASH_COLUMN, TIME_ZONE_COLUMN):
        if column in rows.columns:
            out.insert(place, column, pd.array(rows[column].to_numpy(dtype=object), dtype="str"))
            place += 1
    uplift = []
    for _label, slug, _delivery in specs:
        col = f"uplift_{slug}"
        if col not in out.columns:
            raise ConsentError(f"scores: the column {col!r} is missing")
        ok = rows[f"eligible_{slug}"].to_numpy(dtype=bool)
        out[col] = np.where(ok, out[col].to_numpy(dtype=float), np.nan)
        out.insert(out.columns.get_loc(col) + 1, f"eligible_{slug}", ok)
        reason = pd.Series(rows[f"suppression_{slug}"].to_numpy(dtype=object), index=out.index).astype("str")
        out.insert(out.columns.get_loc(col) + 2, f"suppression_{slug}", reason)  # missing (NaN) where eligible
        uplift.append(out[col].to_numpy(dtype=float))
    matrix = np.column_stack(uplift) if uplift else np.zeros((len(out), 0))
    best, value = best_eligible_arm(matrix, [label for label, _, _ in specs])
    out["best_arm"] = best
    out["best_uplift"] = value
    return out


def best_eligible_arm(uplift: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Best arm per row among the allowed ones (NaN = not allowed), ``control`` if none is positive.

    The same choice as ``serving.bundle.best_arms`` (tested to agree); it lives here
    because ``features`` may not import ``serving``.
    """
    n = uplift.shape[0]
    if n == 0 or uplift.shape[1] == 0:
        return np.full(n, CONTROL_ARM, dtype=object), np.zeros(n)
    masked = np.where(np.isnan(uplift), -np.inf, uplift)
    idx = masked.argmax(axis=1)
    top = masked[np.arange(n), idx]
    arm = np.where(top > 0, np.asarray(labels, dtype=object)[idx], CONTROL_ARM)
    return arm, np.where(top > 0, top, 0.0)


def suppression_counts(eligibility: pd.DataFrame, arms: Arms) -> pd.DataFrame:
    """Voters per arm and outcome: ``arm``, ``delivery``, ``reason`` (``eligible`` or a code), ``voters``.

    Every reason code the arm's delivery can give appears (zero counts included), so a
    reviewer sees what was checked, not only what was found.
    """
    rows: list[dict[str, Any]] = []
    for label, slug, delivery in arm_deliveries(arms):
        reasons = eligibility[f"suppression_{slug}"].astype(object).where(eligibility[f"eligible_{slug}"] == False)  # noqa: E712
        counts = reasons.fillna("eligible").value_counts()
        possible = {r.value for r in possible_reasons(delivery)}
        for reason in ["eligible", *sorted(possible)]:
            rows.append({"arm": label, "delivery": delivery.value, "reason": reason,
                         "voters": int(counts.get(reason, 0))})
    return pd.DataFrame(rows, columns=["arm", "delivery", "reason", "voters"])
