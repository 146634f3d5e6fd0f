"""A past program simulated on the synthetic campaign, the test bed of learning from programs.

The synthetic campaign (:mod:`features.synthetic`) knows every voter's baseline and true
effect of every arm. A program on its voters is simulated the way ``persuade plan`` makes
one: a targeting (each voter's planned arm, or none) is randomized by the plan's design
(:func:`serving.plan_design.randomize`: a holdout of the targeted voters, exploration of
the rest, arms a voter may not get at probability 0), so every voter's probability of
every arm and of control is known; the outcomes are then drawn from the truth (turnout
from the baseline plus the true effect of the arm the voter got). The program is written
as the three files a run config's ``programs:`` entry names: the plan file (with its
design and fingerprint in the ``persuade.plan`` metadata), the outcomes and the voters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.synthetic import ARMS, SyntheticCampaign
from serving.bundle import CONTROL_ARM
from serving.plan_design import DesignSpec, design_fingerprint, randomize
from serving.plan_file import PLAN_METADATA_KEY

LABELS = list(ARMS)


@dataclass
class SimulatedProgram:
    """A simulated program: the plan file's rows and design, the outcomes, the voters and the truth.

    ``voters`` and ``truth`` carry the program's own voter ids and groups (see
    :func:`simulate_program`), ``outcomes`` the id and both synthetic outcomes.
    """

    plan: pd.DataFrame
    design: dict
    outcomes: pd.DataFrame
    voters: pd.DataFrame
    truth: pd.DataFrame

    def write(self, folder: str | Path, name: str) -> dict:
        """Write the plan, outcomes and voters to ``folder``; return the ``programs:`` entry that names them."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {key: folder / f"{name}_{key}.parquet" for key in ("plan", "outcomes", "voters")}
        table = pa.Table.from_pandas(self.plan, preserve_index=False)
        meta = {**(table.schema.metadata or {}), PLAN_METADATA_KEY: json.dumps(
            {"design": self.design, "provenance": {"simulated": "training.program_simulation"}}).encode()}
        pq.write_table(table.replace_schema_metadata(meta), str(paths["plan"]))
        self.outcomes.to_parquet(paths["outcomes"], index=False)
        self.voters.to_parquet(paths["voters"], index=False)
        return {"name": name, **{key: str(path) for key, path in paths.items()}}


def top_targeting(scores: np.ndarray, share: float) -> np.ndarray:
    """The planned arm of each voter: the best-scored allowed arm for the top ``share`` of voters, else -1.

    ``scores`` is (voters, arms) with NaN where the voter may not get the arm; voters
    are ranked by their best score.
    """
    scores = np.asarray(scores, dtype=float)
    best = np.where(np.isfinite(scores), scores, -np.inf)
    value = best.max(axis=1)
    n_top = round(share * len(value))
    top = np.argsort(-value, kind="stable")[:n_top]
    targeted = np.full(len(value), -1, dtype=np.int64)
    targeted[top] = best[top].argmax(axis=1)
    return targeted


def draw_outcomes(truth: pd.DataFrame, assigned: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Turnout and support of each voter under the arm (or control) the voter got, drawn from the truth.

    Turnout is Bernoulli of the baseline plus the arm's true effect (intent to treat);
    support is its baseline plus the arm's true effect plus the campaign's noise (sd 1.5).
    """
    assigned = np.asarray(assigned, dtype=object)
    p = truth["p0"].to_numpy(dtype=float).copy()
    support = truth["support0"].to_numpy(dtype=float) + rng.normal(0, 1.5, len(truth))
    for label in LABELS:
        got = assigned == label
        p[got] += truth.loc[got, f"tau_voted_{label.lower()}"].to_numpy()
        support[got] += truth.loc[got, f"tau_support_{label.lower()}"].to_numpy()
    return pd.DataFrame({"voter_id": truth["voter_id"].to_numpy(),
                         "voted": (rng.random(len(truth)) < np.clip(p, 0, 1)).astype(int),
                         "support": support.round(3)})


def program_voters(campaign: SyntheticCampaign, *, id_prefix: str = "PRG",
                   group_offset: int = 1_000_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The campaign's voter file and truth as a program's voters: other ids and other places.

    Ids become ``<id_prefix>-<n>`` and groups (precincts) are offset by ``group_offset``,
    so the voters are not an experiment's drawn from the same generator: a run that
    trains on both keeps them apart (a program's rows sharing an id or a group with the
    experiment's hold-out would be dropped).
    """
    ids = np.char.replace(campaign.voter_file["voter_id"].to_numpy().astype(str), "SYN", id_prefix)
    voters = campaign.voter_file.assign(voter_id=ids, precinct=campaign.voter_file["precinct"] + group_offset)
    return voters, campaign.truth.assign(voter_id=ids)


def simulate_program(
    campaign: SyntheticCampaign, scores: np.ndarray, *, target_share: float, holdout: float, explore: float,
    seed: int, id_prefix: str = "PRG", group_offset: int = 1_000_000,
) -> SimulatedProgram:
    """Plan, randomize and run a program on ``campaign``'s voters.

    Parameters
    ----------
    campaign : SyntheticCampaign
        The voters and their truth (its own assignment and outcomes are not used).
    scores : ndarray (voters, arms)
        What the targeting ranks by (a model's uplift, a rule's score), arms in
        :data:`LABELS` order; NaN where the voter may not get the arm.
    target_share : float
        Share of voters targeted (:func:`top_targeting`).
    holdout, explore : float
        The plan's design (:class:`serving.plan_design.DesignSpec`).
    seed : int
        Seed of the design's draws and of the outcomes.
    id_prefix, group_offset : str, int
        The program's voters get ids ``<id_prefix>-<n>`` and groups offset by
        ``group_offset``, so they are other voters and places than an experiment drawn
        from the same generator.
    """
    voters, truth = program_voters(campaign, id_prefix=id_prefix, group_offset=group_offset)
    ids = voters["voter_id"].to_numpy().astype(str)
    drawn = randomize(top_targeting(scores, target_share), scores, LABELS, DesignSpec(holdout, explore, seed), seed)
    plan = drawn.frame(ids)
    design = {**drawn.description, "fingerprint": design_fingerprint(
        drawn.description, ids, plan[drawn.description["probabilities"]].to_numpy())}
    assigned = plan["assigned"].to_numpy()
    outcomes = draw_outcomes(truth, np.where(assigned == CONTROL_ARM, None, assigned), np.random.default_rng(seed))
    return SimulatedProgram(plan, design, outcomes, voters, truth)
