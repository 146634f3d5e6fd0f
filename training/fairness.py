"""The fairness audit: how targeting at a contact budget differs across protected groups.

Protected attributes (``protected:`` in the run config) never enter the features, but
they are kept in the experiment frame so that this audit can look at them. For each
attribute and each arm (and for "any arm", targeting by the best arm's uplift), the
audit targets the top ``budget_fraction`` of the hold-out voters by predicted uplift
(only voters with a positive predicted uplift are ever targeted) and reports per group:

- the targeting rate and its ratio to the reference group's rate (flagged when
  outside ``band``, by default 0.8 to 1.25: the four-fifths rule, both ways);
- the mean predicted uplift;
- the observed uplift on the hold-out (difference in means, arm vs control, within the
  group), for the whole group and for its targeted voters.

Groups are built by role, not by column name:

- the age column (``audit.age_column``, whatever it is called; unset: a protected column
  named ``age``) in ``audit.age_bands`` (``[30, 45, 65]`` gives <30, 30-44, 45-64, 65+);
- another numeric attribute in its ``audit.bands`` cut points when given, else, when it
  has more than a dozen values, in ``audit.quantile_bands`` quantile bands, a band too
  small to judge (under ``min_group_size`` voters) merged into its smaller neighbour;
- any other attribute by value, its groups too small to judge pooled into one
  ``too small`` group when there are two or more of them.

Missing values are their own group. No attribute is ever listed one value at a time.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from features.config import RunConfig

ANY_ARM = "any arm"
MISSING_GROUP = "missing"
TOO_SMALL = "too small"  # two or more groups of one attribute under min_group_size, pooled
MANY_VALUES = 12  # a numeric attribute with more distinct values than this is banded
_MIN_CELL = 20  # fewer treated or control voters than this: no observed uplift


class FairnessAudit:
    """Targeting rates, predicted and observed uplift by protected group.

    Parameters
    ----------
    attributes : sequence of str
        Protected attribute columns to audit.
    budget_fraction : float
        Share of voters contacted (0 < budget <= 1).
    band : (float, float)
        Acceptable range of a group's targeting rate divided by the reference group's.
    age_bands : sequence of int
        Cut points of the age bands; used for ``age_attribute``.
    reference : mapping of str to str, optional
        Reference group per attribute; default: the attribute's largest group (the
        first by name among equally large ones).
    min_group_size : int
        Groups smaller than this are reported but not flagged (their ratio is noise).
    age_attribute : str or None
        The attribute banded by ``age_bands`` (None: none is).
    bands : mapping of str to sequence of float, optional
        Cut points of other numeric attributes.
    quantile_bands : int
        Quantile bands of a numeric attribute with more than :data:`MANY_VALUES` values
        and no cut points (fewer when the hold-out is too small to fill them).
    seed : int
        Seed of the random order that breaks ties in predicted uplift at the budget's
        edge (row order could correlate with a group: households, clusters).
    """

    def __init__(
        self,
        attributes: Sequence[str],
        budget_fraction: float = 0.2,
        band: tuple[float, float] = (0.8, 1.25),
        age_bands: Sequence[int] = (30, 45, 65),
        reference: Mapping[str, str] | None = None,
        min_group_size: int = 100,
        age_attribute: str | None = "age",
        seed: int = 0,
        bands: Mapping[str, Sequence[float]] | None = None,
        quantile_bands: int = 4,
    ):
        self.attributes = attributes
        self.budget_fraction = budget_fraction
        self.band = band
        self.age_bands = age_bands
        self.reference = reference
        self.min_group_size = min_group_size
        self.age_attribute = age_attribute
        self.seed = seed
        self.bands = bands
        self.quantile_bands = quantile_bands

    @classmethod
    def from_config(cls, config: RunConfig) -> FairnessAudit:
        """The audit a run config asks for (``protected`` and ``audit``)."""
        spec = config.audit
        return cls(config.protected, budget_fraction=spec.budget_fraction, band=spec.band, age_bands=spec.age_bands,
                   reference=spec.reference, min_group_size=spec.min_group_size,
                   age_attribute=spec.age_attribute(config.protected), bands=spec.bands,
                   quantile_bands=spec.quantile_bands)

    def _validate(self) -> None:
        if not 0 < self.budget_fraction <= 1:
            raise ValueError(f"budget_fraction must be in (0, 1], got {self.budget_fraction}")
        low, high = self.band
        if not 0 < low <= 1 <= high:
            raise ValueError(f"band must be (low <= 1 <= high) with low > 0, got {self.band}")
        for name, cuts in {"age_bands": self.age_bands, **(self.bands or {})}.items():
            if not len(cuts) or list(cuts) != sorted(set(cuts)):
                raise ValueError(f"{name}: bands must be increasing cut points, got {list(cuts)}")
        if not 2 <= self.quantile_bands:
            raise ValueError(f"quantile_bands must be at least 2, got {self.quantile_bands}")

    def groups(self, frame: pd.DataFrame, attribute: str) -> pd.Series:
        """The audit group of each row for one attribute: bands, values or ``too small``; ``missing``."""
        if attribute not in frame.columns:
            raise ValueError(
                f"protected attribute {attribute!r} is not in the data: the fairness audit needs it "
                "(it is kept out of the features, not out of the data)"
            )
        values = frame[attribute]
        cuts = self.age_bands if attribute == self.age_attribute else (self.bands or {}).get(attribute)
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if cuts is None and numeric and values.nunique() > MANY_VALUES:
            cuts = self._quantile_cuts(values.dropna().to_numpy(dtype=float))
        if cuts is not None:
            number = pd.to_numeric(values, errors="coerce")
            if (number.isna() & values.notna()).any():
                raise ValueError(f"protected attribute {attribute!r} is banded (audit) but has values that are not "
                                 f"numbers")
            labels = _band_labels(list(cuts), integers=bool((number.dropna() % 1 == 0).all()))
            banded = pd.cut(number, [-np.inf, *cuts, np.inf], right=False, labels=labels)
            return banded.astype(object).where(banded.notna(), MISSING_GROUP)
        text = values.astype("string")
        group = text.astype(object).where(text.notna(), MISSING_GROUP)
        sizes = group[group != MISSING_GROUP].value_counts()
        small = sizes.index[sizes < self.min_group_size]
        if len(small) >= 2 and len(small) < len(sizes):  # one row for them all, never one per value
            group = group.where(~group.isin(small), TOO_SMALL)
        return group

    def _quantile_cuts(self, values: np.ndarray) -> list[float]:
        """Cut points at the quantiles of ``values``, each band holding at least ``min_group_size``
        values where possible (a smaller band is merged into its smaller neighbour)."""
        probs = np.arange(1, self.quantile_bands) / self.quantile_bands
        cuts = sorted({float(q) for q in np.quantile(values, probs, method="higher")} - {float(values.min())})
        counts = np.bincount(np.searchsorted(cuts, values, side="right"), minlength=len(cuts) + 1)
        while cuts and counts.min() < self.min_group_size:
            i = int(np.argmin(counts))
            j = i - 1 if i == len(cuts) or (i > 0 and counts[i - 1] <= counts[i + 1]) else i  # the cut to drop
            del cuts[j]
            counts = np.bincount(np.searchsorted(cuts, values, side="right"), minlength=len(cuts) + 1)
        return cuts

    def audit(
        self,
        frame: pd.DataFrame,
        uplift: pd.DataFrame,
        assigned: np.ndarray,
        outcome: np.ndarray,
        control: str,
        allowed: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """Audit one model's targeting on the hold-out.

        Parameters
        ----------
        frame : DataFrame
            Hold-out rows with the protected attribute columns.
        uplift : DataFrame
            Predicted uplift, one column per arm label, rows as ``frame``.
        assigned : array of str
            The arm each hold-out voter was randomized to (control included).
        outcome : array of float
            The observed outcome.
        control : str
            The control label.
        allowed : DataFrame of bool, optional
            Per arm (columns as ``uplift``), whether the voter may get it (the consent
            rules); voters who may not are never targeted with it. Default: all may.

        Returns
        -------
        DataFrame
            One row per arm (and ``any arm``), attribute and group: ``voters``,
            ``targeted``, ``targeting_rate``, ``ratio_to_reference``, ``reference``,
            ``mean_predicted_uplift``, ``observed_uplift``, ``observed_uplift_targeted``,
            ``flag`` (``outside band``, ``small group`` (also the pooled ``too small`` group) or empty).
        """
        self._validate()
        n = len(frame)
        if len(uplift) != n or len(assigned) != n or len(outcome) != n:
            raise ValueError("frame, uplift, assigned and outcome must have the same number of rows")
        assigned = np.asarray(assigned).astype(str)
        y = np.asarray(outcome, dtype=float)
        arms = list(uplift.columns)
        if allowed is not None and (list(allowed.columns) != arms or len(allowed) != n):
            raise ValueError("allowed must have the columns and rows of uplift")
        values = uplift.to_numpy(dtype=float)
        ok = np.ones_like(values, dtype=bool) if allowed is None else allowed.to_numpy(dtype=bool)
        targetable = np.where(ok, values, np.nan)
        policies = {arm: (values[:, j], targetable[:, j], assigned == arm) for j, arm in enumerate(arms)}
        best_allowed = np.where(np.isnan(targetable), -np.inf, targetable).max(axis=1) if arms else np.zeros(n)
        best = values.max(axis=1) if arms else np.zeros(n)
        policies[ANY_ARM] = (best, np.where(np.isfinite(best_allowed), best_allowed, np.nan), np.isin(assigned, arms))
        is_control = assigned == control
        rows = []
        for attribute in self.attributes:
            group = self.groups(frame, attribute).to_numpy()
            names = pd.Series(group).value_counts()
            judged = names.drop(TOO_SMALL, errors="ignore")  # pooled small groups are never the reference
            largest = sorted((str(g) for g in judged.index[judged == judged.max()]), key=str) if len(judged) else []
            ref = (self.reference or {}).get(attribute, largest[0] if largest else None)
            if ref is not None and ref not in names.index:
                raise ValueError(f"audit.reference: group {ref!r} of {attribute!r} is not in the data "
                                 f"(groups: {sorted(map(str, names.index))})")
            for arm, (score, target_score, treated) in policies.items():
                targeted = self._targets(target_score)
                rates = {g: targeted[group == g].mean() for g in names.index}
                for g in _ordered(names.index):
                    in_g = group == g
                    ratio = rates[g] / rates[ref] if rates[ref] > 0 else np.nan
                    small = int(in_g.sum()) < self.min_group_size or g == TOO_SMALL
                    outside = not (self.band[0] <= ratio <= self.band[1]) if np.isfinite(ratio) else rates[g] > 0
                    rows.append({
                        "arm": arm, "attribute": attribute, "group": str(g), "voters": int(in_g.sum()),
                        "targeted": int(targeted[in_g].sum()), "targeting_rate": float(rates[g]),
                        "ratio_to_reference": float(ratio), "reference": g == ref,
                        "mean_predicted_uplift": float(score[in_g].mean()),
                        "observed_uplift": _diff(y, treated, is_control, in_g),
                        "observed_uplift_targeted": _diff(y, treated, is_control, in_g & targeted),
                        "flag": "small group" if small else ("outside band" if outside else ""),
                    })
        return pd.DataFrame(rows, columns=[
            "arm", "attribute", "group", "voters", "targeted", "targeting_rate", "ratio_to_reference",
            "reference", "mean_predicted_uplift", "observed_uplift", "observed_uplift_targeted", "flag",
        ])

    def _targets(self, score: np.ndarray) -> np.ndarray:
        """The top ``budget_fraction`` of rows by score, positive scores only (NaN: not allowed)."""
        allowed = np.where(np.isnan(score), -np.inf, score)
        k = round(self.budget_fraction * len(score))
        shuffled = np.random.default_rng(self.seed).permutation(len(score))
        order = shuffled[np.argsort(-allowed[shuffled], kind="stable")][:k]
        targeted = np.zeros(len(score), dtype=bool)
        targeted[order] = True
        return targeted & (allowed > 0)


def _band_labels(cuts: list[float], integers: bool) -> list[str]:
    """Labels of the bands ``[-inf, c0), [c0, c1), ..., [cn, inf)``: ``<30``, ``30-44``, ``65+``
    for whole numbers, ``<0.5``, ``0.5 to <1.5``, ``2.5+`` otherwise."""
    if not cuts:
        return ["all"]  # every band merged: too few voters to compare any
    whole = integers and all(float(c).is_integer() and c >= 0 for c in cuts)
    middle = [f"{a:g}-{b - 1:g}" if whole else f"{a:g} to <{b:g}" for a, b in itertools.pairwise(cuts)]
    return [f"<{cuts[0]:g}", *middle, f"{cuts[-1]:g}+"]


_LEADING_NUMBER = re.compile(r"^(<)?(-?\d+(?:\.\d+)?)")


def _ordered(groups: pd.Index) -> list:
    """Groups in a readable order: bands and numbers by value, labels by name, ``too small`` and ``missing`` last."""
    def key(g: object) -> tuple:
        text = str(g)
        if text in (TOO_SMALL, MISSING_GROUP):
            return (2 if text == TOO_SMALL else 3, 0.0, 0, text)
        match = _LEADING_NUMBER.match(text)
        return (0, float(match[2]), 0 if match[1] else 1, text) if match else (1, 0.0, 0, text)
    return sorted(groups, key=key)


def _diff(y: np.ndarray, treated: np.ndarray, control: np.ndarray, rows: np.ndarray) -> float:
    t, c = treated & rows, control & rows
    if t.sum() < _MIN_CELL or c.sum() < _MIN_CELL:
        return float("nan")
    return float(y[t].mean() - y[c].mean())


def flagged(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of an audit table whose ratio is outside the band."""
    return table[table.flag == "outside band"]
