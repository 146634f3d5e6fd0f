"""Past programs as training data: read a plan with its outcomes and voters, check them, add their rows.

A run config's ``programs:`` (:class:`features.program_spec.ProgramSpec`) names plans that
``persuade plan`` wrote with randomized assignment. Each plan file records, for every voter
it considered, the arm or control the voter got and the probability of every arm and of
control under its design (:mod:`serving.plan_design`). Those probabilities make the
program's contact a randomized experiment with known, unequal propensities: its rows train
the uplift models beside the experiment's, each with its own propensities
(:class:`training.learners.Design`), where the experiment's rows have the design's shares.

What a program's rows are used for, and what not:

- they join the **training** rows: outcome models, learners, grouped CV and the arms'
  average effects. A row whose propensity of an arm (or of control) is 0 is never in that
  arm's contrast;
- the **hold-out** stays the experiment's randomized hold-out groups, so a model trained
  with programs is judged, gated and reported on the same voters as one without. A
  program's rows in a held-out group (or with a held-out voter's id) are dropped;
- the turnout and contact-rate models are the experiment's (fitted on its rows), and the
  feature transform is fitted on the experiment's training rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from features.config import RunConfig, arm_slug
from features.fingerprint import program_fingerprint
from features.program_spec import ProgramSpec
from features.schema import DataValidationError, _check_outcome
from features.tables import read_table
from serving.bundle import CONTROL_ARM
from serving.plan_costs import PlanError
from serving.plan_design import check_design
from serving.plan_file import read_plan_summary
from training.splits import Prepared, group_folds


@dataclass
class ProgramRows:
    """One past program's voters as training rows.

    Attributes
    ----------
    name : str
    design : str
        The plan's design fingerprint.
    frame : DataFrame
        One row per voter of the plan: the id, group, feature and outcome columns, and
        the arm column holding the voter's assignment (the config's control label for
        ``control``).
    propensities : DataFrame
        Each voter's probability of every label under the plan's design (columns: the
        control label and the arms).
    fingerprint : dict
        :func:`features.fingerprint.program_fingerprint`.
    """

    name: str
    design: str
    frame: pd.DataFrame
    propensities: pd.DataFrame
    fingerprint: dict


def load_programs(config: RunConfig) -> list[ProgramRows]:
    """Read and check every program of ``config.programs``.

    Raises
    ------
    DataValidationError
        A file is missing, a plan is not a plan with a recorded design (or its rows no
        longer match its fingerprint), an assigned label is not an arm of the config or
        control, an arm has no probability column, ids do not match between the plan, its
        outcomes and its voters, or a column is missing or invalid; every message names
        the program's field (``programs[0].outcomes: ...``).
    """
    missing = config.missing_program_files()
    if missing:
        raise DataValidationError(missing)
    return [load_program(spec, config, f"programs[{i}]") for i, spec in enumerate(config.programs)]


def load_program(spec: ProgramSpec, config: RunConfig, where: str) -> ProgramRows:
    """One program's rows (see :func:`load_programs`); ``where`` names it in errors."""
    plan, design = _read_plan(spec, config, where)
    ids = plan["voter_id"].astype(str)
    key = config.id_column
    outcomes = _by_id(read_table(config.resolve(spec.outcomes)), key, f"{where}.outcomes",
                      [config.outcome.column])
    voters = _by_id(read_table(config.resolve(spec.voters)), key, f"{where}.voters",
                    [config.group_column, *config.features])
    problems = [f"{where}.{name}: {len(absent)} voters of the plan have no row (id column {key!r})"
                for name, table in (("outcomes", outcomes), ("voters", voters))
                if len(absent := pd.Index(ids).difference(table.index))]
    extra = outcomes.index.difference(pd.Index(ids))  # a voter file may hold other voters; outcomes may not
    if len(extra):
        problems.append(f"{where}.outcomes: {len(extra)} ids are not voters of the plan")
    if problems:
        raise DataValidationError(problems)
    outcomes, voters = outcomes.loc[ids], voters.loc[ids]
    problems += _check_outcome(outcomes, config.outcome.column, config.outcome.kind, f"{where}.outcomes: outcome")
    if voters[config.group_column].isna().any():
        problems.append(f"{where}.voters: group column {config.group_column!r} has missing values")
    if problems:
        raise DataValidationError(problems)
    assigned = plan["assigned"].astype(str).to_numpy()
    frame = pd.DataFrame({
        key: voters[key].to_numpy(),
        config.group_column: voters[config.group_column].to_numpy(),
        config.arm_column: np.where(assigned == CONTROL_ARM, config.control_label, assigned).astype(object),
        config.outcome.column: outcomes[config.outcome.column].to_numpy(),
        **{c: voters[c].to_numpy() for c in config.features if c != config.group_column},
    })
    propensities = pd.DataFrame({label: plan[f"p_{arm_slug(label)}"].to_numpy(dtype=float)
                                 for label in [CONTROL_ARM, *config.arm_labels]})
    propensities = propensities.rename(columns={CONTROL_ARM: config.control_label})
    fingerprint = program_fingerprint(spec.name, design, frame, propensities, config)
    return ProgramRows(spec.name, design, frame, propensities, fingerprint)


