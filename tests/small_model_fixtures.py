"""A small synthetic model trained once per session, for the serving-robustness tests.

``small_campaign`` writes a 4,000-voter synthetic campaign and a run config with a small grid
(``program_fixtures.small_config``, the T-learner only) under its own model name;
``small_trained`` trains it into the session's MLflow store (``mlflow_store``); ``small_model``
is the loaded scoring model and an input example of five voters, for tests that register
versions of their own. ``tests/conftest.py`` registers them once (``pytest_plugins``): a test
names them as arguments and never imports them, or its module would train its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from program_fixtures import small_config

SMALL_NAME = "persuade-small-test"


@dataclass
class SmallCampaign:
    config_path: Path
    voter_file: pd.DataFrame


def write_small_campaign(folder: Path, model_name: str = SMALL_NAME, name: str = "small-test", *,
                         uplift: dict | None = None, split: dict | None = None) -> SmallCampaign:
    """A 4,000-voter campaign in ``folder`` and its run config.

    The config is ``program_fixtures.small_config`` with the keys of ``uplift`` and ``split``
    replaced; ``uplift`` defaults to the T-learner only.
    """
    from features.synthetic import make_campaign

    campaign = make_campaign(4000, seed=3)
    campaign.write(folder, outcome="voted")
    cfg = small_config(folder)
    cfg["uplift"].update({"learners": ["t"]} if uplift is None else uplift)
    cfg["split"].update(split or {})
    cfg.update(model_name=model_name, name=name)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return SmallCampaign(path, campaign.voter_file)


@pytest.fixture(scope="session")
def small_campaign(tmp_path_factory) -> SmallCampaign:
    return write_small_campaign(tmp_path_factory.mktemp("small_campaign"))


@pytest.fixture(scope="session")
def small_trained(mlflow_store, small_campaign):
    """The small campaign trained and registered (not promoted)."""
    from training.run import train

    return train(small_campaign.config_path)


@pytest.fixture(scope="session")
def small_model(small_trained, small_campaign):
    """``(model, example)``: the small model as loaded from the registry, and five voters of its input."""
    from serving.registry import load_scoring_model

    model = load_scoring_model(small_trained.model_uri)[0]
    return model, small_campaign.voter_file.head(5)[["voter_id", *model.input_features]]
