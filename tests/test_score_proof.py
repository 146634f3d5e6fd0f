"""``persuade score`` proves the model in a child process before it loads it (issue 20).

A registered version whose LightGBM file has a ``nan`` leaf aborts the process that loads it
(``[Fatal] Model format error``, ``terminate called``): the command used to die with SIGABRT.
Now the child dies instead, and the command exits 2 with a clear message naming the model and
LightGBM's reason, writing nothing. A good version still scores.
"""

from __future__ import annotations

import pandas as pd
from model_faults import logged_with_a_nan_leaf
from small_model_fixtures import small_campaign, small_model, small_trained  # noqa: F401 - fixtures used here
from test_cli_inputs import persuade

NAME = "persuade-score-proof-test"


def test_score_on_a_model_with_a_nan_leaf_exits_2_with_a_clear_message(small_model, small_campaign, tmp_path):  # noqa: F811
    model, example = small_model
    version = logged_with_a_nan_leaf(model, example, NAME)
    voters = tmp_path / "voters.parquet"
    small_campaign.voter_file.head(50).to_parquet(voters, index=False)
    output = tmp_path / "scores.parquet"
    done = persuade("score", "--model", f"models:/{NAME}/{version}", "--input", str(voters), "--output", str(output))
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    message = " ".join(done.stderr.split())
    assert f"models:/{NAME}/{version}" in message and "failed its check" in message
    assert "Model format error" in message or "killed by SIGABRT" in message
    assert "Traceback" not in done.stderr and not output.exists()


def test_score_on_a_good_model_still_scores(small_trained, small_campaign, tmp_path):  # noqa: F811
    voters = tmp_path / "voters.parquet"
    small_campaign.voter_file.head(50).to_parquet(voters, index=False)
    output = tmp_path / "scores.parquet"
    uri = f"models:/{small_trained.model_name}/{small_trained.version}"
    done = persuade("score", "--model", uri, "--input", str(voters), "--output", str(output), "--no-consent")
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(pd.read_parquet(output)) == 50
