"""``persuade score`` and ``persuade plan`` prove the model in a child process before they use it (issue 20).

A registered version whose LightGBM file has a ``nan`` leaf aborts the process that loads it
(``[Fatal] Model format error``, ``terminate called``): the commands used to die with SIGABRT
(``plan`` still did, unproven). Now the child dies instead, and the command exits 2 with a clear
message naming the model and LightGBM's reason, writing nothing. A good version still scores
and plans. The commands run in this process (``tests/cli_invoke.py``); a command that loaded the
bad file itself would abort the test process, which pytest reports as a failure.

The version is downloaded once: proven in a temp folder and loaded from that same folder (the
files used are the files proven). Seen from the artifact store: while ``persuade score`` runs,
every file of the stored bundle is opened once, by the download (``sys.addaudithook``'s
``open`` events; the proof child is another process). ``score`` used to download it for the
proof and then load it again from the store.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from cli_invoke import persuade
from click.testing import CliRunner
from model_faults import logged_with_a_nan_leaf, register, stored_bundle

NAME = "persuade-score-proof-test"
OPENED: list[Counter] = []  # while a test watches: files opened in this process (sys.addaudithook)


def _record_open(event: str, args: tuple) -> None:
    if event == "open" and OPENED and isinstance(args[0], (str, bytes, Path)):
        OPENED[-1][str(Path(args[0] if not isinstance(args[0], bytes) else args[0].decode()).resolve())] += 1


sys.addaudithook(_record_open)  # audit hooks stay for the process: it records only while OPENED holds a counter


def command(kind: str, uri: str, voters: Path, output: Path) -> list[str]:
    common = ["--model", uri, "--input", str(voters), "--output", str(output), "--no-consent"]
    return ["score", *common] if kind == "score" else ["plan", *common, "--budget", "20"]


@pytest.fixture
def voters(small_campaign, tmp_path) -> Path:
    path = tmp_path / "voters.parquet"
    small_campaign.voter_file.head(50).to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("kind", ["score", "plan"])
def test_a_model_with_a_nan_leaf_exits_2_with_a_clear_message(kind, small_model, voters, tmp_path):
    model, example = small_model
    version = logged_with_a_nan_leaf(model, example, NAME)
    output = tmp_path / "out.parquet"
    done = persuade(*command(kind, f"models:/{NAME}/{version}", voters, output))
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    message = " ".join(done.stderr.split())
    assert f"models:/{NAME}/{version}" in message and "failed its check" in message
    assert ("nothing was planned" if kind == "plan" else "nothing was scored") in message
    assert "Model format error" in message or "killed by SIGABRT" in message
    assert "Traceback" not in done.stderr and not output.exists()


@pytest.mark.parametrize("kind", ["score", "plan"])
def test_a_good_model_still_scores_and_plans(kind, small_trained, voters, tmp_path):
    output = tmp_path / "out.parquet"
    done = persuade(*command(kind, small_trained.model_uri, voters, output))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = pd.read_parquet(output)
    assert len(rows) == 50 and set(rows.voter_id) == set(pd.read_parquet(voters).voter_id)  # a plan: contacts first


@pytest.mark.parametrize("kind", ["score", "plan"])
def test_the_model_is_downloaded_once_and_used_from_the_proven_files(kind, small_model, voters, tmp_path):
    model, example = small_model
    version = register(model, example, NAME)  # a version of its own: nothing else reads its stored files
    stored = stored_bundle(NAME, version)
    files = sorted(str(p.resolve()) for p in stored.rglob("*") if p.is_file())
    from training.cli import main

    OPENED.append(Counter())
    try:
        done = CliRunner().invoke(main, command(kind, f"models:/{NAME}/{version}", voters, tmp_path / "out.parquet"))
    finally:
        opened = OPENED.pop()
    assert done.exit_code == 0, done.output[-2000:]
    assert {f: opened[f] for f in files} == dict.fromkeys(files, 1), "a stored file was not read exactly once"
