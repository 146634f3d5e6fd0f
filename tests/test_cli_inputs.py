"""The CLI never destroys input: ``persuade score`` and ``plan``.

An output path that is one of the command's inputs (the same file, another spelling of it,
a file inside an input folder) is refused before any work, exit 2, the input untouched (the
commands run in this process: ``tests/cli_invoke.py``); an input parquet file with a
corrupted data page is a clear error naming the file, exit 2, no traceback (the commands run
as real subprocesses: a reader that crashed the process would show here as its exit code).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_invoke import persuade as persuade_here

PROJECT = Path(__file__).resolve().parent.parent
WIDE = {"COLUMNS": "250"}  # messages naming a temp path stay on one line


def persuade(*args: str) -> subprocess.CompletedProcess:
    """``persuade ARGS`` in a subprocess against the session's MLflow store (its environment)."""
    env = {**os.environ, "PERSUADE_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "COLUMNS": "200",
           "PYTHONPATH": str(PROJECT)}
    return subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True, env=env,
                          cwd=PROJECT, timeout=600)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def model_uri(small_trained) -> str:
    return small_trained.model_uri


@pytest.fixture
def voters(small_campaign, tmp_path) -> Path:
    path = tmp_path / "voters.parquet"
    small_campaign.voter_file.to_parquet(path, index=False)
    return path


def plan_args(model_uri: str, voters: Path, output: Path) -> list[str]:
    return ["plan", "--model", model_uri, "--input", str(voters), "--budget", "200", "--no-consent",
            "--output", str(output)]


@pytest.mark.parametrize("command", ["score", "plan"])
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(command, model_uri, voters):
    before = digest(voters)
    for output in (voters, voters.parent / "sub" / ".." / voters.name):
        args = (["score", "--model", model_uri, "--input", str(voters), "--output", str(output)]
                if command == "score" else plan_args(model_uri, voters, output))
        done = persuade_here(*args, env=WIDE)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "voters.parquet is also an input of this command" in done.stderr
        assert "Traceback" not in done.stderr
        assert digest(voters) == before


def test_an_output_inside_an_input_folder_is_refused(model_uri, small_campaign, tmp_path):
    folder = tmp_path / "voters"  # a parquet folder
    folder.mkdir()
    small_campaign.voter_file.to_parquet(folder / "part-0.parquet", index=False)
    done = persuade_here("score", "--model", model_uri, "--input", str(folder), "--output",
                         str(folder / "scores.parquet"), env=WIDE)
    assert done.returncode == 2 and "is inside an input of this command (voters)" in done.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["part-0.parquet"]


def corrupt_a_data_page(path: Path, column: str) -> None:
    """Overwrite the header of ``column``'s first data page (the footer stays valid)."""
    meta = pq.ParquetFile(path).metadata
    names = [meta.row_group(0).column(j).path_in_schema for j in range(meta.num_columns)]
    start = meta.row_group(0).column(names.index(column)).data_page_offset
    data = bytearray(path.read_bytes())
    data[start:start + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("command", ["score", "plan"])
def test_a_corrupted_data_page_is_a_clear_error(command, model_uri, voters, tmp_path):
    corrupt_a_data_page(voters, "age")
    output = tmp_path / "out.parquet"
    args = (["score", "--model", model_uri, "--input", str(voters), "--output", str(output)]
            if command == "score" else plan_args(model_uri, voters, output))
    done = persuade(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "voters.parquet cannot be read" in done.stderr
    assert not output.exists()
