"""Run configs: a wrong key or an inconsistent design is a clear error."""

from __future__ import annotations

import pytest
import yaml

from features.config import ConfigError, arm_slug, load_config

PROJECT_CONFIG = "configs/ggl2008.yaml"


def _write(tmp_path, data) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _ggl() -> dict:
    with open(PROJECT_CONFIG) as fh:
        return yaml.safe_load(fh)


def test_project_config_loads_and_resolves_data_against_project_root():
    cfg = load_config(PROJECT_CONFIG)
    assert cfg.control_label == "No Postcard"
    assert cfg.arm_labels == ["Civic Duty", "Hawthorne", "Self", "Neighbors"]
    assert cfg.resolve(cfg.data.table).exists()
    assert abs(sum(cfg.design_shares().values()) - 1) < 1e-6


def test_unknown_key_is_named(tmp_path):
    data = _ggl()
    data["learner_zoo"] = ["t"]
    with pytest.raises(ConfigError, match="learner_zoo: unknown key"):
        load_config(_write(tmp_path, data))


def test_unknown_nested_key_is_named(tmp_path):
    data = _ggl()
    data["uplift"]["final"]["num_leafs"] = 4
    with pytest.raises(ConfigError, match=r"uplift\.final\.num_leafs: unknown key"):
        load_config(_write(tmp_path, data))


@pytest.mark.parametrize(("change", "needle"), [
    ({"final": {"n_estimators": 400, "learning_rate": 0.03}}, r"final\.n_estimators would be ignored: final_sizes"),
    ({"arm_params": {"n_estimators": 60, "learning_rate": 0.1}}, "arm_params.n_estimators would be ignored"),
    ({"arm_rounds": 0, "arm_params": {"learning_rate": 0.1}}, "arm_params would be ignored"),
    ({"pool_arms": False, "arm_rounds": 30}, "arm_rounds would be ignored"),
    ({"nuisance_from_control": False, "nuisance_rounds": [10, 20]}, "nuisance_rounds would be ignored"),
    ({"references": ["constant"], "reference_size": {"n_estimators": 50, "num_leaves": 3}},
     "reference_size would be ignored"),
])
def test_a_field_another_field_would_override_is_an_error(tmp_path, change, needle):
    data = _ggl()
    data["uplift"].update(change)
    with pytest.raises(ConfigError, match=needle):
        load_config(_write(tmp_path, data))


def test_arm_rounds_zero_alone_is_no_error(tmp_path):
    data = _ggl()
    data["uplift"].pop("arm_params")
    data["uplift"]["arm_rounds"] = 0
    assert load_config(_write(tmp_path, data)).uplift.arm_rounds == 0


def test_shares_must_add_up(tmp_path):
    data = _ggl()
    data["control_share"] = 0.6
    with pytest.raises(ConfigError, match="add up to 1"):
        load_config(_write(tmp_path, data))


def test_control_cannot_be_an_arm(tmp_path):
    data = _ggl()
    data["arms"]["No Postcard"] = {"channel": "mail"}
    with pytest.raises(ConfigError, match="control label"):
        load_config(_write(tmp_path, data))


def test_bad_channel_is_named(tmp_path):
    data = _ggl()
    data["arms"]["Self"]["channel"] = "pigeon"
    with pytest.raises(ConfigError, match=r"arms\.Self\.channel"):
        load_config(_write(tmp_path, data))


def test_table_layouts_are_exclusive(tmp_path):
    data = _ggl()
    data["data"] = {"table": "x.parquet", "voter_file": "v.parquet"}
    with pytest.raises(ConfigError, match=r"either data\.table"):
        load_config(_write(tmp_path, data))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_arm_slug():
    assert arm_slug("Civic Duty") == "civic_duty"
    assert arm_slug("Neighbors") == "neighbors"
    assert arm_slug("Text-2 (AI)") == "text_2__ai_"


def test_final_sizes_are_the_candidates_of_the_final_models(tmp_path):
    cfg = load_config(PROJECT_CONFIG)
    candidates = cfg.uplift.final_candidates()
    assert "400x2" in candidates and len(candidates) == len(cfg.uplift.final_sizes)
    assert candidates["200x4"].num_leaves == 4 and candidates["200x4"].n_estimators == 200
    assert candidates["200x4"].min_child_samples == cfg.uplift.final.min_child_samples  # the rest from final
    data = _ggl()
    del data["uplift"]["final_sizes"]
    only = load_config(_write(tmp_path, data)).uplift.final_candidates()
    assert list(only) == [f"{cfg.uplift.final.n_estimators}x{cfg.uplift.final.num_leaves}"]


@pytest.mark.parametrize("sizes, message", [
    ([{"n_estimators": 200, "num_leaves": 2}, {"n_estimators": 200, "num_leaves": 2}],
     r"uplift: .*final_sizes: a size is listed twice \(200x2, 200x2\)"),
    ([{"n_estimators": 200, "num_leaves": 1}], r"uplift\.final_sizes\.0\.num_leaves"),
    ([{"n_estimators": 200, "leaves": 4}], r"uplift\.final_sizes\.0\.leaves: unknown key"),
])
def test_bad_final_sizes_are_named(tmp_path, sizes, message):
    data = _ggl()
    data["uplift"]["final_sizes"] = sizes
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, data))


def test_selection_metric_is_checked(tmp_path):
    data = _ggl()
    data["uplift"]["selection_metric"] = "auuc"
    with pytest.raises(ConfigError, match=r"uplift\.selection_metric"):
        load_config(_write(tmp_path, data))
    data["uplift"]["selection_metric"] = "dr_qini"
    assert load_config(_write(tmp_path, data)).uplift.selection_metric == "dr_qini"


@pytest.mark.parametrize("rounds, message", [
    ([], r"uplift\.nuisance_rounds"),
    ([10, 0], r"uplift\.nuisance_rounds\.1"),
])
def test_bad_nuisance_rounds_are_named(tmp_path, rounds, message):
    data = _ggl()
    data["uplift"]["nuisance_rounds"] = rounds
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, data))


@pytest.mark.parametrize("leaves, from_control, message", [
    ([15, 15], True, r"nuisance_treated_leaves: a value is listed twice \(15, 15\)"),
    ([15, 1], True, r"uplift\.nuisance_treated_leaves\.1"),
    ([15, 2], False, r"nuisance_treated_leaves needs nuisance_from_control"),
])
def test_bad_treated_outcome_model_shapes_are_named(tmp_path, leaves, from_control, message):
    data = _ggl()
    data["uplift"]["nuisance_treated_leaves"] = leaves
    data["uplift"]["nuisance_from_control"] = from_control
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, data))


def test_treated_outcome_model_shapes_default_to_the_nuisance_leaves(tmp_path):
    data = _ggl()
    data["uplift"].pop("nuisance_treated_leaves", None)
    config = load_config(_write(tmp_path, data))
    assert config.uplift.treated_leaves_options() == [config.uplift.nuisance.num_leaves]
    assert config.with_uplift(nuisance_treated_leaves=[2, 15]).uplift.treated_leaves_options() == [2, 15]
