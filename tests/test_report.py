"""The explanation reports: the model report of a run (logged to MLflow) and the list report."""

from __future__ import annotations

import base64
import json
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from cli_invoke import persuade

from features.config import ConsentSpec, Delivery, load_config
from features.consent import REASON_TEXT, ConsentTable, EligibilityRules, Reason, eligibility_for, suppression_counts
from features.phones import HASH_KEY_ENV
from serving.bundle import ArmInfo
from serving.model_report import MODEL_REPORT_ARTIFACT
from serving.provenance import ScoreProvenance
from training.report_blocks import CONSENT_READING, REPORT_TAG, consent_summary
from training.splits import holdout_mask

KEY = "report-test-key-0123456789"
EVERY_DELIVERY = [ArmInfo(d.value, "phone" if d.value.endswith("call") else d.value, d.value) for d in Delivery]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def _hash_key():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(HASH_KEY_ENV, KEY)
        yield


@pytest.fixture(scope="module")
def model_report(trained, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("reports") / "model.html"
    done = persuade("report", "--run", trained.run_id, "--output", str(out), "--shap-rows", "500")
    assert done.returncode == 0, done.stderr
    assert f"model report: {out.resolve()}" in done.stdout
    assert f"logged to run {trained.run_id} as {MODEL_REPORT_ARTIFACT}" in done.stdout
    return out, out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def run_artifacts(model_report, trained, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("artifacts")
    mlflow.artifacts.download_artifacts(run_id=trained.run_id, dst_path=str(dst))
    return dst


def _images(html: str) -> list[bytes]:
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    return [base64.b64decode(s.split(",", 1)[1]) for s in sources]


def test_model_report_is_one_self_contained_file(model_report):
    _, html = model_report
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from a network
    assert "<link" not in html.replace('<link rel="icon" href="data:,">', "")
    images = _images(html)
    # turnout SHAP (2) + per arm: SHAP bar and beeswarm, Qini, deciles (4 x 4) + calibration
    assert len(images) == 2 + 4 * 4 + 1
    assert all(img.startswith(PNG_MAGIC) and len(img) > 2_000 for img in images)


def test_the_references_table_says_what_the_runs_selection_metric_scored(model_report):
    from training.model_report import METRIC_MEANING

    _, html = model_report
    # the suite's champion is trained with the default metric, the doubly-robust Qini
    assert f"Value: {METRIC_MEANING['dr_qini']}" in html.replace("&#x27;", "'")
    assert METRIC_MEANING["policy_value"] not in html


def test_model_report_is_logged_to_the_run_at_a_fixed_place(model_report, run_artifacts, trained):
    _, html = model_report
    assert (run_artifacts / MODEL_REPORT_ARTIFACT).read_text(encoding="utf-8") == html
    assert (run_artifacts / "report" / "fairness.csv").exists()
    assert (run_artifacts / "report" / "consent_suppression.csv").exists()
    run = mlflow.MlflowClient().get_run(trained.run_id)
    assert run.data.tags[REPORT_TAG] == MODEL_REPORT_ARTIFACT


def test_model_card_names_data_model_features_and_exclusions(model_report, run_artifacts, trained):
    _, html = model_report
    fingerprint = json.loads((run_artifacts / "data" / "fingerprint.json").read_text())
    assert fingerprint["sha256"] in html
    assert "has the fingerprint the run was trained on" in html
    for arm, rows in fingerprint["rows_per_arm"].items():
        assert f">{arm}" in html and f">{rows:,}<" in html
    features = json.loads((run_artifacts / "features.json").read_text())
    assert ", ".join(features["features"]) in html
    for column, why in features["excluded"].items():
        assert f"<td class=\"text\">{column}</td><td class=\"text\">{why}</td>" in html
    assert "protected attribute (kept aside for the fairness audit)" in html
    assert trained.result.learner in html
    run = mlflow.MlflowClient().get_run(trained.run_id)
    assert run.data.tags["persuade.code_version"] in html
    assert f"persuade-synthetic-voted version {trained.version}" in html
    for section in ("Model card", "What drives the scores (global SHAP)", "Qini curves and deciles",
                    "Turnout calibration", "Fairness audit", "Consent and suppression"):
        assert f"<h2>{section}</h2>" in html


def test_fairness_table_covers_the_hold_out_and_flags_by_the_band(run_artifacts, campaign_dir):
    table = pd.read_csv(run_artifacts / "report" / "fairness.csv", keep_default_na=False, na_values=[""])
    config = load_config(campaign_dir / "synthetic_voted.yaml")
    voters = pd.read_parquet(campaign_dir / "voter_file.parquet")
    held = holdout_mask(voters[config.group_column], config.split.holdout_fraction, config.split.seed)
    assert set(table.arm) == {"Mail", "Phone", "Text", "Canvass", "any arm"}
    assert set(table.attribute) == {"sex"}
    for _, rows in table.groupby("arm"):
        assert rows.voters.sum() == held.sum()
        assert rows.targeted.sum() <= round(0.2 * held.sum())
        assert rows.loc[rows.reference.astype(bool), "ratio_to_reference"].tolist() == [1.0]
    band = config.audit.band
    outside = ~table.ratio_to_reference.between(*band) & (table.voters >= config.audit.min_group_size)
    assert (table.flag == "outside band").tolist() == outside.tolist()
    # texts need consent: only hold-out voters who may be texted are targeted with Text
    from serving.bundle import ArmInfo

    holdout = voters[held]
    eligible = eligibility_for(holdout, [ArmInfo("Text", "text", "text")], ConsentTable.read(
        campaign_dir / "consent.parquet"), as_of=config.consent.as_of).eligible_text
    text = table[table.arm == "Text"]
    assert 0 < text.targeted.sum() <= eligible.sum() < 0.5 * held.sum()


def test_consent_counts_are_those_of_the_configured_table(run_artifacts, campaign_dir):
    counts = pd.read_csv(run_artifacts / "report" / "consent_suppression.csv")
    config = load_config(campaign_dir / "synthetic_voted.yaml")
    voters = pd.read_parquet(campaign_dir / "voter_file.parquet")
    table = ConsentTable.read(campaign_dir / "consent.parquet")
    from serving.bundle import ArmInfo

    arms = [ArmInfo(k, v.channel.value, v.resolved_delivery.value) for k, v in config.arms.items()]
    expected = suppression_counts(eligibility_for(voters, arms, table, EligibilityRules(), config.consent.as_of),
                                  arms)
    pd.testing.assert_frame_equal(counts, expected, check_dtype=False)
    text = counts[counts.arm == "Text"].set_index("reason").voters
    assert (text[["revoked", "no_consent", "landline_cannot_text", "do_not_contact"]] > 0).all()
    mail = counts[counts.arm == "Mail"].set_index("reason").voters
    assert mail.sum() == len(voters) and set(mail.index) == {"eligible", "do_not_contact"}


def test_mail_only_arms_need_no_consent_and_suppress_nobody():
    config = load_config("configs/ggl2008.yaml")
    voters = pd.DataFrame({"voter_id": [f"MI-{i}" for i in range(50)]})
    _, counts, html = consent_summary(config, config.arms, voters)
    assert counts[counts.reason != "eligible"].voters.sum() == 0
    assert counts[counts.reason == "eligible"].voters.tolist() == [50] * 4
    assert "Every arm is delivered by mail, which needs no consent" in html


def test_without_a_consent_table_arms_that_need_consent_are_suppressed_for_everybody(campaign_dir):
    config = load_config(campaign_dir / "synthetic_voted.yaml").model_copy(
        update={"consent": load_config("configs/ggl2008.yaml").consent})
    voters = pd.DataFrame({"voter_id": ["a", "b"], "phone": ["415 555 2671", "415 555 2672"]})
    _, counts, html = consent_summary(config, config.arms, voters)
    text = counts[counts.arm == "Text"].set_index("reason").voters
    assert text["no_consent"] == 2 and text["eligible"] == 0
    assert "No consent table is configured" in html


def test_every_reason_code_the_rules_can_emit_is_explained_in_the_consent_section(campaign_dir):
    # the codes CONSENT_READING names are the features' constants, quiet hours and the fail-closed ones among them
    named = set(re.findall(r"\(([a-z_]+)\)", CONSENT_READING))
    assert named <= {r.value for r in Reason}
    assert {"unverifiable_phone", "consent_stale", "outside_calling_hours", "unknown_timezone"} <= named
    # every reason a delivery can be suppressed for is counted and in the legend, seen in these voters or not
    config = load_config(campaign_dir / "synthetic_voted.yaml")
    voters = pd.DataFrame({"voter_id": ["a"], "phone": ["415 555 2671"]})
    _, counts, body = consent_summary(config, EVERY_DELIVERY, voters)
    assert counts[counts.reason == "outside_calling_hours"].voters.sum() == 0  # not seen ...
    text = unescape(body)
    for reason in Reason:  # ... and explained all the same
        assert f"{reason.value}" in text and REASON_TEXT[reason] in text, reason
    assert "Then quiet hours" in text and "time_zone" in text


def test_the_model_report_keeps_the_run_configs_calling_hours(campaign_dir):
    config = load_config(campaign_dir / "synthetic_voted.yaml")
    config = config.model_copy(update={"consent": ConsentSpec(**{
        **config.consent.model_dump(exclude={"calling_hours", "state_column"}), "as_of": "2026-10-01T12:30:00Z",
        "calling_hours": "09:00-20:00", "state_column": "st"})})  # 08:30 in New York
    voters = pd.DataFrame({"voter_id": ["a", "b"], "phone": ["(212) 555-0100", "(212) 555-0101"], "st": ["NY", "CA"]})
    eligibility, counts, body = consent_summary(config, config.arms, voters)
    phone = counts[counts.arm == "Phone"].set_index("reason").voters
    assert phone["outside_calling_hours"] == 2  # inside 08:00-21:00 in New York, not inside 09:00-20:00
    assert eligibility.time_zone.tolist() == ["America/New_York", "America/Los_Angeles America/New_York"]  # st read
    assert "phone and text arms only within 09:00-20:00" in unescape(body) and "'st' column" in unescape(body)


# -- the list report -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def list_report(champion_uri, campaign_dir, tmp_path_factory) -> tuple[pd.DataFrame, str, dict]:
    folder = tmp_path_factory.mktemp("scored")
    scores_path = folder / "scores.parquet"
    done = persuade("score", "--model", champion_uri, "--input", str(campaign_dir / "voter_file.parquet"),
                    "--output", str(scores_path), "--consent", str(campaign_dir / "consent.parquet"),
                    "--as-of", "2026-10-01T00:00:00Z")
    assert done.returncode == 0, done.stderr
    done = persuade("report", "--scores", str(scores_path), "--shap-rows", "300")
    assert done.returncode == 0, done.stderr
    out = folder / "scores_report.html"
    assert f"list report: {out.resolve()}" in done.stdout
    provenance = json.loads(ScoreProvenance.path_for(scores_path).read_text())
    return pd.read_parquet(scores_path), out.read_text(encoding="utf-8"), provenance


class _TableParser(HTMLParser):
    """The cells of the first HTML table fed to it."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None
        self.done = False

    def handle_starttag(self, tag, attrs):
        if self.done:
            return
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None and not self.done:
            self.rows[-1].append("".join(self.cell))
            self.cell = None
        elif tag == "table":
            self.done = True

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def _number(text: str) -> object:
    clean = text.replace(",", "").replace("%", "").replace(" pp", "")
    try:
        return float(clean)
    except ValueError:
        return text


def _table_after(html: str, heading: str) -> pd.DataFrame:
    """The first table after ``heading`` in the report, numbers parsed."""
    parser = _TableParser()
    parser.feed(html[html.index(heading):])
    head, *rows = parser.rows
    return pd.DataFrame([[_number(c) for c in row] for row in rows], columns=head)


def test_list_report_counts_scored_suppressed_and_targeted_per_arm(list_report):
    scores, html, _ = list_report
    assert f"{len(scores):,} voters scored" in html
    targeting = _table_after(html, "<h2>Scored, targeted and expected outcomes</h2>").set_index("arm")
    for label, slug in (("Mail", "mail"), ("Phone", "phone"), ("Text", "text"), ("Canvass", "canvass")):
        row = targeting.loc[label]
        target = scores.best_arm == label
        assert row.targeted == target.sum()
        assert row.eligible == scores[f"eligible_{slug}"].sum()
        assert row.suppressed == (~scores[f"eligible_{slug}"]).sum()
        assert row.expected_incremental == pytest.approx(scores.loc[target, "best_uplift"].sum(), abs=0.06)
    assert targeting.loc["control (contact nobody)"].targeted == (scores.best_arm == "control").sum()
    budgets = _table_after(html, "<h3>At a contact budget: the most persuadable voters first</h3>")
    ranked = scores.loc[scores.best_arm != "control", "best_uplift"].sort_values(ascending=False).to_numpy()
    top20 = budgets.set_index("share_of_list").loc[20.0]
    assert top20.voters_contacted == min(round(0.2 * len(scores)), len(ranked))
    assert top20.expected_incremental == pytest.approx(ranked[: int(top20.voters_contacted)].sum(), abs=0.06)
    assert budgets.iloc[-1].voters_contacted == len(ranked)
    suppression = _table_after(html, "<h2>Consent suppression</h2>").set_index("arm")
    for reason in ("revoked", "no_consent", "landline_cannot_text", "do_not_contact"):
        assert suppression.loc["Text", reason] == (scores.suppression_text == reason).sum()
    assert suppression.loc["Mail", "do_not_contact"] == (~scores.eligible_mail).sum()


def test_list_report_names_the_model_run_data_and_consent_table(list_report, trained):
    _, html, provenance = list_report
    text = unescape(html)
    assert "phone and text only within 08:00-21:00 in each voter's local time (time_zone)" in text
    for reason in (Reason.outside_calling_hours, Reason.unknown_timezone):  # explained as the other codes are
        assert REASON_TEXT[reason] in text
    assert f"persuade-synthetic-voted version {trained.version}" in html
    assert trained.run_id in html
    assert trained.fingerprint["sha256"] in html
    assert "voter_file.parquet" in html and "consent.parquet" in html
    assert provenance["consent"]["fingerprint"][:16] in html


def test_list_report_tallies_the_top_reasons_behind_targeting(list_report, trained):
    scores, html, _ = list_report
    features = set(trained.result.model.feature_names)
    for label in ("Mail", "Phone", "Text", "Canvass"):
        n = (scores.best_arm == label).sum()
        if n == 0:
            continue
        tally = _table_after(html, f"<h3>{label}: {min(n, 300):,} targeted voters explained</h3>")
        assert set(tally.reason) <= features
        assert tally.voters.sum() == min(n, 300)
    assert len(_images(html)) >= 2


def test_report_refuses_unclear_requests(tmp_path, trained):
    done = persuade("report")
    assert done.returncode == 2 and "exactly one of --run" in done.stderr
    done = persuade("report", "--run", "0" * 32)
    assert done.returncode == 2 and "0" * 32 in done.stderr and "Traceback" not in done.stderr
    lone = tmp_path / "lone.parquet"
    pd.DataFrame({"voter_id": ["a"], "best_arm": ["control"], "best_uplift": [np.float64(0)]}).to_parquet(lone)
    done = persuade("report", "--scores", str(lone))
    assert done.returncode == 2 and "pass --model" in done.stderr
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(bad)
    done = persuade("report", "--scores", str(bad), "--model", f"models:/{trained.model_name}@champion")
    assert done.returncode == 2 and "not a persuade scores file" in done.stderr


def test_list_report_of_a_list_scored_without_consent_says_so(champion_uri, campaign_dir, tmp_path):
    scores_path = tmp_path / "no_consent.parquet"
    done = persuade("score", "--model", champion_uri, "--input", str(campaign_dir / "voter_file.parquet"),
                    "--output", str(scores_path))
    assert done.returncode == 0, done.stderr
    assert "warning: scored without --consent: arms ['Text'] need consent" in done.stderr
    done = persuade("report", "--scores", str(scores_path), "--output", str(tmp_path / "r.html"), "--shap-rows", "10")
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "scored without eligibility (no --consent)" in html
    assert "Text must not be used from it (they need consent)" in html
    assert "<th>consent table</th><td>none applied</td>" in html
