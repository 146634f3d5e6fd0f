"""``persuade score`` and ``persuade plan`` with consent: no path around it, diagnostics, no number in a message.

Issue 19, findings 1, 2, 3, 7 and 8 through the command line (in-process ``CliRunner``,
the session's champion in its temp MLflow store, real files).
"""

from __future__ import annotations

import json
import os
import re
import time

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from consent_cases import AS_OF, KEY, hash_key  # noqa: F401

from features.calling_hours import number_time_zones
from features.phones import PhoneHasher, normalize_phones
from serving.plan_file import read_plan_summary
from training.cli import main

# numbers planted in bad consent tables; no output may repeat them in any spelling
PLANTED = ["(415) 555-0199", "+1 212 555 0187", "646.555.0142", "3125550163"]
PLANTED_DIGITS = [re.sub(r"\D", "", p)[-7:] for p in PLANTED]
TOLL_FREE = "(800) 555-0100"  # not a geographic number: it says nothing of where its owner is


@pytest.fixture(scope="module")
def files(campaign, tmp_path_factory):
    """3,000 voters of the campaign (their phone column renamed ``cell``) and the campaign's consent table."""
    folder = tmp_path_factory.mktemp("consent_cli")
    voters = campaign.voter_file.sample(3000, random_state=11).reset_index(drop=True)
    voters.rename(columns={"phone": "cell"}).to_parquet(folder / "voters.parquet")
    campaign.consent.to_parquet(folder / "consent.parquet")
    return folder, voters


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def plan_args(champion_uri, folder, *extra: str) -> list[str]:
    return ["plan", "--model", champion_uri, "--input", str(folder / "voters.parquet"), "--budget", "400",
            "--output", str(folder / "plan.parquet"), *extra]


def with_toll_free_numbers(voters: pd.DataFrame, every: int = 20) -> pd.DataFrame:
    """``voters`` (phone column ``cell``) with every ``every``-th number toll-free: their local time is unknown.

    The synthetic numbers all have real US area codes, so a test of ``unknown_timezone`` makes its own.
    """
    out = voters.copy()
    out["cell"] = out.cell.astype(object).where(out.index % every != 0, TOLL_FREE)
    return out


def no_planted_number(text: str) -> bool:
    """No planted number in ``text``, in any spelling (digits compared within each run of a number)."""
    runs = [re.sub(r"\D", "", run) for run in re.findall(r"\d[\d\s().+\-]*", text)]
    return not any(digits in run for digits in PLANTED_DIGITS for run in runs)


# -- finding 7: no path around it ---------------------------------------------------------
def test_plan_of_a_model_with_consent_arms_needs_consent_or_no_consent(champion_uri, files):
    folder, _ = files
    (folder / "plan.parquet").unlink(missing_ok=True)
    result = run(*plan_args(champion_uri, folder))
    assert result.exit_code == 2
    assert "['Text'] need consent" in result.output and "--no-consent" in result.output
    assert not (folder / "plan.parquet").exists()
    both = run(*plan_args(champion_uri, folder, "--consent", str(folder / "consent.parquet"), "--no-consent"))
    assert both.exit_code == 2 and "not both" in both.output


def test_plan_with_no_consent_drops_the_arms_that_need_it(champion_uri, files):
    folder, voters = files
    result = run(*plan_args(champion_uri, folder, "--no-consent", "--phone-column", "cell", "--as-of", AS_OF))
    assert result.exit_code == 0, result.output
    plan = pd.read_parquet(folder / "plan.parquet")
    summary = read_plan_summary(folder / "plan.parquet")
    assert len(plan) and "Text" not in set(plan.arm)
    not_allowed = summary["not_allowed"]  # Text, for everybody; live calls in hours where the zone is known
    assert not_allowed["no_consent"] == len(voters) and not_allowed.get("unknown_timezone", 0) < 0.01 * len(voters)
    assert set(not_allowed) <= {"no_consent", "unknown_timezone"}
    applied = summary["provenance"]["consent_applied"]
    assert (applied["table"], applied["no_consent"], applied["dropped_arms"]) == (None, True, ["Text"])
    assert "--no-consent: arms ['Text'] are not planned" in result.output
    unnamed = run(*plan_args(champion_uri, folder, "--no-consent", "--as-of", AS_OF))  # the numbers are in `cell`
    assert unnamed.exit_code == 0, unnamed.output
    assert read_plan_summary(folder / "plan.parquet")["not_allowed"] == {  # no number: no zone, no call
        "unverifiable_phone": len(voters), "unknown_timezone": len(voters)}


