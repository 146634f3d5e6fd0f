"""Two workers by default: a worker killed with SIGKILL costs a retry, not an outage.

A real ``bentoml serve`` on 127.0.0.1 with the default settings (no ``PERSUADE_WORKERS``)
serves the small synthetic model while clients score in a loop; one worker is killed with
SIGKILL. A restarted worker takes no connection before its model is loaded, so every
request answered between the kill and the replacement's model load was answered by the
other worker. Counts, never times, are asserted.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from test_model_proof import HASH_KEY, PAUSE
from test_service_reload import wait_for

from serving.launcher import DEFAULT_WORKERS, ServiceProcess, service_workers

KEY = "sk-workers-" + secrets.token_hex(8)
VOTER = {"voter_id": "V-1", "age": 44, "hh_size": 2, "urbanicity": "rural"}


def test_workers_come_from_persuade_workers():
    assert service_workers({}) == DEFAULT_WORKERS == 2
    assert service_workers({"PERSUADE_WORKERS": "3"}) == 3
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match="PERSUADE_WORKERS"):
            service_workers({"PERSUADE_WORKERS": bad})


def test_a_killed_worker_costs_a_retry_not_an_outage(small_trained, monkeypatch):
    monkeypatch.delenv("PERSUADE_WORKERS", raising=False)  # the default
    svc = ServiceProcess(model_uri=small_trained.model_uri, api_keys=[KEY],
                         env={"PERSUADE_RELOAD_SECONDS": "0", "PERSUADE_HASH_KEY": HASH_KEY})
    answers: list[tuple[float, bool]] = []  # (when it came back, answered 200)
    stop = threading.Event()

    def client() -> None:
        with svc.client(KEY, timeout=60) as http:
            while not stop.is_set():
                try:
                    ok = http.post("/score", json={"voters": [VOTER]}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                answers.append((time.monotonic(), ok))
                stop.wait(PAUSE)  # answers across the restart, not load: unpaced, 8 clients took both cores

    with svc:
        wait_for(lambda: svc.log.count("now serving it") == 2)
        before = svc.worker_pids()
        assert len(before) == 2
        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: sum(ok for _, ok in answers) >= 100)
            victim = min(before)
            killed = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: svc.log.count("now serving it") == 3, timeout=300)  # the replacement has its model
            replaced = time.monotonic()
            wait_for(lambda: sum(ok for t, ok in answers if t > replaced) >= 100)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=120)
        after = svc.worker_pids()
    scratch = Path(svc.env["TMPDIR"])  # the killed worker's temp files (BentoML's) are in the service's folder
    assert scratch.parent == svc.log_path.parent
    svc.cleanup()
    assert not scratch.exists()
    meanwhile = sum(ok for t, ok in answers if killed < t < replaced)
    failed = sum(not ok for _, ok in answers)
    assert meanwhile > 0, "nobody answered while the killed worker was being replaced"
    assert sum(ok for t, ok in answers if t > replaced) >= 100  # and the service answers as before
    assert len(after) == 2 and victim not in after
    print(f"answered {sum(ok for _, ok in answers)}, failed {failed}, answered while one worker was down {meanwhile}")
