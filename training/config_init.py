"""``persuade init``: a run config drafted from an experiment table, every guess stated.

:func:`draft_config` reads one table (a row per voter or respondent) and drafts the
config ``persuade train`` accepts as it is: the arms and their observed shares, the
control (named like one, else the largest group), raw arm codes mapped with
``value:``/``control_value:``, the outcome's kind (0/1: turnout; a numeric scale:
support; missing outcomes: ``missing: drop``), the id and group columns, and every other
column either a feature (numeric or categorical) or excluded with the reason: personal
data (:mod:`features.pii`), protected, id-like, recorded after contact (by name, by being
constant in control, or by the balance check that training runs, :mod:`features.balance`),
constant, or unusable. The draft is then checked by the validation training runs
(:func:`features.schema.validate_experiment`); what it still refuses is listed at the top.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from features import column_roles as roles
from features.attrition import observed_rows
from features.balance import check_balance
from features.config import AuditSpec, BalanceSpec, Channel, RunConfig, SplitSpec
from features.pii import find_pii_columns
from features.pipeline import DERIVED
from features.schema import DataValidationError, validate_experiment
from features.tables import map_arm_codes
from training.config_draft import ConfigDraft

MAX_ARMS = 20  # more distinct values than this: not an arm column
MAX_LEVELS = 50  # a text column with more distinct values is no categorical feature
ORDER = ("name", "model_name", "data", "id_column", "arm_column", "control_label", "control_value", "arms", "outcome",
         "group_column", "features", "derived_features", "protected", "pii", "audit")  # keys as written


def project_name(output: str | Path) -> str:
    """The experiment and model name for a config written to ``output``: its file name's stem."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(output).name.split(".")[0]).strip("-.")
    return name or "persuade"


def table_path_for(data: str | Path, output: str | Path) -> str:
    """``data`` as the config at ``output`` should name it: relative to the folder paths resolve
    against (the project for a config in ``configs/``, else the config's folder) when under it."""
    base = Path(output).resolve().parent
    base = base.parent if base.name == "configs" else base
    data = Path(data).resolve()
    return str(data.relative_to(base)) if data.is_relative_to(base) else str(data)


def draft_config(frame: pd.DataFrame, *, table: str, arm_column: str, outcome: str, name: str,
                 id_column: str | None = None, group_column: str | None = None,
                 channel: str | None = None) -> ConfigDraft:
    """Draft a run config for the experiment in ``frame``.

    Parameters
    ----------
    frame : DataFrame
        The experiment table as read (:func:`features.table_files.read_table`).
    table : str
        The table's path as the config names it (``data.table``).
    arm_column, outcome : str
        The assigned arm (control included) and the outcome column.
    name : str
        The experiment and registered model name.
    id_column, group_column : str, optional
        Default: guessed (a unique identifier; a household, cluster or precinct column, else the id).
    channel : str, optional
        Every arm's channel; default: guessed from the arm names, else ``mail``.

    Returns
    -------
    ConfigDraft
        The config's values and comments; ``problems`` lists what validation still refuses.

    Raises
    ------
    ValueError
        Naming the column, when the arm, outcome, id or group column cannot be used.
    """
    for role, col in (("arm", arm_column), ("outcome", outcome), ("id", id_column), ("group", group_column)):
        if col is not None and col not in frame.columns:
            raise ValueError(f"{role} column {col!r} is not in the data (columns: {', '.join(map(str, frame))})")
    if channel is not None and channel not in set(Channel):
        raise ValueError(f"channel {channel!r} is not one of {', '.join(Channel)}")
    draft = ConfigDraft(values={"name": name, "model_name": name, "data": {"table": table}})
    draft.header = [f"Drafted by `persuade init` from {Path(table).name}: {len(frame):,} rows, "
                    f"{frame.shape[1]} columns. Every guess is stated in a comment: check them, then run "
                    f"`persuade train --config <this file>`."]
    id_column = id_column or _guess_id(frame, {arm_column, outcome}, draft)
    draft.values["id_column"] = id_column
    control = _arms(frame, arm_column, channel, draft)
    _outcome(frame, outcome, draft)
    draft.values["group_column"] = group_column or _guess_group(frame, arm_column, id_column, draft)
    _columns(frame, {arm_column, outcome, id_column, draft.values["group_column"]}, control, draft)
    _checked(frame, draft)
    draft.values = {k: draft.values[k] for k in ORDER if k in draft.values}
    if draft.problems:
        draft.header += ["", "Validation still refuses this data with this config (fix before training):",
                         *[f"- {p}" for p in draft.problems]]
    return draft


