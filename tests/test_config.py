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
