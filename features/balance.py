"""Balance and leakage check before fitting: do the features predict the assigned arm?

In a randomized experiment nothing recorded before assignment predicts it, beyond
chance. A feature that does is post-treatment (recorded after contact: "conversation
took place", "reached") or leaked, and an uplift model would learn the arm from it.
Two checks, both on the rows a run fits on:

- **Per feature**, per arm against control: the standardized mean difference (SMD;
  categoricals one-hot, a missing-value indicator where values are missing) and the
  p-value of the difference in means with a cluster-robust variance (clusters: the
  config's ``group_column``, so household or precinct randomization is not mistaken
  for evidence). A feature is refused when an arm's ``|SMD| > balance.max_abs_smd``
  *and* its Bonferroni-adjusted p-value is below ``balance.p_value``: large and beyond
  chance. At 500 respondents a chance SMD of 0.15 is common and is not refused; at
  300,000 voters a real SMD of 0.1 is never chance.
- **All features together**: a small LightGBM classifier of assigned (any arm) vs
  control, cross-validated over folds of whole groups (sklearn's ``GroupKFold``). Its
  out-of-fold scores (ranked within each fold) give an AUC whose null of 0.5 is tested
  with a cluster-robust DeLong variance (one-sided). When the AUC exceeds
  ``balance.max_auc`` beyond chance, the features that carry the classifier's gain are
  refused by name. This catches what a difference in means misses (a spread, a
  missingness pattern, an interaction).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy import stats
from sklearn.model_selection import GroupKFold

from features.config import RunConfig
from features.pipeline import FeaturePipeline
from features.settings import Settings

MAX_LEVELS = 20  # one-hot levels per categorical feature; rarer levels are pooled as "(other)"
CLASSIFIER = {"n_estimators": 50, "learning_rate": 0.1, "num_leaves": 7, "min_child_samples": 20, "verbose": -1}
GAIN_SHARE = 0.2  # a refused classifier names the features carrying at least this share of its gain


@dataclass
class BalanceCheck:
    """What the check measured (see the module docstring).

    Attributes
    ----------
    table : DataFrame
        One row per (feature, level, arm): ``mean_arm``, ``mean_control``, ``smd``,
        ``p_value``, ``p_adjusted`` (Bonferroni over all rows) and ``refused``.
    auc, auc_p_value : float or None
        The grouped-CV classifier's AUC and its one-sided p-value (None when fewer than
        two groups).
    gain_share : dict
        Each feature's share of the classifier's total gain.
    refused : dict
        Refused feature -> why.
    seconds : float
        Time the check took.
    """

    table: pd.DataFrame
    auc: float | None
    auc_p_value: float | None
    gain_share: dict[str, float]
    refused: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict:
        """The headline numbers (JSON-ready): for the run's metadata and the report."""
        smd = self.table["smd"].abs().dropna()
        worst = self.table.loc[smd.idxmax()] if len(smd) else None
        return {
            "features": int(self.table["feature"].nunique()) if len(self.table) else 0,
            "max_abs_smd": None if worst is None else round(float(abs(worst["smd"])), 6),
            "max_abs_smd_at": None if worst is None else _where(worst),
            "classifier_auc": None if self.auc is None else round(self.auc, 6),
            "classifier_p_value": self.auc_p_value,
            "gain_share": {k: round(v, 4) for k, v in self.gain_share.items()},
            "refused": sorted(self.refused),
            "seconds": round(self.seconds, 2),
        }

    def problems(self) -> list[str]:
        """One refusal per refused feature."""
        return [f"feature {name!r} predicts the assigned arm: {why}; a post-treatment (recorded after contact) "
                f"or leaked column cannot be a feature: remove it from 'features'"
                for name, why in self.refused.items()]


def _smd_text(smd: float) -> str:
    return f"{smd:.2f}" if np.isfinite(smd) else "unbounded (constant within the arm and within control)"


def _where(row: pd.Series) -> str:
    level = f"={row['level']}" if row["level"] else ""
    return f"{row['feature']}{level}, {row['arm']} vs control"