def _guess_id(frame: pd.DataFrame, taken: set[str], draft: ConfigDraft) -> str:
    unique = [c for c in frame.columns if c not in taken and roles.unique_per_row(frame[c])
              and not pd.api.types.is_float_dtype(frame[c])]
    unique = [c for c in unique if c not in find_pii_columns(frame, unique)]  # a phone number is no id
    named = [c for c in unique if roles.ID_WORDS.intersection(roles.name_words(c))]
    if not unique:
        raise ValueError("no column is unique per row to be the id: give --id-column (a column with one "
                         "distinct value per row)")
    chosen = (named or unique)[0]
    draft.notes["id_column"] = [f"id: {chosen!r}, unique per row" + (" and named like an id" if named else "")]
    return chosen


def _arm_values(raw: pd.Series) -> tuple[pd.Series, bool]:
    """Each row's arm value as the config writes it, and whether the values are raw codes (numbers)."""
    if not (pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_bool_dtype(raw)):
        return raw.astype(str), False
    # 1.0 read from a column with gaps is the code 1; True is "True" (codes are matched as text)
    codes = [str(v) if isinstance(v, bool | np.bool_) or not float(v).is_integer() else int(v) for v in raw]
    return pd.Series(codes, index=raw.index, dtype=object), True


def _arms(frame: pd.DataFrame, arm_column: str, channel: str | None, draft: ConfigDraft) -> pd.Series:
    """Write the arms and the control; return which rows are control."""
    raw = frame[arm_column]
    if raw.isna().any():
        raise ValueError(f"arm column {arm_column!r} has {int(raw.isna().sum()):,} missing values: every row "
                         f"needs the arm it was assigned")
    values, coded = _arm_values(raw)
    counts = values.value_counts()
    if not 2 <= len(counts) <= MAX_ARMS:
        raise ValueError(f"arm column {arm_column!r} has {len(counts)} distinct values: it should hold the "
                         f"assigned arm, control included (2 to {MAX_ARMS} values)")
    named = [v for v in counts.index if roles.looks_like_control(v)]
    control = named[0] if named else counts.index[0]  # counts are largest first
    how = "named like a control arm" if named else "no value is named like a control: the largest group"
    others = [v for v in counts.index if v != control]
    if coded:
        single = arm_column if arm_column != "control" else "treated"
        labels = {v: (single if len(others) == 1 else f"{arm_column}_{v}") for v in others}
        control_label = "control"
    else:
        labels, control_label = {v: v for v in others}, control
    shares = counts / counts.sum()
    draft.values["arm_column"] = arm_column
    draft.values["control_label"] = control_label
    if coded:
        draft.values["control_value"] = control
    arms, assumed = {}, []
    for v in sorted(others, key=str):
        guess = channel or roles.channel_hint(labels[v], arm_column) or Channel.mail.value
        if channel is None and roles.channel_hint(labels[v], arm_column) is None:
            assumed.append(labels[v])
        arms[labels[v]] = {**({"value": v} if coded else {}), "channel": guess}
    draft.values["arms"] = arms
    draft.item_notes["arms"] = {labels[v]: f"{counts[v]:,} rows, {shares[v]:.1%} observed" for v in others}
    code = f" (code {control!r})" if coded else ""
    draft.notes["control_label"] = [
        f"control: {control_label!r}{code}, {how}; {counts[control]:,} rows, {shares[control]:.1%} observed."]
    if coded:
        draft.notes["control_label"].append(f"{arm_column!r} holds codes: value:/control_value: map them to these "
                                            f"labels (rename the labels freely, keep the codes).")
    draft.notes["arms"] = [
        "Contact arms with their observed shares. Designed shares are not in the data: if you know them, give "
        "control_share and every arms.<arm>.share (the propensities and the sample-ratio check's reference)."]
    if assumed:
        draft.notes["arms"].append(f"channel of {', '.join(map(repr, assumed))}: mail assumed (no hint in the "
                                   f"names): set the real one (mail, phone, text, canvass), which the consent "
                                   f"rules depend on, and cost: per attempt (default 1), which plans spend.")
    return (values == control).to_numpy()