def test_plan_with_consent_takes_the_score_options_and_carries_the_number_decided_for(champion_uri, files):
    folder, voters = files
    result = run(*plan_args(champion_uri, folder, "--consent", str(folder / "consent.parquet"), "--as-of", AS_OF,
                            "--phone-column", "cell", "--prerecorded-cap", "0"))
    assert result.exit_code == 0, result.output
    plan = pd.read_parquet(folder / "plan.parquet")
    assert list(plan.columns[:4]) == ["voter_id", "phone_hash", "time_zone", "arm"]
    hasher = PhoneHasher(key=KEY)
    number = dict(zip(voters.voter_id, voters.phone, strict=True))
    texted = plan[plan.arm == "Text"]
    assert len(texted) and all(h == hasher.hash_raw(pd.Series([number[v]]))[0]
                               for v, h in zip(texted.voter_id, texted.phone_hash, strict=True))
    applied = read_plan_summary(folder / "plan.parquet")["provenance"]["consent_applied"]
    assert applied["landline_prerecorded_cap"] == 0 and applied["join"]["voters"] == len(voters)
    assert applied["join"]["phone_missing"] == 0 and applied["join"]["table_phones_matching_no_voter"] > 0
    assert "join: numbers missing 0" in " ".join(result.output.split())
    assert "replaying a past decision only" in " ".join(result.output.split())


def test_score_with_consent_writes_the_hash_and_the_join_diagnostics(champion_uri, files):
    folder, voters = files
    out = folder / "scores.parquet"
    broken = voters.rename(columns={"phone": "cell"})
    broken["cell"] = broken.cell.astype(object).where(voters.index % 10 != 0, "x")
    broken.iloc[:5, broken.columns.get_loc("cell")] = None
    broken.to_parquet(folder / "broken.parquet")
    result = run("score", "--model", champion_uri, "--input", str(folder / "broken.parquet"), "--output", str(out),
                 "--consent", str(folder / "consent.parquet"), "--phone-column", "cell")
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(out)
    bad = (voters.index % 10 == 0) | (voters.index < 5)
    assert not scores.eligible_text[bad].any() and scores.phone_hash[bad].isna().all()
    reasons = scores.suppression_text[bad]
    assert set(reasons) <= {"unverifiable_phone", "do_not_contact"} and (reasons == "unverifiable_phone").mean() > 0.9
    assert scores.phone_hash[~bad].str.fullmatch("[0-9a-f]{64}").all()
    join = json.loads((folder / "scores.parquet.provenance.json").read_text())["consent"]["join"]
    assert join["voters"] == 3000 and join["phone_missing"] == 5 and join["phone_unparseable"] == int(bad.sum()) - 5
    assert f"not parseable {join['phone_unparseable']:,}" in " ".join(result.output.split())


def test_an_old_consent_table_suppresses_automated_contact(champion_uri, files, tmp_path):
    folder, _ = files
    old = tmp_path / "old.parquet"
    old.write_bytes((folder / "consent.parquet").read_bytes())
    three_days_ago = time.time() - 72 * 3600
    os.utime(old, (three_days_ago, three_days_ago))
    result = run("score", "--model", champion_uri, "--input", str(folder / "voters.parquet"), "--output",
                 str(tmp_path / "s.parquet"), "--consent", str(old), "--phone-column", "cell")
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(tmp_path / "s.parquet")
    assert set(scores.suppression_text) <= {"consent_stale", "do_not_contact"}
    assert "automated contact is suppressed (consent_stale)" in " ".join(result.output.split())
    fine = run("score", "--model", champion_uri, "--input", str(folder / "voters.parquet"), "--output",
               str(tmp_path / "s.parquet"), "--consent", str(old), "--phone-column", "cell",
               "--consent-max-age-hours", "100", "--as-of", AS_OF)  # texts within the calling window then
    assert fine.exit_code == 0 and pd.read_parquet(tmp_path / "s.parquet").eligible_text.any()