def _indicator_columns(X: pd.DataFrame) -> tuple[list[tuple[str, str]], np.ndarray]:
    """The columns compared between arms: numeric features, one-hot levels, missing indicators."""
    names, cols = [], []
    for col in X.columns:
        values = X[col]
        missing = values.isna().to_numpy()
        if isinstance(values.dtype, pd.CategoricalDtype):
            counts = values.value_counts()
            top = [lvl for lvl in counts.index[:MAX_LEVELS] if counts[lvl] > 0]
            codes = values.astype("object").to_numpy()
            for lvl in top:
                names.append((col, str(lvl)))
                cols.append((codes == lvl).astype(float))
            rest = ~missing & ~np.isin(codes, top)
            if rest.any():
                names.append((col, "(other)"))
                cols.append(rest.astype(float))
        elif not missing.all():
            names.append((col, ""))
            cols.append(values.to_numpy(dtype=float))
        if missing.any():
            names.append((col, "(missing)"))
            cols.append(missing.astype(float))
    return names, np.column_stack(cols) if cols else np.empty((len(X), 0))


def _cluster_var(phi: np.ndarray, groups: np.ndarray, rows: np.ndarray) -> float:
    """Cluster-robust variance of the sum of the influence values ``phi`` of ``rows`` (a mask)."""
    sums = np.bincount(groups[rows], weights=phi[rows])
    used = int(np.count_nonzero(np.bincount(groups[rows])))
    return float(np.sum(sums**2)) * used / max(used - 1, 1)


def _mean_difference(x: np.ndarray, treated: np.ndarray, control: np.ndarray,
                     groups: np.ndarray) -> tuple[float, float, float, float]:
    """Means of ``x`` in the two groups, their SMD and the cluster-robust two-sided p-value."""
    ok = ~np.isnan(x)
    xt, xc = x[treated & ok], x[control & ok]
    if len(xt) < 2 or len(xc) < 2:
        return np.nan, np.nan, np.nan, np.nan
    mt, mc = float(xt.mean()), float(xc.mean())
    diff = mt - mc
    scale = np.sqrt((xt.var(ddof=1) + xc.var(ddof=1)) / 2)
    phi = np.zeros(len(x))
    phi[treated & ok] = (xt - mt) / len(xt)
    phi[control & ok] = -(xc - mc) / len(xc)
    var = _cluster_var(phi, groups, (treated | control) & ok)
    if diff == 0:
        return mt, mc, 0.0, 1.0
    smd = diff / scale if scale > 0 else np.sign(diff) * np.inf
    p = 2 * stats.norm.sf(abs(diff) / np.sqrt(var)) if var > 0 else 0.0
    return mt, mc, float(smd), float(p)