def _outcome(frame: pd.DataFrame, column: str, draft: ConfigDraft) -> None:
    y = frame[column]
    if not (pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y)):
        raise ValueError(f"outcome column {column!r} is not numeric (dtype {y.dtype}): persuade models a 0/1 "
                         f"turnout or a numeric support scale; recode it first")
    values = pd.unique(y.dropna().astype(float))
    if len(values) < 2:
        raise ValueError(f"outcome column {column!r} has {len(values)} distinct value(s): nothing to model")
    if set(values) <= {0.0, 1.0}:
        spec = {"column": column, "kind": "turnout"}
        why = "0/1 values: turnout (use kind: support if it measures support, e.g. a yes/no intention)"
    else:
        spec = {"column": column, "kind": "support"}
        why = (f"an ordered numeric scale from {values.min():g} to {values.max():g} ({len(values)} values): "
               f"support (no turnout model unless turnout.column names a 0/1 turnout column)")
    notes = [f"outcome: {why}."]
    missing = int(y.isna().sum())
    if missing:
        spec["missing"] = "drop"
        notes.append(f"{missing:,} of {len(y):,} rows ({missing / len(y):.1%}) have no outcome (attrition): "
                     f"missing: drop fits the others, after a check that attrition does not differ by arm.")
    draft.values["outcome"] = spec
    draft.notes["outcome"] = notes


def _guess_group(frame: pd.DataFrame, arm_column: str, id_column: str, draft: ConfigDraft) -> str:
    folds = SplitSpec().folds
    found = []
    for col in frame.columns:
        rank, values = roles.group_rank(col), frame[col]
        if (col in (arm_column, id_column) or rank is None or values.isna().any()
                or pd.api.types.is_float_dtype(values) or not folds <= values.nunique() < len(values)):
            continue
        found.append((rank, col))
    if not found:
        draft.notes["group_column"] = [
            f"group: no household, cluster or precinct column: every row is its own group ({id_column!r}). If "
            f"assignment was by household or area, name that column: folds and the hold-out keep groups whole."]
        return id_column
    chosen = min(found)[1]
    groups = frame[chosen].nunique()
    whole = frame.groupby(chosen)[arm_column].nunique().max() == 1
    draft.notes["group_column"] = [
        f"group: {chosen!r}, {groups:,} groups of {len(frame) / groups:.1f} rows on average; "
        + ("every group has one arm: assignment looks to be by group." if whole else
           "arms vary within groups.")
        + " Folds and the hold-out keep each group whole."
        + (f" Other candidates: {', '.join(repr(c) for _, c in sorted(found)[1:])}." if len(found) > 1 else "")]
    return chosen


def _why_not_a_feature(col: str, values: pd.Series, control: np.ndarray) -> str | None:
    """Why a (non-PII, non-protected) column is no feature, or None if it is one."""
    if roles.looks_like_id(col, values):
        return "id-like (named like an identifier, or unique per row)"
    if roles.looks_post_treatment(col):
        return "post-treatment-like name (recorded after contact?): a feature must be known before assignment"
    if pd.api.types.is_datetime64_any_dtype(values):
        return "a date or time: derive a numeric feature from it first"
    if values.nunique(dropna=False) <= 1:
        return "constant: the same in every row, it carries no information"
    if values[control].nunique(dropna=False) == 1 and values[~control].nunique(dropna=False) > 1:
        return ("post-treatment-like: one value in every control row, several in the contact arms (recorded "
                "after contact?)")
    numeric = pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
    if not numeric and values.nunique() > MAX_LEVELS:
        return f"text with {values.nunique():,} distinct values: too many for a categorical feature"
    return None