def _read_plan(spec: ProgramSpec, config: RunConfig, where: str) -> tuple[pd.DataFrame, str]:
    """The plan's rows, checked against its recorded design (:func:`serving.plan_design.check_design`)."""
    path = config.resolve(spec.plan)
    try:
        design = read_plan_summary(path).get("design")
        if not isinstance(design, dict):
            raise PlanError("design", "the plan records no design (planned before holdouts and exploration?)")
        rows = read_table(path)
        check_design(rows, design)
    except PlanError as exc:
        raise DataValidationError([f"{where}.plan: {exc}"]) from None
    except DataValidationError as exc:  # read_table's: an unreadable file
        raise DataValidationError([f"{where}.plan: {p}" for p in exc.problems]) from None
    except (OSError, ValueError) as exc:  # not parquet, unreadable metadata
        raise DataValidationError([f"{where}.plan: not a plan file ({type(exc).__name__})"]) from None
    problems = []
    absent = [f"p_{arm_slug(a)}" for a in config.arm_labels if f"p_{arm_slug(a)}" not in design["probabilities"]]
    if absent:
        problems.append(f"{where}.plan: no probability column {absent} for the config's arms {config.arm_labels}")
    known = {*config.arm_labels, CONTROL_ARM}
    unknown = sorted(set(rows["assigned"].astype(str)) - known)
    if unknown:
        problems.append(f"{where}.plan: assigned labels {unknown} are not arms of the config "
                        f"({config.arm_labels}) or {CONTROL_ARM!r}")
    if rows["voter_id"].astype(str).duplicated().any():
        problems.append(f"{where}.plan: {int(rows['voter_id'].astype(str).duplicated().sum())} duplicate voter ids")
    if problems:
        raise DataValidationError(problems)
    return rows.reset_index(drop=True), str(design["fingerprint"])


def _by_id(table: pd.DataFrame, key: str, where: str, columns: list[str]) -> pd.DataFrame:
    """``table`` indexed by its id column as text, after checking the columns it must have."""
    missing = [c for c in [key, *columns] if c not in table.columns]
    if missing:
        raise DataValidationError([f"{where}: columns {missing} are missing"])
    ids = table[key].astype(str)
    if ids.duplicated().any():
        raise DataValidationError([f"{where}: {int(ids.duplicated().sum())} duplicate values in id column {key!r}"])
    return table.set_axis(pd.Index(ids, name=None), axis=0)


def experiment_propensities(frame: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """The experiment's rows' propensities: the design's shares, or its observed shares when the config gives none."""
    shares = config.design_shares()
    labels = [config.control_label, *config.arm_labels]
    if shares is None:
        counts = frame[config.arm_column].astype(str).value_counts()
        shares = {label: float(counts.get(label, 0) / len(frame)) for label in labels}
    return pd.DataFrame({label: np.full(len(frame), shares[label]) for label in labels})


def rows_per_label(counts: Mapping[str, int], programs: Sequence[ProgramRows], config: RunConfig) -> dict[str, int]:
    """The experiment's rows per label (``counts``) plus the programs' (what the model sizes scale to)."""
    out = {str(k): int(v) for k, v in counts.items()}
    for program in programs:
        for label, n in program.frame[config.arm_column].astype(str).value_counts().items():
            out[str(label)] = out.get(str(label), 0) + int(n)
    return out


@dataclass
class TrainingRows:
    """The experiment's split with past programs' rows added to its training part.

    Attributes
    ----------
    prepared : Prepared
        ``train`` (and ``X_train``, ``folds``): the experiment's training rows, then the
        programs' rows (groups as text); ``test``: the experiment's hold-out, unchanged.
    propensities : DataFrame or None
        Each training row's probability of every label; None without programs (every
        row has the design's shares, as :class:`training.learners.Design` has them).
    experiment : ndarray of bool
        The training rows that are the experiment's.
    dropped : dict
        Per program, its rows left out because their group (or id) is in the hold-out.
    """

    prepared: Prepared
    propensities: pd.DataFrame | None
    experiment: np.ndarray
    dropped: dict[str, int]


def with_programs(prep: Prepared, programs: list[ProgramRows], config: RunConfig) -> TrainingRows:
    """``prep`` with the programs' rows added to its training part (see the module docstring)."""
    if not programs:
        return TrainingRows(prep, None, np.ones(len(prep.train), dtype=bool), {})
    group, key = config.group_column, config.id_column
    held_groups, held_ids = set(prep.test[group].astype(str)), set(prep.test[key].astype(str))
    parts, recorded, dropped = [prep.train], [experiment_propensities(prep.train, config)], {}
    for program in programs:
        frame = program.frame
        out = (frame[group].astype(str).isin(held_groups) | frame[key].astype(str).isin(held_ids)).to_numpy()
        dropped[program.name] = int(out.sum())
        parts.append(frame.loc[~out])
        recorded.append(program.propensities.loc[~out])
    train = pd.concat(parts, ignore_index=True)
    train[group] = train[group].astype(str)  # groups are matched as text, whatever each file's type
    propensities = pd.concat(recorded, ignore_index=True)
    experiment = np.arange(len(train)) < len(prep.train)
    prepared = replace(prep, train=train, X_train=prep.pipeline.transform(train),
                       folds=group_folds(train[config.group_column], config.split.folds, config.split.seed))
    return TrainingRows(prepared, propensities, experiment, dropped)


def overlap_floor(rows: TrainingRows, arms: Sequence[str], control: str, configured: float) -> float:
    """The ``min_propensity`` of the training contrasts (:class:`training.learners.Design`).

    ``configured`` (``uplift.min_propensity``), lowered so that no experiment row leaves a
    contrast: at most every experiment row's ``e`` and ``1 - e`` for every arm. Without
    programs every row is the experiment's, so nothing is trimmed.
    """
    if rows.propensities is None:
        return 0.0
    p = rows.propensities.loc[rows.experiment]
    floor = configured
    for arm in arms:
        with np.errstate(invalid="ignore", divide="ignore"):
            e = (p[arm] / (p[arm] + p[control])).to_numpy(dtype=float)
        e = e[np.isfinite(e) & (e > 0) & (e < 1)]
        if len(e):
            floor = min(floor, float(e.min()), float(1 - e.max()))
    return floor
