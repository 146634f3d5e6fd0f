"""Arm values in the config: raw arm codes mapped to labels on loading, and the errors that say how."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from survey_frames import survey_config, survey_frame

from features.config import ConfigError, RunConfig, load_config
from features.schema import DataValidationError, validate_experiment
from features.tables import load_experiment


def _written(tmp_path, frame: pd.DataFrame, name: str = "survey.parquet"):
    path = tmp_path / name
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path, index=False)
    return path


def _problems(frame: pd.DataFrame, config: RunConfig) -> str:
    with pytest.raises(DataValidationError) as info:
        validate_experiment(frame, config)
    return "\n".join(info.value.problems)


@pytest.mark.parametrize("name", ["survey.parquet", "survey.csv"])
def test_integer_codes_are_mapped_to_the_configured_labels(tmp_path, name):
    frame = survey_frame(500, seed=1).dropna(subset=["support"])
    config = RunConfig.model_validate(survey_config(_written(tmp_path, frame, name)))
    loaded = load_experiment(config)
    assert set(loaded["treatment"]) == {"no canvass", "canvass"}
    report = validate_experiment(loaded, config)
    assert report.rows_per_arm == {"canvass": int((frame.treatment == 1).sum()),
                                   "no canvass": int((frame.treatment == 0).sum())}


@pytest.mark.parametrize(("raw", "codes"), [
    ([0.0, 1.0, None], (0, 1)),  # a float column (missing values) against integer codes
    ([0, 1, 1], ("0", "1")),  # integer data against quoted codes
    (["c", "t", "t"], ("c", "t")),  # text codes
])
def test_codes_match_as_text(tmp_path, raw, codes):
    frame = pd.DataFrame({"treatment": raw * 4})
    config = RunConfig.model_validate(survey_config(
        _written(tmp_path, frame), control_value=codes[0],
        arms={"canvass": {"value": codes[1], "channel": "canvass"}}))
    mapped = load_experiment(config)["treatment"]
    expected = ["no canvass" if v == raw[0] else ("canvass" if v is not None else None) for v in raw * 4]
    assert [None if pd.isna(v) else v for v in mapped] == expected


def test_integer_codes_without_values_say_how_to_map_them(tmp_path):
    frame = survey_frame(500, seed=1).dropna(subset=["support"])
    raw = survey_config(_written(tmp_path, frame))
    del raw["control_value"]
    raw["arms"] = {"canvass": {"channel": "canvass"}}
    config = RunConfig.model_validate(raw)
    msg = _problems(load_experiment(config), config)
    assert "unknown arm labels ['0', '1']" in msg
    assert "arms: {canvass: {value: 1, ...}}" in msg and "control_value: 0" in msg


def test_a_code_no_arm_has_is_named_with_the_configured_codes(tmp_path):
    frame = survey_frame(500, seed=1).dropna(subset=["support"])
    frame.loc[frame.index[:30], "treatment"] = 2
    config = RunConfig.model_validate(survey_config(_written(tmp_path, frame)))
    msg = _problems(load_experiment(config), config)
    assert "unknown arm labels ['2']" in msg and "configured codes are ['0', '1']" in msg


def _yaml_config(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    base = {k: v for k, v in survey_config(tmp_path / "x.parquet").items() if k not in ("arms", "control_label")}
    path.write_text(yaml.safe_dump(base) + text)
    return path


def test_an_unquoted_integer_arm_key_suggests_value(tmp_path):
    path = _yaml_config(tmp_path, "control_label: control\narms:\n  1: {channel: canvass}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "arm 1 is a number (an unquoted YAML key)" in msg
    assert "arms: {canvass: {value: 1, channel: canvass}}" in msg and "control_value:" in msg


def test_a_numeric_control_label_suggests_control_value(tmp_path):
    path = _yaml_config(tmp_path, "control_label: 0\narms:\n  canvass: {channel: canvass, value: 1}\n")
    with pytest.raises(ConfigError, match=r"control_label: 0 is a number.*control_value: 0"):
        load_config(path)


def test_codes_are_given_for_every_arm_and_the_control_or_none():
    raw = survey_config("x.parquet")
    with pytest.raises(ValueError, match=r"control_value and every arms\.<arm>\.value must be given together"):
        RunConfig.model_validate({**raw, "control_value": None})
    with pytest.raises(ValueError, match="a code is given twice"):
        RunConfig.model_validate({**raw, "control_value": 1})