def _feature_note(values: pd.Series) -> str:
    missing = int(values.isna().sum())
    gaps = f", {missing:,} missing" if missing else ""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return f"pre-treatment numeric, {values.nunique():,} values{gaps}"
    return f"pre-treatment categorical, {values.nunique():,} levels{gaps}"


def _columns(frame: pd.DataFrame, taken: set[str], control: np.ndarray, draft: ConfigDraft) -> None:
    rest = [c for c in frame.columns if c not in taken]
    pii = find_pii_columns(frame, rest)
    features, protected, age = {}, [], None
    for col in rest:
        values = frame[col]
        if col in pii:
            draft.excluded[col] = f"PII-like ({pii[col]}): never a feature, never logged"
        elif roles.looks_protected(col):
            protected.append(col)
            draft.excluded[col] = "protected-like: kept for the fairness audit, never a feature"
            age = age or (col if roles.looks_like_age(col, values) else None)
        elif (why := _why_not_a_feature(col, values, control)) is not None:
            draft.excluded[col] = why
        else:
            features[col] = _feature_note(values)
    if not features:
        raise ValueError("no column is left to be a feature: " + "; ".join(f"{c}: {w}" for c, w in
                                                                         draft.excluded.items()))
    draft.values["features"] = list(features)
    draft.item_notes["features"] = features
    draft.notes["features"] = ["Candidate features: known before assignment, as far as the names and the data "
                               "tell."]
    _derived(draft)
    draft.values["protected"] = protected
    draft.values["pii"] = [c for c in rest if c in pii]
    if age is not None:
        draft.values["audit"] = {"age_column": age, "age_bands": AuditSpec().age_bands}
        draft.notes["audit"] = [f"The fairness audit groups {age!r} (age-like) in these bands; other numeric "
                                f"protected attributes with many values in quartiles (audit.bands sets cut points)."]


def _derived(draft: ConfigDraft) -> None:
    derived = [n for n, (inputs, _) in DERIVED.items() if inputs(draft.values["features"])]
    if derived:
        draft.values["derived_features"] = derived
        draft.notes["derived_features"] = [f"Derived from the features (features/pipeline.py): {', '.join(derived)}."]


def _exclusion_notes(draft: ConfigDraft) -> None:
    draft.notes["protected"] = ["Columns that are not features, and why:",
                                *([f"- {c}: {why}" for c, why in draft.excluded.items()] or ["- none"])]


def _checked(frame: pd.DataFrame, draft: ConfigDraft) -> None:
    """Run the checks training runs: drop the features the balance check refuses, list other problems."""
    while True:
        config = RunConfig.model_validate(draft.values)  # a draft that does not validate is a bug: let it raise
        mapped = map_arm_codes(frame, config)
        fit = observed_rows(mapped, config)
        if fit[config.group_column].isna().any() or fit[config.arm_column].nunique() < 2:
            break
        refused = check_balance(fit, config).refused
        if not refused:
            break
        if set(refused) >= set(config.features):
            raise ValueError("every candidate feature predicts the assigned arm (balance check): " +
                             "; ".join(f"{c}: {w}" for c, w in refused.items()))
        for col, why in refused.items():
            draft.excluded[col] = f"predicts the assigned arm (the balance check training runs): {why}"
            draft.item_notes["features"].pop(col)
        draft.values["features"] = [c for c in config.features if c not in refused]
        draft.values.pop("derived_features", None)
        _derived(draft)
    _exclusion_notes(draft)
    unchecked = config.model_copy(update={"balance": BalanceSpec(enabled=False)})  # just checked above
    try:
        validate_experiment(mapped, unchecked)
    except DataValidationError as exc:
        draft.problems = list(exc.problems)