# -- quiet hours ------------------------------------------------------------------------------
EARLY = "2026-10-01T12:30:00Z"  # 08:30 in New York, before 8 a.m. further west


def test_score_keeps_the_calling_window_in_each_voters_local_time_and_carries_the_zone(champion_uri, files,
                                                                                        tmp_path):
    folder, _ = files
    out = tmp_path / "scores.parquet"
    with_toll_free_numbers(pd.read_parquet(folder / "voters.parquet")).to_parquet(tmp_path / "voters.parquet")
    args = ["score", "--model", champion_uri, "--input", str(tmp_path / "voters.parquet"), "--output", str(out),
            "--consent", str(folder / "consent.parquet"), "--phone-column", "cell", "--as-of", EARLY]
    result = run(*args)
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(out)
    assert list(scores.columns[:3]) == ["voter_id", "phone_hash", "time_zone"]
    assert {"unknown_timezone", "outside_calling_hours"} <= set(scores.suppression_phone.dropna())
    called = scores.eligible_phone | scores.eligible_text
    for zones in scores.time_zone[called].unique():
        assert all(8 <= pd.Timestamp(EARLY).tz_convert(zone).hour < 21 for zone in zones.split()), zones
    assert scores.eligible_phone.any() and scores.eligible_mail.mean() > 0.9
    assert "quiet hours: phone and text arms only within 08:00-21:00" in " ".join(result.output.split())
    assert json.loads((tmp_path / "scores.parquet.provenance.json").read_text())["consent"]["calling_hours"] == \
        "08:00-21:00"
    narrowed = run(*args, "--calling-hours", "09:00-20:00")  # 08:30 in New York: only Atlantic zones remain
    assert narrowed.exit_code == 0, narrowed.output
    scores = pd.read_parquet(out)
    still = scores.eligible_phone | scores.eligible_text
    assert still.sum() < called.sum()
    for zones in scores.time_zone[still].unique():
        assert all(9 <= pd.Timestamp(EARLY).tz_convert(zone).hour < 20 for zone in zones.split()), zones
    wider = run(*args, "--calling-hours", "07:00-22:00")
    assert wider.exit_code == 2 and "never widened past 08:00-21:00" in " ".join(wider.output.split())


def test_plan_takes_the_address_state_as_a_source_of_the_local_time(champion_uri, files, tmp_path):
    folder, _ = files
    (folder / "plan.parquet").unlink(missing_ok=True)
    voters = with_toll_free_numbers(pd.read_parquet(folder / "voters.parquet"))
    voters.assign(st="NY").to_parquet(tmp_path / "voters.parquet")
    common = ["plan", "--model", champion_uri, "--input", str(tmp_path / "voters.parquet"), "--budget", "400",
              "--consent", str(folder / "consent.parquet"), "--phone-column", "cell", "--as-of", EARLY]
    result = run(*common, "--output", str(tmp_path / "plan.parquet"), "--state-column", "st",
                 "--calling-hours", "08:00-20:00")
    assert result.exit_code == 0, result.output
    plan, summary = pd.read_parquet(tmp_path / "plan.parquet"), read_plan_summary(tmp_path / "plan.parquet")
    assert summary["not_allowed"].get("outside_calling_hours", 0) > 0
    # every voter is in New York (08:30) as well as in the zone of the number: only east-coast numbers are called
    number = dict(zip(voters.voter_id, voters.cell, strict=True))
    called = plan[plan.arm.isin(["Phone", "Text"])]
    assert len(called) and summary["provenance"]["consent_applied"]["calling_hours"] == "08:00-20:00"
    zones = number_time_zones(normalize_phones(called.voter_id.map(number)))
    assert all(8 <= pd.Timestamp(EARLY).tz_convert(z).hour < 20 for row in zones for z in row)
    without_state = run(*common, "--output", str(tmp_path / "plan2.parquet"))  # number only: more voters in reach
    assert without_state.exit_code == 0, without_state.output
    assert read_plan_summary(tmp_path / "plan2.parquet")["not_allowed"].get("unknown_timezone", 0) > \
        summary["not_allowed"].get("unknown_timezone", 0)


