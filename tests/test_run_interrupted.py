"""A training run stopped while it logs ends FAILED, and ``persuade runs`` does not call it passed.

``persuade train`` runs as a real subprocess on a small synthetic campaign. So that the
signal arrives while the MLflow run is open (whatever the machine's speed), the driver
pauses inside the run's model logging (it then calls the real ``log_model``); the test
sends SIGTERM once that pause begins.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from small_model_fixtures import write_small_campaign

from training.cli import main

PROJECT = Path(__file__).resolve().parent.parent
DRIVER = """
import os, sys, time
from pathlib import Path

import training.run as run

real, marker = run.log_model, Path(sys.argv[2])


def log_model_after_a_pause(*args, **kwargs):
    marker.write_text(str(os.getpid()))  # the run is open and logging: the test signals now
    time.sleep(600)
    return real(*args, **kwargs)


run.log_model = log_model_after_a_pause
from training.cli import main

main(["train", "--config", sys.argv[1]])
"""


def test_a_run_stopped_by_sigterm_while_logging_ends_failed(mlflow_store, tmp_path):
    campaign = write_small_campaign(tmp_path / "data", model_name="persuade-interrupted-test", name="interrupted")
    driver, marker = tmp_path / "driver.py", tmp_path / "logging.started"
    driver.write_text(DRIVER)
    env = {**os.environ, "PERSUADE_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(PROJECT)}
    proc = subprocess.Popen([sys.executable, str(driver), str(campaign.config_path), str(marker)], cwd=PROJECT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 900  # a bound on the wait, not a speed assertion
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), f"training never reached logging: {proc.communicate(timeout=60)}"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != -signal.SIGTERM, "killed outright: the run was left as it was"
    assert proc.returncode != 0 and "Traceback" not in err, err[-3000:]
    client = MlflowClient()
    experiment = client.get_experiment_by_name("interrupted")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags.get("gate.validation") == "passed"  # set before the signal: not a verdict
    assert not client.search_model_versions("name='persuade-interrupted-test'")

    listed = CliRunner(env={"COLUMNS": "250"}).invoke(main, ["runs", "--experiment", "interrupted"])
    assert listed.exit_code == 0, listed.output
    block = listed.output.split(run.info.run_id, 1)[1]
    assert "run FAILED" in block and "all passed" not in block
