"""``persuade measure``: what a planned program delivered, against its randomized design."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from consent_cases import AS_OF  # a decision time inside every US zone's calling window

from features.config import load_config
from features.tables import load_experiment
from serving.bundle import CONTROL_ARM
from serving.plan_costs import PlanError
from serving.plan_design import fixed_design
from serving.plan_file import PLAN_METADATA_KEY, read_plan_summary, write_design_plan
from training.cli import main
from training.evaluation import difference_in_means
from training.measure import contributions, load_program, measure_program

OUTCOME = {"column": "voted", "kind": "turnout"}


def experiment(folder, n: int = 12_000, seed: int = 0, household: int = 1):
    """A two-arm experiment with constant shares, written as a plan and an outcomes file."""
    rng = np.random.default_rng(seed)
    shares = {"Mail": 0.25, "Phone": 0.15, CONTROL_ARM: 0.6}
    groups = np.arange(n) // household
    arm = np.array(list(shares))[rng.choice(3, size=groups.max() + 1, p=list(shares.values()))][groups]
    p = 0.3 + 0.04 * (arm == "Mail") + 0.09 * (arm == "Phone") + 0.2 * rng.random(groups.max() + 1)[groups]
    voted = (rng.random(n) < p).astype(int)
    ids = np.array([f"V{i:06d}" for i in range(n)])
    plan = write_design_plan(folder / "plan.parquet", ids, fixed_design(arm, shares), id_column="vid",
                             outcome=OUTCOME, clusters=pd.Series(groups, name="household"))
    outcomes = pd.DataFrame({"vid": ids, "voted": voted, "name": "x"})
    outcomes.to_parquet(folder / "outcomes.parquet")
    return plan, folder / "outcomes.parquet", arm, voted


def test_with_constant_probabilities_ipw_is_the_difference_in_means(tmp_path):
    plan, outcomes, arm, voted = experiment(tmp_path)
    result = measure_program(plan, outcomes).as_dict()
    for label in ("Mail", "Phone"):
        dim = voted[arm == label].mean() - voted[arm == CONTROL_ARM].mean()
        ipw = result["estimators"]["ipw"]["arms"][label]
        assert ipw["per_contact"]["estimate"] == pytest.approx(dim, abs=1e-9)
        assert ipw["estimate"] == pytest.approx((arm == label).sum() * dim, abs=1e-6)
        assert ipw["contacts"] == (arm == label).sum()
        assert ipw["ci_low"] < ipw["estimate"] < ipw["ci_high"]
        assert result["arms"][label] == ipw  # no outcome model recorded: DR is IPW
    total = result["total"]
    assert total["estimate"] == pytest.approx(sum(result["arms"][a]["estimate"] for a in ("Mail", "Phone")))
    assert total["contacts"] == (arm != CONTROL_ARM).sum() and result["outcome_model"] is False
    assert result["cluster_column"] == "household" and result["clusters"] == len(arm)
    assert set(result["total"]) >= {"estimate", "ci_low", "ci_high"} and result["units"] == "votes"


def test_intervals_count_clusters_not_voters(tmp_path):
    """Each voter copied four times into one household: four times the estimate, and four times its
    standard error when households are the clusters (copies add no information), not twice."""
    _, outcomes, arm, voted = experiment(tmp_path)
    alone = measure_program(tmp_path / "plan.parquet", outcomes).as_dict()["total"]
    copies = np.repeat(np.arange(len(arm)), 4)
    ids = np.array([f"C{i:07d}" for i in range(len(copies))])
    pd.DataFrame({"vid": ids, "voted": voted[copies]}).to_parquet(tmp_path / "copies.parquet")
    shares = {"Mail": 0.25, "Phone": 0.15, CONTROL_ARM: 0.6}
    found = {}
    for name, clusters in (("household", pd.Series(copies, name="household")), ("voter", None)):
        plan = write_design_plan(tmp_path / f"{name}.parquet", ids, fixed_design(arm[copies], shares), id_column="vid",
                                 outcome=OUTCOME, clusters=clusters)
        found[name] = measure_program(plan, tmp_path / "copies.parquet").as_dict()["total"]
    assert found["household"]["estimate"] == pytest.approx(4 * alone["estimate"])
    assert found["household"]["se"] == pytest.approx(4 * alone["se"], rel=1e-3)
    assert found["voter"]["se"] == pytest.approx(2 * alone["se"], rel=0.02)  # what ignoring the households claims
    # the contributions of the arms add up to each estimate
    program = load_program(tmp_path / "household.parquet", tmp_path / "copies.parquet")
    phi, counts = contributions(program, "ipw")
    assert phi.sum() == pytest.approx(found["household"]["estimate"]) and counts.sum() == 4 * alone["contacts"]


def _measure(plan, outcomes, out):
    result = CliRunner().invoke(main, ["measure", "--plan", str(plan), "--outcomes", str(outcomes),
                                       "--output", str(out)])
    result.output_text = " ".join(result.output.split())
    return result


@pytest.mark.parametrize(("change", "needle"), [
    (lambda f: pd.concat([f, f.tail(1).assign(vid="NEW-1")]), "1 ids are not voters of the plan and 0 of its"),
    (lambda f: f.iloc[5:], "0 ids are not voters of the plan and 5 of its 12000 voters have no outcome"),
    (lambda f: pd.concat([f, f.head(2)]), "2 ids appear more than once"),
    (lambda f: f.assign(voted=f.voted.where(f.index % 100 != 0)), "voted: 120 voters have a missing or non-numeric"),
    (lambda f: f.drop(columns="voted"), "missing the column(s) ['voted']"),
    (lambda f: f.rename(columns={"vid": "voter_id"}), "missing the column(s) ['vid']"),
])
def test_outcomes_that_do_not_match_the_plan_are_refused(tmp_path, change, needle):
    plan, outcomes, _, _ = experiment(tmp_path)
    change(pd.read_parquet(outcomes)).to_parquet(outcomes)
    result = _measure(plan, outcomes, tmp_path / "m.json")
    assert result.exit_code == 2, result.output
    assert needle in result.output_text and "Traceback" not in result.output_text
    assert not (tmp_path / "m.json").exists()
    assert "V0000" not in result.output_text  # counts, never ids


def test_outcomes_as_csv_keep_their_ids(tmp_path):
    plan, outcomes, _, _ = experiment(tmp_path)
    pd.read_parquet(outcomes).to_csv(tmp_path / "outcomes.csv", index=False)
    result = _measure(plan, tmp_path / "outcomes.csv", tmp_path / "m.json")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m.json").read_text())["total"]["contacts"] > 0


def _rewrite(plan, change):
    table = pq.read_table(plan)
    rows = change(table.to_pandas())
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False).replace_schema_metadata(table.schema.metadata),
                   plan)


@pytest.mark.parametrize(("change", "needle"), [
    (lambda f: f.assign(p_mail=np.where(f.index == 7, f.p_mail + 0.05, f.p_mail),
                        p_control=np.where(f.index == 7, f.p_control - 0.05, f.p_control)), "design fingerprint"),
    (lambda f: f.iloc[::-1], "design fingerprint"),
    (lambda f: f.iloc[1:], "design fingerprint"),
    (lambda f: f.assign(assigned=np.where(f.index == 3, "Canvass", f.assigned)), "labels ['Canvass'] are not arms"),
])
def test_a_tampered_plan_is_refused(tmp_path, change, needle):
    plan, outcomes, _, _ = experiment(tmp_path)
    _rewrite(plan, change)
    result = _measure(plan, outcomes, tmp_path / "m.json")
    assert result.exit_code == 2 and needle in result.output_text, result.output
    assert not (tmp_path / "m.json").exists()


def test_a_plan_without_design_or_control_is_refused(tmp_path):
    plan, outcomes, arm, _ = experiment(tmp_path)
    meta = pq.read_schema(plan).metadata
    summary = {k: v for k, v in json.loads(meta[PLAN_METADATA_KEY]).items() if k != "design"}
    table = pq.read_table(plan)
    pq.write_table(table.replace_schema_metadata({**meta, PLAN_METADATA_KEY: json.dumps(summary).encode()}), plan)
    result = _measure(plan, outcomes, tmp_path / "m.json")
    assert result.exit_code == 2 and "the plan records no design" in result.output_text
    everyone = write_design_plan(tmp_path / "all.parquet", pd.read_parquet(outcomes).vid.to_numpy(),
                                 fixed_design(np.full(len(arm), "Mail"), {"Mail": 1.0, CONTROL_ARM: 0.0}),
                                 id_column="vid", outcome=OUTCOME)
    with pytest.raises(PlanError, match="no contact of the plan had a chance of being held out"):
        measure_program(everyone, outcomes)


# -- a planned program of the synthetic model, outcomes from the truth ------------------------
def test_measure_a_planned_program_against_the_truth(champion_uri, campaign, tmp_path):
    voters = campaign.voter_file.sample(20_000, random_state=5).reset_index(drop=True)
    voters.to_parquet(tmp_path / "voters.parquet")
    plan = tmp_path / "plan.parquet"
    result = CliRunner().invoke(main, ["plan", "--model", champion_uri, "--input", str(tmp_path / "voters.parquet"),
                                       "--budget", "2500", "--holdout", "0.2", "--explore", "0.05", "--seed", "3",
                                       "--output", str(plan), "--no-consent", "--as-of", AS_OF])
    assert result.exit_code == 0, result.output
    rows = pd.read_parquet(plan)
    truth = campaign.truth.set_index("voter_id").loc[rows.voter_id]
    tau = np.zeros(len(rows))
    for label in ("Mail", "Phone", "Canvass"):
        got = (rows.assigned == label).to_numpy()
        tau[got] = truth[f"tau_voted_{label.lower()}"].to_numpy()[got]
    voted = (np.random.default_rng(8).random(len(rows)) < truth.p0.to_numpy() + tau).astype(int)
    pd.DataFrame({"voter_id": rows.voter_id, "voted": voted}).to_parquet(tmp_path / "outcomes.parquet")
    out, report = tmp_path / "measure.json", tmp_path / "measure.html"
    result = CliRunner().invoke(main, ["measure", "--plan", str(plan), "--outcomes", str(tmp_path / "outcomes.parquet"),
                                       "--output", str(out), "--report", str(report)])
    assert result.exit_code == 0, result.output
    measured = json.loads(out.read_text())
    summary = read_plan_summary(plan)
    assert measured["design"]["fingerprint"] == summary["design"]["fingerprint"]
    assert measured["cluster_column"] == "precinct" and measured["outcome_model"] is True
    assert measured["total"]["contacts"] == summary["suppression"]["contacted"] == (rows.assigned != "control").sum()
    assert measured["total"]["predicted"] == pytest.approx(summary["total_expected_gain"])
    for name in ("ipw", "dr"):
        total = measured["estimators"][name]["total"]
        assert abs(total["estimate"] - tau.sum()) < 4 * total["se"], (name, total, tau.sum())
    assert measured["estimators"]["dr"]["total"]["se"] < measured["estimators"]["ipw"]["total"]["se"]
    for label, entry in measured["arms"].items():
        if entry["contacts"]:
            assert entry["ci_low"] < entry["estimate"] < entry["ci_high"]
            assert abs(entry["estimate"] - tau[(rows.assigned == label).to_numpy()].sum()) < 4 * entry["se"]
    deciles = pd.DataFrame(measured["deciles"])
    assert list(deciles.decile) == list(range(1, 11)) and deciles.contacts.sum() == measured["total"]["contacts"]
    assert (deciles.predicted_per_contact.diff().dropna() <= 1e-12).all()  # decile 1 = highest expected gain
    text = " ".join(result.output.split())
    assert "incremental votes delivered" in text and f"{measured['total']['contacts']:,}" in text
    html = report.read_text(encoding="utf-8")
    assert "What the program delivered" in html and "Predicted and realized by decile" in html
    assert f"{measured['total']['estimate']:,.1f} [{measured['total']['ci_low']:,.1f}" in html
    assert summary["design"]["fingerprint"] in html
    assert "SYN-" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)


# -- GGL: the experiment itself read as a plan ---------------------------------------------------
def test_ggl_experiment_read_as_a_plan_gives_the_difference_in_means(tmp_path):
    config = load_config("configs/ggl2008.yaml")
    frame = load_experiment(config)
    shares = {**{label: arm.share for label, arm in config.arms.items()}, CONTROL_ARM: config.control_share}
    assigned = np.where(frame.treatment == config.control_label, CONTROL_ARM, frame.treatment.astype(str))
    plan = write_design_plan(tmp_path / "ggl.parquet", frame.voter_id.to_numpy(), fixed_design(assigned, shares),
                             id_column="voter_id", outcome={"column": "primary_06", "kind": "turnout"},
                             clusters=frame.cluster)
    frame[["voter_id", "primary_06"]].to_parquet(tmp_path / "outcomes.parquet")
    result = measure_program(plan, tmp_path / "outcomes.parquet").as_dict()
    for label in config.arms:
        sub = frame[frame.treatment.isin([label, config.control_label])]
        dim = difference_in_means(sub.primary_06, (sub.treatment == label).astype(float), sub.cluster, n_boot=200)
        per = result["estimators"]["ipw"]["arms"][label]["per_contact"]
        assert per["estimate"] == pytest.approx(dim.estimate, abs=1e-9)
        # the cluster-robust interval against the evaluation's cluster bootstrap (200 draws): widths within 20%
        ratio = (per["ci_high"] - per["ci_low"]) / (dim.high - dim.low)
        assert 0.8 < ratio < 1.25, (label, per, dim)
    assert result["clusters"] == frame.cluster.nunique()