def test_plan_carries_the_local_time_zone_of_its_phone_and_text_contacts(champion_uri, files, tmp_path):
    folder, _ = files
    voters = with_toll_free_numbers(pd.read_parquet(folder / "voters.parquet"))
    voters.to_parquet(tmp_path / "voters.parquet")
    common = ["--model", champion_uri, "--input", str(tmp_path / "voters.parquet"), "--consent",
              str(folder / "consent.parquet"), "--phone-column", "cell", "--as-of", AS_OF]
    result = run("plan", *common, "--budget", "1500", "--output", str(tmp_path / "plan.parquet"))
    assert result.exit_code == 0, result.output
    assert run("score", *common, "--output", str(tmp_path / "scores.parquet")).exit_code == 0
    plan = pd.read_parquet(tmp_path / "plan.parquet")
    zone = pd.read_parquet(tmp_path / "scores.parquet").set_index("voter_id").time_zone  # what score carries
    assert list(plan.columns[:4]) == ["voter_id", "phone_hash", "time_zone", "arm"]
    timed = plan.arm.isin(["Phone", "Text"])
    assert "Text" in set(plan.arm[timed]), "the plan must text someone"
    assert plan.time_zone[timed].notna().all() and plan.time_zone[~timed].isna().all()  # mail, doors, not contacted
    assert plan.time_zone[timed].tolist() == zone.loc[plan.voter_id[timed]].tolist()
    assert not plan.voter_id[timed].isin(voters.voter_id[voters.cell == TOLL_FREE]).any()  # unknown zone: no call


NIGHT = "2026-10-01T09:30:00Z"  # 05:30 in New York, 23:30 in Honolulu: outside 8 a.m.-9 p.m. everywhere


def test_no_consent_still_keeps_quiet_hours_and_carries_the_zone_of_live_calls(champion_uri, files, tmp_path):
    """--no-consent drops the arms that need consent (Text), not the calling window of the live calls it keeps."""
    folder, _ = files
    voters = with_toll_free_numbers(pd.read_parquet(folder / "voters.parquet"))
    voters.to_parquet(tmp_path / "voters.parquet")
    toll_free = voters.cell == TOLL_FREE
    common = ["--model", champion_uri, "--input", str(tmp_path / "voters.parquet"), "--no-consent",
              "--phone-column", "cell"]
    day = run("score", *common, "--as-of", AS_OF, "--output", str(tmp_path / "day.parquet"))
    assert day.exit_code == 0, day.output
    assert "no consent table (--no-consent)" in " ".join(day.output.split())
    scores = pd.read_parquet(tmp_path / "day.parquet").set_index("voter_id").loc[voters.voter_id]
    assert "phone_hash" not in scores.columns and not scores.eligible_text.any()
    known = scores.time_zone.notna()
    assert (scores.eligible_phone == known).all() and known[~toll_free.to_numpy()].mean() > 0.99  # in hours then
    assert set(scores.suppression_phone[~known]) == {"unknown_timezone"} and not known[toll_free.to_numpy()].any()
    night = run("score", *common, "--as-of", NIGHT, "--output", str(tmp_path / "night.parquet"))
    assert night.exit_code == 0, night.output
    scores = pd.read_parquet(tmp_path / "night.parquet")
    assert not scores.eligible_phone.any()
    assert set(scores.suppression_phone) == {"outside_calling_hours", "unknown_timezone"}
    applied = json.loads((tmp_path / "night.parquet.provenance.json").read_text())["consent"]
    assert applied["no_consent"] and applied["table"] is None and applied["dropped_arms"] == ["Text"]
    assert applied["calling_hours"] == "08:00-21:00" and applied["join"]["voters"] == len(voters)
    plan = run("plan", *common, "--as-of", NIGHT, "--budget", "1500", "--output", str(tmp_path / "plan.parquet"))
    assert plan.exit_code == 0, plan.output
    assert not pd.read_parquet(tmp_path / "plan.parquet").arm.isin(["Phone", "Text"]).any()


