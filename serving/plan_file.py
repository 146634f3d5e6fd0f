"""The plan file: one parquet row per voter considered, the plan's summary in its metadata.

Columns (``persuade plan``, :func:`write_plan`):

- the contact list: ``voter_id``, ``arm``, ``channel``, ``expected_gain``, ``p_reached``,
  ``cost`` (and, under a consent table, ``phone_hash`` and ``time_zone``: see
  :func:`with_dialing_keys`); null for voters not contacted.
  The contacts come first, in priority order; :func:`read_contacts` reads only them.
- the design: ``assigned`` (arm label or ``control``), ``holdout``, ``p_<arm slug>`` per
  arm and ``p_control`` (each voter's probabilities under the design, summing to 1).
- for measurement: ``gain_<arm slug>`` per arm (expected gain, NaN where not allowed),
  ``baseline`` (the model's predicted outcome without contact) and ``cluster``.

The metadata key ``persuade.plan`` holds :meth:`serving.planning.ContactPlan.summary`
(no voter ids) with ``design`` (seed, shares, strata, fingerprint) and ``provenance``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.calling_hours import TIME_ZONE_COLUMN
from features.consent import PHONE_HASH_COLUMN, keeps_calling_hours
from serving.bundle import ScoringModel
from serving.plan_costs import PlanError
from serving.plan_design import PlanDesign, design_fingerprint
from serving.planning import ContactPlan

PLAN_METADATA_KEY = b"persuade.plan"


def with_dialing_keys(contacts: pd.DataFrame, decided: pd.DataFrame, model: ScoringModel) -> pd.DataFrame:
    """The contact list with what a dialer must keep from the consent decision, after ``voter_id``.

    Parameters
    ----------
    contacts : DataFrame
        The contact list (``voter_id``, ``arm``, ...), e.g. :attr:`ContactPlan.table`.
    decided : DataFrame
        The consent decision per voter (``voter_id`` and, when made, ``phone_hash`` and
        ``time_zone``; :meth:`features.consent.ConsentRules.decide`).
    model : ScoringModel
        Whose arms say which contacts are phone or text deliveries.

    Returns
    -------
    DataFrame
        ``contacts`` with ``phone_hash`` (the number decided for: dial it and no other) on
        every contact and ``time_zone`` (the voter's local time zone, IANA; several
        separated by spaces) on phone and text contacts, null on the others, so a dialer
        keeps the calling window at send time. A column ``decided`` lacks is not added.
    """
    by_voter = decided.drop_duplicates("voter_id").set_index("voter_id")
    ids = contacts["voter_id"].astype(str)
    out = contacts.copy()
    position = 1
    if PHONE_HASH_COLUMN in by_voter.columns:
        out.insert(position, PHONE_HASH_COLUMN, by_voter[PHONE_HASH_COLUMN].reindex(ids).to_numpy())
        position += 1
    if TIME_ZONE_COLUMN in by_voter.columns:
        timed = [a.label for a in model.arms if keeps_calling_hours(a.delivery)]
        zones = by_voter[TIME_ZONE_COLUMN].astype(object).reindex(ids).to_numpy()
        kept = contacts["arm"].isin(timed).to_numpy() & pd.notna(zones)
        out.insert(position, TIME_ZONE_COLUMN, np.where(kept, zones, None))
    return out


def plan_rows(plan: ContactPlan) -> pd.DataFrame:
    """The plan file's rows: every voter considered, the contacts first with their contact columns."""
    contacts = plan.table.reset_index(drop=True)
    if plan.assignment is None:
        return contacts
    voters = plan.assignment
    if not np.array_equal(voters.voter_id.iloc[:len(contacts)].to_numpy(), contacts.voter_id.to_numpy()):
        raise PlanError("plan", "the contact list is not the head of the plan's voters (was it reordered?)")
    rows = contacts.reindex(range(len(voters)))
    rows["voter_id"] = voters.voter_id.to_numpy()
    return pd.concat([rows, voters.drop(columns="voter_id")], axis=1)


def write_plan(plan: ContactPlan, path: str | Path, provenance: Mapping[str, Any] | None = None) -> Path:
    """Write the plan's rows to parquet; its summary (no voter ids) rides in the file metadata.

    The metadata key ``persuade.plan`` holds :meth:`ContactPlan.summary` plus
    ``provenance`` (model name, version, run id, input file), for reports on the plan.
    """
    return _write(plan_rows(plan), {**plan.summary(), "provenance": dict(provenance or {})}, path)


def write_design_plan(path: str | Path, ids: np.ndarray, design: PlanDesign, *, id_column: str,
                      outcome: Mapping[str, str], clusters: pd.Series | None = None,
                      provenance: Mapping[str, Any] | None = None) -> Path:
    """Write a plan file of a design without a solver: a randomized experiment read as a plan.

    Parameters
    ----------
    path : str or Path
    ids : array of voter ids (n,)
    design : PlanDesign
        E.g. :func:`serving.plan_design.fixed_design` of the experiment's shares.
    id_column : str
        The id column of the outcomes file ``persuade measure`` will read.
    outcome : mapping
        ``{"column": ..., "kind": "turnout"|"support"}``: the outcome to measure.
    clusters : Series, optional
        Each voter's cluster (the unit of the intervals), named after its column.
    provenance : mapping, optional
    """
    rows = design.frame(ids)
    described = {**design.description, "id_column": id_column, "outcome": dict(outcome),
                 "cluster_column": None if clusters is None else str(clusters.name)}
    if clusters is not None:
        rows["cluster"] = np.asarray(clusters.astype(str))
    described["fingerprint"] = design_fingerprint(described, rows.voter_id.to_numpy(),
                                                  rows[described["probabilities"]].to_numpy())
    summary = {"voters": len(rows), "outcome": outcome.get("kind", "turnout"), "design": described,
               "provenance": dict(provenance or {})}
    return _write(rows, summary, path)


def _write(rows: pd.DataFrame, summary: Mapping[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(rows, preserve_index=False)
    meta = {**(table.schema.metadata or {}), PLAN_METADATA_KEY: json.dumps(summary).encode()}
    pq.write_table(table.replace_schema_metadata(meta), str(path))
    return path


def read_plan_summary(path: str | Path) -> dict[str, Any]:
    """The summary stored by :func:`write_plan` in a plan file."""
    meta = pq.read_schema(str(path)).metadata or {}
    if PLAN_METADATA_KEY not in meta:
        raise PlanError(str(path), f"not a plan written by persuade plan (no {PLAN_METADATA_KEY.decode()} metadata)")
    return json.loads(meta[PLAN_METADATA_KEY])


def read_contacts(path: str | Path) -> pd.DataFrame:
    """The contact list of a plan file: the rows with a planned contact, in priority order.

    A plan written before plans recorded every voter considered is all contacts.
    """
    rows = pd.read_parquet(path)
    if "assigned" not in rows.columns:
        return rows
    return rows[rows["arm"].notna()].reset_index(drop=True)