def _placements(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each treated row's share of control rows it outranks, and each control row's share of
    treated rows that outrank it (ties count half): DeLong's placement values."""
    pos, neg = np.sort(scores[labels]), np.sort(scores[~labels])
    low, high = np.searchsorted(neg, scores[labels], "left"), np.searchsorted(neg, scores[labels], "right")
    v10 = (low + 0.5 * (high - low)) / len(neg)
    low, high = np.searchsorted(pos, scores[~labels], "left"), np.searchsorted(pos, scores[~labels], "right")
    v01 = (len(pos) - high + 0.5 * (high - low)) / len(pos)
    return v10, v01


def grouped_auc(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray,
                groups: np.ndarray) -> tuple[float, float]:
    """Out-of-fold AUC of ``scores`` for 0/1 ``labels`` and its one-sided p-value against 0.5.

    Each fold is judged on its own: its model never saw its rows, so under randomization
    its labels are independent of its scores and its AUC has DeLong's null variance, made
    cluster-robust (each row's placement deviation summed within its group before
    squaring). Pooling the folds' pairs or averaging their z-scores would not be: the fold
    models share training rows, which correlates the folds' AUCs (and makes cross-fold
    pairs anti-learn). The folds' p-values are therefore combined by Bonferroni (valid
    whatever their dependence); the AUC returned is the folds' AUCs weighted by their pairs.
    """
    labels = labels.astype(bool)
    codes, _ = pd.factorize(groups)
    aucs, pairs, p_values = [], [], []
    for fold in np.unique(folds):
        rows = folds == fold
        t, n_pos = labels[rows], int(labels[rows].sum())
        if n_pos == 0 or n_pos == len(t):
            continue
        v10, v01 = _placements(scores[rows], t)
        auc = float(v10.mean())
        dev = np.empty(len(t))
        n_neg = len(t) - n_pos
        dev[t], dev[~t] = (v10 - auc) / n_pos, (v01 - auc) / n_neg
        clustered = _cluster_var(dev, codes[rows], np.ones(len(t), dtype=bool))
        var = max(clustered, (len(t) + 1) / (12 * n_pos * n_neg))  # never below Mann-Whitney's null variance
        used = len(np.unique(codes[rows]))
        aucs.append(auc)
        pairs.append(n_pos * n_neg)
        p_values.append(float(stats.t.sf((auc - 0.5) / np.sqrt(var), df=max(used - 1, 1))))
    if not aucs:
        return float("nan"), 1.0
    return float(np.dot(aucs, pairs) / sum(pairs)), min(1.0, len(p_values) * min(p_values))


def _classifier(X: pd.DataFrame, assigned: np.ndarray, groups: np.ndarray,
                config: RunConfig) -> tuple[float | None, float | None, dict[str, float]]:
    """Grouped-CV AUC of assigned vs control on the features, its p-value, and the gain shares."""
    n_groups = len(pd.unique(groups))
    if n_groups < 2:
        return None, None, {}
    folds = GroupKFold(n_splits=min(config.balance.folds, n_groups), shuffle=True, random_state=config.balance.seed)
    scores, fold_of = np.empty(len(X)), np.empty(len(X), dtype=int)
    gain = np.zeros(X.shape[1])
    threads = Settings.from_env().threads
    for fold, (train, test) in enumerate(folds.split(X, assigned, groups)):
        model = lgb.LGBMClassifier(**CLASSIFIER, n_jobs=threads, random_state=config.balance.seed)
        model.fit(X.iloc[train], assigned[train])
        scores[test], fold_of[test] = model.predict_proba(X.iloc[test])[:, 1], fold
        gain += model.booster_.feature_importance("gain")
    auc, p = grouped_auc(scores, assigned, fold_of, groups)
    total = gain.sum()
    shares = {c: float(g / total) if total > 0 else 0.0 for c, g in zip(X.columns, gain, strict=True)}
    return auc, p, shares


def check_balance(frame: pd.DataFrame, config: RunConfig) -> BalanceCheck:
    """Measure balance and leakage of the configured features between arms and control.

    Parameters
    ----------
    frame : DataFrame
        The rows a run fits on, with arm labels (every arm known) and the group column.
    config : RunConfig
        The run config: its features, arms, ``group_column`` and ``balance:`` block.

    Returns
    -------
    BalanceCheck
        The table, the classifier's AUC and the refused features (none when balanced).
    """
    started = time.perf_counter()
    spec = config.balance
    X = FeaturePipeline(config.features).fit_transform(frame)
    arms = frame[config.arm_column].astype(str).to_numpy()
    groups, _ = pd.factorize(frame[config.group_column])
    control = arms == config.control_label
    names, values = _indicator_columns(X)
    rows = []
    for arm in config.arm_labels:
        treated = arms == arm
        for (feature, level), x in zip(names, values.T, strict=True):
            mt, mc, smd, p = _mean_difference(x, treated, control, groups)
            rows.append({"feature": feature, "level": level, "arm": arm, "mean_arm": mt, "mean_control": mc,
                         "smd": smd, "p_value": p})
    table = pd.DataFrame(rows, columns=["feature", "level", "arm", "mean_arm", "mean_control", "smd", "p_value"])
    table["p_adjusted"] = (table["p_value"] * max(len(table), 1)).clip(upper=1.0)
    flagged = (table["smd"].abs() > spec.max_abs_smd) & (table["p_adjusted"] < spec.p_value)
    refused: dict[str, str] = {}
    for row in table[flagged].sort_values("smd", key=abs, ascending=False).itertuples():
        refused.setdefault(row.feature, (
            f"standardized mean difference {_smd_text(row.smd)} between {row.arm!r} and control"
            f"{f' at level {row.level!r}' if row.level else ''} (means {row.mean_arm:.3f} vs {row.mean_control:.3f}, "
            f"adjusted p={row.p_adjusted:.1e}) exceeds balance.max_abs_smd={spec.max_abs_smd}"))
    auc, auc_p, shares = _classifier(X, (~control).astype(int), groups, config)
    if auc is not None and auc > spec.max_auc and auc_p < spec.p_value:
        carriers = [c for c, s in sorted(shares.items(), key=lambda kv: -kv[1]) if s >= GAIN_SHARE]
        for name in carriers or [max(shares, key=shares.get)]:
            refused.setdefault(name, (
                f"a grouped-CV classifier of assigned vs control reaches AUC {auc:.3f} (p={auc_p:.1e}; "
                f"balance.max_auc={spec.max_auc}) and {shares[name]:.0%} of its gain is this feature's"))
    table["refused"] = table["feature"].isin(list(refused))
    return BalanceCheck(table, auc, auc_p, shares, refused, time.perf_counter() - started)