def test_score_and_plan_take_the_rules_settings_from_the_run_configs_consent_block(champion_uri, campaign_dir,
                                                                                     files, tmp_path):
    folder, _ = files
    pd.read_parquet(folder / "voters.parquet").assign(st="NY").to_parquet(tmp_path / "voters.parquet")
    raw = yaml.safe_load((campaign_dir / "synthetic_voted.yaml").read_text())
    raw["consent"] = {**raw["consent"], "calling_hours": "09:00-20:00", "state_column": "st", "phone_column": "cell",
                      "landline_prerecorded_cap": 1, "cap_window_days": 14}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    common = ["--model", champion_uri, "--input", str(tmp_path / "voters.parquet"), "--consent",
              str(folder / "consent.parquet"), "--as-of", EARLY, "--config", str(config)]  # 08:30 in New York
    result = run("score", *common, "--output", str(tmp_path / "scores.parquet"))
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    applied = json.loads((tmp_path / "scores.parquet.provenance.json").read_text())["consent"]
    assert (applied["calling_hours"], applied["landline_prerecorded_cap"], applied["window_days"]) == (
        "09:00-20:00", 1, 14)
    assert scores.phone_hash.notna().all()  # the numbers of consent.phone_column
    assert scores.time_zone.str.contains("America/New_York").all()  # and the state of consent.state_column
    assert not scores.eligible_phone.any() and set(scores.suppression_phone) <= {"outside_calling_hours",
                                                                                  "do_not_contact"}
    flag = run("score", *common, "--calling-hours", "08:00-21:00", "--output", str(tmp_path / "flag.parquet"))
    assert flag.exit_code == 0, flag.output  # a flag given wins over the config
    assert json.loads((tmp_path / "flag.parquet.provenance.json").read_text())["consent"]["calling_hours"] == \
        "08:00-21:00"
    assert pd.read_parquet(tmp_path / "flag.parquet").eligible_phone.any()  # east-coast numbers, 08:30 there
    plan = run("plan", *common, "--budget", "400", "--output", str(tmp_path / "plan.parquet"))
    assert plan.exit_code == 0, plan.output
    summary = read_plan_summary(tmp_path / "plan.parquet")
    assert summary["provenance"]["consent_applied"]["calling_hours"] == "09:00-20:00"
    assert not pd.read_parquet(tmp_path / "plan.parquet").arm.isin(["Phone", "Text"]).any()
    for block, message in (({"calling_hour": "09:00-20:00"}, "consent.calling_hour: unknown key"),
                           ({"calling_hours": "07:00-21:00"}, "never widened past 08:00-21:00")):
        config.write_text(yaml.safe_dump({**raw, "consent": block}))
        refused = run("score", *common, "--output", str(tmp_path / "refused.parquet"))
        assert refused.exit_code == 2 and message in " ".join(refused.output.split()), refused.output
        assert not (tmp_path / "refused.parquet").exists()


# -- finding 8: no number in any message ----------------------------------------------------
@pytest.mark.parametrize("bad", [
    {"event": PLANTED[0]},
    {"event": "line_type", "line_type": PLANTED[1]},
    {"event": "consent", "scope": PLANTED[2], "source": "written", "timestamp": "2026-01-01T00:00:00Z"},
    {"event": "revocation", "keyword": "STOP", "timestamp": PLANTED[3]},
    {"event": "do_not_contact", "phone": PLANTED[0] + " ext 4"},
])
def test_errors_about_a_bad_table_never_repeat_a_number(champion_uri, files, tmp_path, bad):
    folder, _ = files
    table = tmp_path / "bad.csv"
    pd.DataFrame([{"voter_id": "VF-1", "phone": PLANTED[1], "event": "do_not_contact"},
                  {"voter_id": "VF-2", **bad}]).to_csv(table, index=False)
    for args in (["score", "--model", champion_uri, "--input", str(folder / "voters.parquet"), "--output",
                  str(tmp_path / "s.parquet")],
                 plan_args(champion_uri, folder)):
        result = run(*args, "--consent", str(table), "--phone-column", "cell")
        assert result.exit_code == 2, result.output
        assert "consent table bad.csv" in result.output and "Traceback" not in result.output
        assert no_planted_number(result.output), result.output
