"""The fairness audit: targeting rates, ratios, flags, predicted and observed uplift by group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.config import load_config
from training.fairness import ANY_ARM, MISSING_GROUP, FairnessAudit, flagged


def _frame(n_f: int, n_m: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sex = np.array(["F"] * n_f + ["M"] * n_m)
    age = rng.integers(18, 90, n_f + n_m)
    return pd.DataFrame({"sex": sex, "age": age})


def _row(table: pd.DataFrame, arm: str, attribute: str, group: str) -> pd.Series:
    return table.set_index(["arm", "attribute", "group"]).loc[(arm, attribute, group)]


def test_targeting_rates_ratios_and_flags_follow_the_scores():
    # 1000 women, 1000 men; the arm's uplift is high for 300 women and 100 men.
    frame = _frame(1000, 1000)
    score = np.full(2000, -0.01)
    score[:300] = 0.05
    score[1000:1100] = 0.04
    uplift = pd.DataFrame({"Mail": score})
    assigned = np.where(np.arange(2000) % 2 == 0, "Mail", "Control")
    audit = FairnessAudit(["sex"], budget_fraction=0.2)
    table = audit.audit(frame, uplift, assigned, np.zeros(2000), "Control")
    f, m = _row(table, "Mail", "sex", "F"), _row(table, "Mail", "sex", "M")
    # budget 400 voters: all 300 women with 0.05, then the 100 men with 0.04
    assert (f.targeted, m.targeted) == (300, 100)
    assert f.targeting_rate == pytest.approx(0.3) and m.targeting_rate == pytest.approx(0.1)
    assert f.reference and not m.reference  # equal sizes: the first by name is the reference
    assert m.ratio_to_reference == pytest.approx(1 / 3)
    assert (f.flag, m.flag) == ("", "outside band")
    assert f.mean_predicted_uplift == pytest.approx((300 * 0.05 - 700 * 0.01) / 1000)
    assert list(flagged(table).group) == ["M", "M"]  # Mail and "any arm"


def test_reference_group_can_be_configured_and_ratios_are_within_the_band_when_equal():
    frame = _frame(500, 500)
    score = np.tile([0.05, -0.01], 500)
    table = FairnessAudit(["sex"], budget_fraction=0.5, reference={"sex": "M"}).audit(
        frame, pd.DataFrame({"A": score}), np.array(["A"] * 1000), np.zeros(1000), "C")
    f, m = _row(table, "A", "sex", "F"), _row(table, "A", "sex", "M")
    assert m.reference and f.ratio_to_reference == pytest.approx(1.0)
    assert set(table.flag) == {""}


def test_unknown_reference_group_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"group 'X' of 'sex' is not in the data"):
        FairnessAudit(["sex"], reference={"sex": "X"}).audit(
            _frame(10, 10), pd.DataFrame({"A": np.zeros(20)}), np.array(["A"] * 20), np.zeros(20), "C")


def test_only_positive_uplift_is_targeted_whatever_the_budget():
    frame = _frame(100, 100)
    score = np.r_[np.full(10, 0.02), np.full(190, -0.02)]
    table = FairnessAudit(["sex"], budget_fraction=1.0, min_group_size=1).audit(
        frame, pd.DataFrame({"A": score}), np.array(["A"] * 200), np.zeros(200), "C")
    assert _row(table, "A", "sex", "F").targeted == 10
    assert _row(table, "A", "sex", "M").targeted == 0


def test_voters_an_arm_is_not_allowed_for_are_never_targeted_with_it():
    frame = _frame(100, 100)
    uplift = pd.DataFrame({"Text": np.full(200, 0.05), "Mail": np.full(200, 0.01)})
    allowed = pd.DataFrame({"Text": np.r_[np.zeros(100, bool), np.ones(100, bool)], "Mail": np.ones(200, bool)})
    audit = FairnessAudit(["sex"], budget_fraction=1.0, min_group_size=1)
    table = audit.audit(frame, uplift, np.array(["Text"] * 200), np.zeros(200), "Control", allowed)
    assert _row(table, "Text", "sex", "F").targeted == 0
    assert _row(table, "Text", "sex", "M").targeted == 100
    # reference: F (equal sizes: the first by name), which nobody may be texted: any rate is out of band
    assert _row(table, "Text", "sex", "F").reference
    assert _row(table, "Text", "sex", "M").flag == "outside band"
    assert _row(table, "Text", "sex", "F").mean_predicted_uplift == pytest.approx(0.05)  # the model's, not masked
    # "any arm": women may still get mail
    assert _row(table, ANY_ARM, "sex", "F").targeted == 100


def test_observed_uplift_is_the_difference_in_means_within_the_group():
    n = 400
    frame = pd.DataFrame({"sex": np.repeat(["F", "M"], n // 2)})
    assigned = np.tile(["A", "C"], n // 2)
    y = np.zeros(n)
    y[(frame.sex == "F").to_numpy() & (assigned == "A")] = 1.0  # women: +100 pp when treated
    y[(frame.sex == "M").to_numpy()] = 0.5  # men: no effect
    table = FairnessAudit(["sex"], min_group_size=1).audit(
        frame, pd.DataFrame({"A": np.linspace(0.1, 0.0, n)}), assigned, y, "C")
    assert _row(table, "A", "sex", "F").observed_uplift == pytest.approx(1.0)
    assert _row(table, "A", "sex", "M").observed_uplift == pytest.approx(0.0)
    # the top 20% (80 voters, all women): arm minus control among them
    assert _row(table, "A", "sex", "F").observed_uplift_targeted == pytest.approx(1.0)
    assert np.isnan(_row(table, "A", "sex", "M").observed_uplift_targeted)  # nobody targeted


def test_age_is_audited_in_bands_and_missing_values_get_their_own_group():
    frame = pd.DataFrame({"age": [18, 29, 30, 44, 45, 64, 65, 99, None]})
    groups = FairnessAudit(["age"], age_bands=[30, 45, 65]).groups(frame, "age").tolist()
    assert groups == ["<30", "<30", "30-44", "30-44", "45-64", "45-64", "65+", "65+", MISSING_GROUP]


def test_small_groups_are_reported_but_not_flagged():
    frame = pd.DataFrame({"sex": ["F"] * 950 + ["X"] * 50})
    score = np.r_[np.full(950, -0.01), np.full(50, 0.05)]
    table = FairnessAudit(["sex"], budget_fraction=0.05, min_group_size=100).audit(
        frame, pd.DataFrame({"A": score}), np.array(["A"] * 1000), np.zeros(1000), "C")
    x = _row(table, "A", "sex", "X")
    assert x.targeted == 50 and x.flag == "small group"


def test_a_protected_attribute_missing_from_the_data_is_named():
    with pytest.raises(ValueError, match=r"protected attribute 'race' is not in the data"):
        FairnessAudit(["race"]).audit(_frame(5, 5), pd.DataFrame({"A": np.zeros(10)}), np.array(["A"] * 10),
                                      np.zeros(10), "C")


@pytest.mark.parametrize("kwargs", [{"budget_fraction": 0.0}, {"band": (1.2, 1.5)}, {"age_bands": [45, 30]}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        FairnessAudit(["sex"], **kwargs).audit(_frame(5, 5), pd.DataFrame({"A": np.zeros(10)}),
                                                np.array(["A"] * 10), np.zeros(10), "C")


def test_from_config_reads_the_ggl_audit_settings():
    audit = FairnessAudit.from_config(load_config("configs/ggl2008.yaml"))
    assert list(audit.attributes) == ["sex", "age"]
    assert audit.budget_fraction == 0.2 and tuple(audit.band) == (0.8, 1.25)
    assert list(audit.age_bands) == [30, 45, 65]


def test_ties_at_the_budget_edge_are_broken_at_random_not_by_row_order():
    # every voter has the same uplift and the rows are sorted by group: row order would target women only
    frame = _frame(1000, 1000)
    table = FairnessAudit(["sex"], budget_fraction=0.5).audit(
        frame, pd.DataFrame({"A": np.full(2000, 0.01)}), np.array(["A"] * 2000), np.zeros(2000), "C")
    f, m = _row(table, "A", "sex", "F"), _row(table, "A", "sex", "M")
    assert f.targeted + m.targeted == 1000
    assert 0.9 < m.ratio_to_reference < 1.1


# -- groups by role, not by column name ----------------------------------------------
def _ggl_with(tmp_path, **changes):
    import yaml

    from features.config import load_config as load

    data = yaml.safe_load(open("configs/ggl2008.yaml"))
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    data["data"] = {"table": str((Path("data/ggl2008/ggl2008.parquet")).resolve())}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return load(path)


def _voter_file_ages(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"sex": rng.choice(["F", "M"], n), "vf_age": rng.integers(18, 63, n)})  # 45 ages


def test_the_age_column_is_named_in_the_config_whatever_it_is_called(tmp_path):
    config = _ggl_with(tmp_path, protected=["sex", "vf_age"], audit={"age_column": "vf_age"})
    audit = FairnessAudit.from_config(config)
    assert audit.age_attribute == "vf_age"
    frame = pd.DataFrame({"vf_age": [18, 29, 30, 44, 45, 64, 65, 99, None]})
    assert audit.groups(frame, "vf_age").tolist() == ["<30", "<30", "30-44", "30-44", "45-64", "45-64", "65+",
                                                      "65+", MISSING_GROUP]


def test_the_ggl_config_still_bands_its_age_column():
    audit = FairnessAudit.from_config(load_config("configs/ggl2008.yaml"))
    assert audit.age_attribute == "age"
    assert audit.groups(pd.DataFrame({"age": [20, 50]}), "age").tolist() == ["<30", "45-64"]


def test_a_numeric_protected_attribute_with_many_values_is_audited_in_quantile_bands_not_one_value_at_a_time():
    frame = _voter_file_ages(2000)
    score = pd.DataFrame({"A": np.random.default_rng(1).normal(0.01, 0.02, 2000)})
    table = FairnessAudit(["sex", "vf_age"]).audit(frame, score, np.array(["A"] * 2000), np.zeros(2000), "C")
    ages = table[(table.arm == "A") & (table.attribute == "vf_age")]
    assert len(ages) == 4  # quartiles of 45 distinct ages
    assert ages.voters.sum() == 2000 and (ages.voters >= 100).all() and set(ages.flag) <= {"", "outside band"}
    assert ages.group.iloc[0].startswith("<") and ages.group.iloc[-1].endswith("+")
    assert set(table[table.attribute == "sex"].group) == {"F", "M"}  # few values: by value


def test_quantile_bands_too_small_to_judge_are_merged_into_a_neighbour():
    frame = _voter_file_ages(250)  # quartiles of about 62 voters each, under min_group_size=100
    groups = FairnessAudit(["vf_age"], min_group_size=100).groups(frame, "vf_age")
    sizes = groups.value_counts()
    assert len(sizes) == 2 and (sizes >= 100).all()
    assert FairnessAudit(["vf_age"], min_group_size=1000).groups(frame, "vf_age").nunique() == 1


def test_configured_bands_of_another_numeric_attribute_are_used(tmp_path):
    config = _ggl_with(tmp_path, protected=["sex", "age", "income"], audit={"bands": {"income": [25000, 75000]}})
    audit = FairnessAudit.from_config(config)
    frame = pd.DataFrame({"income": [1000.0, 25000.0, 80000.0, np.nan]})
    assert audit.groups(frame, "income").tolist() == ["<25000", "25000-74999", "75000+", MISSING_GROUP]
    assert audit.groups(pd.DataFrame({"age": [66]}), "age").tolist() == ["65+"]  # GGL's age keeps its bands
    with pytest.raises(ValueError, match=r"'income' is banded \(audit\) but has values that are not numbers"):
        audit.groups(pd.DataFrame({"income": ["high", "low"]}), "income")


def test_small_categorical_groups_are_reported_once_as_too_small():
    frame = pd.DataFrame({"race": ["W"] * 800 + ["B"] * 140 + [f"g{i}" for i in range(6) for _ in range(10)]})
    score = np.r_[np.full(800, 0.01), np.full(140, 0.01), np.full(60, 0.05)]
    table = FairnessAudit(["race"], budget_fraction=0.1).audit(
        frame, pd.DataFrame({"A": score}), np.array(["A"] * 1000), np.zeros(1000), "C")
    rows = table[table.arm == "A"]
    assert rows.group.tolist() == ["B", "W", "too small"]
    pooled = _row(table, "A", "race", "too small")
    assert pooled.voters == 60 and pooled.targeted == 60 and pooled.flag == "small group" and not pooled.reference
    assert _row(table, "A", "race", "W").reference


@pytest.mark.parametrize(("audit", "message"), [
    ({"age_column": "vf_age"}, r"'vf_age' is banded but is not a protected attribute"),
    ({"bands": {"sex": [1, 0]}}, r"audit\.bands\.sex must be increasing"),
    ({"bands": {"age": [40]}, "age_column": "age"}, r"audit\.bands\.age: the age column is banded by"),
])
def test_audit_bands_in_a_config_are_checked_when_it_loads(tmp_path, audit, message):
    from features.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        _ggl_with(tmp_path, audit=audit)
