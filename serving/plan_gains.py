"""Expected gain of an attempt, per voter and arm: what the planner maximizes.

The uplift models are intent-to-treat: fitted on *assignment*, so a phone arm's uplift
already averages over the voters the calls reached and the ones they did not. Where
the model carries a contact-rate model for the arm's channel (``ScoringModel.contact_rate``,
P(reached | attempted) learned from the contact log), and assuming a voter who is not
reached is not moved::

    ITT(x)               = attempt_rate * P_exp(reached | attempted, x) * uplift_if_reached(x)
    uplift_if_reached(x) = ITT(x) / (attempt_rate * P_exp(reached | attempted, x))
    expected_gain(x)     = P_plan(reached | x) * uplift_if_reached(x)

``P_plan`` is the experiment's contact rate unless the program expects another one:
``channels.<channel>.contact_rate`` scales each voter's P(reached) by
``contact_rate / reached_rate of the experiment`` (capped at 1). With the experiment's
rates (the default) the gain of an attempted voter is ``ITT / attempt_rate``: the
uplift of a voter who is *attempted*, which is what a call list buys. Channels without
a contact-rate model (mail; text) count as always reached: gain = ITT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.table_files import open_dataset
from serving.batch import DEFAULT_CHUNK, iter_chunks
from serving.bundle import ScoringModel
from serving.plan_costs import PlanError, ProgramCosts
from serving.voters import id_strings

MIN_P = 1e-6


@dataclass
class ExpectedGains:
    """Per voter and arm (columns in the model's arm order).

    Attributes
    ----------
    itt : ndarray (n, k)
        The model's intent-to-treat uplift.
    p_reached : ndarray (n, k)
        P(reached) of an attempt in the planned program (1 where the channel has no
        contact-rate model).
    gain : ndarray (n, k)
        Expected gain of an attempt; NaN where the arm is not allowed.
    baseline : ndarray (n,) or None
        The model's predicted outcome without contact (its turnout model, for a turnout
        outcome); None for a model without one. The outcome model of ``persuade measure``.
    """

    itt: np.ndarray
    p_reached: np.ndarray
    gain: np.ndarray
    baseline: np.ndarray | None = None

    def __len__(self) -> int:
        return self.gain.shape[0]

    def restrict(self, allowed: np.ndarray | None) -> ExpectedGains:
        """The same gains with NaN where ``allowed`` (bool, n x k) is False."""
        if allowed is None:
            return self
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape != self.gain.shape:
            raise PlanError("eligibility", f"expected shape {self.gain.shape} (voters x arms), got {allowed.shape}")
        return ExpectedGains(self.itt, self.p_reached, np.where(allowed, self.gain, np.nan), self.baseline)

    @classmethod
    def concat(cls, parts: Sequence[ExpectedGains], n_arms: int) -> ExpectedGains:
        if not parts:
            empty = np.zeros((0, n_arms))
            return cls(empty, empty.copy(), empty.copy())
        baseline = None if any(p.baseline is None for p in parts) else np.concatenate([p.baseline for p in parts])
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("itt", "p_reached", "gain")), baseline)


def expected_gains(
    model: ScoringModel,
    X: pd.DataFrame,
    costs: ProgramCosts | None = None,
    allowed: np.ndarray | None = None,
) -> ExpectedGains:
    """Expected gain of an attempt per voter and arm (see the module docstring).

    Parameters
    ----------
    model : ScoringModel
    X : DataFrame
        Transformed features (``model.transform``).
    costs : ProgramCosts, optional
        Its ``channels.<channel>.contact_rate`` sets the program's contact rates.
    allowed : ndarray of bool (n, k), optional
        Eligibility: False (or a NaN uplift upstream) means the arm may not be used.
    """
    limits = (costs or ProgramCosts()).limits(model)
    has_baseline = model.has_turnout and model.outcome.get("kind") == "turnout" and len(X) > 0
    baseline = model.predict_turnout(X) if has_baseline else None
    itt = model.predict_uplift(X, baseline)
    p_reached = np.ones_like(itt)
    factor = np.ones_like(itt)
    rates = model.predict_contact_rate(X) if len(X) else {}
    for j, arm in enumerate(model.arms):
        target = limits[arm.channel].contact_rate if arm.channel in limits else None
        if arm.channel not in model.contact_rate:
            if target is not None:
                raise PlanError(f"costs.channels.{arm.channel}.contact_rate",
                                f"the model has no contact-rate model for {arm.channel} "
                                "(its contact log had no reached flag for it)")
            continue
        info = model.contact_rate_info.get(arm.channel, {})
        p_exp = np.clip(rates[arm.channel], MIN_P, 1.0) if len(X) else np.zeros(0)
        p_plan = p_exp if target is None else np.minimum(1.0, p_exp * target / info.get("reached_rate", 1.0))
        p_reached[:, j] = p_plan
        factor[:, j] = p_plan / (p_exp * info.get("attempt_rate", 1.0))
    return ExpectedGains(itt, p_reached, itt * factor, baseline).restrict(allowed)


def gains_from_file(
    model: ScoringModel,
    path: str | Path,
    costs: ProgramCosts | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, ExpectedGains]:
    """Voter ids and expected gains of a voter file, streamed in chunks.

    Only the id and the model's feature columns are read (never PII); memory holds
    the ids and ``n x arms`` gains, not the file.
    """
    ids, parts = [], []
    for chunk in iter_chunks(path, model, chunk_size):
        X = model.transform(chunk)
        parts.append(expected_gains(model, X, costs))
        ids.append(chunk[model.id_column].astype(str).to_numpy())
        if on_chunk is not None:
            on_chunk(len(chunk))
    return (np.concatenate(ids) if ids else id_strings([])), ExpectedGains.concat(parts, len(model.arms))


def clusters_from_file(model: ScoringModel, path: str | Path, ids: np.ndarray) -> pd.Series | None:
    """Each voter's cluster (the model's group column: household, precinct) from a voter file.

    Aligned to ``ids``; named after the column. None when the model records no group
    column or the file does not have it (``persuade measure`` then clusters by voter).
    """
    column = model.metadata.get("group_column")
    dataset = open_dataset(path, {model.id_column: pa.string(), column: pa.string()}) if column else None
    if dataset is None or column not in dataset.schema.names:
        return None
    table = dataset.to_table(columns=[model.id_column, column]).to_pandas()
    lookup = pd.Series(table[column].astype(str).to_numpy(), index=table[model.id_column].astype(str).to_numpy())
    lookup = lookup[~lookup.index.duplicated()]
    return pd.Series(lookup.reindex(id_strings(ids)).to_numpy(), name=column)
