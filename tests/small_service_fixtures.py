"""The small synthetic model served once per session, for the request-bounds tests of ``/score`` and ``/plan``.

``small_service`` is a real ``bentoml serve`` on 127.0.0.1 (one worker, no reloads) of the
small model (``small_trained``), taking the scoring key ``KEY`` and the consent-event key
``CONSENT_KEY``; ``small_client`` is an ``httpx`` client of it with ``KEY``. Both are
registered once by ``tests/conftest.py`` (``pytest_plugins``), and every test that names
``small_service`` runs on one xdist worker, so ``tests/test_request_bounds.py`` and
``tests/test_plan_bounds.py`` share one service start instead of each starting their own.
Tests only read the service's log for lines they caused (an audit line of a request of
their own), so the other module's requests do not disturb them.
"""

from __future__ import annotations

import secrets

import pytest

from serving.launcher import ServiceProcess

KEY = "sk-bounds-" + secrets.token_hex(8)
CONSENT_KEY = "sk-bounds-consent-" + secrets.token_hex(8)


@pytest.fixture(scope="session")
def small_service(small_trained):
    svc = ServiceProcess(model_uri=small_trained.model_uri, api_keys=[KEY],
                         env={"PERSUADE_RELOAD_SECONDS": "0", "PERSUADE_WORKERS": "1",
                              "PERSUADE_CONSENT_KEYS": CONSENT_KEY,
                              "PERSUADE_HASH_KEY": "bounds-hash-key-" + secrets.token_hex(8)})
    with svc:
        yield svc
    svc.cleanup()


@pytest.fixture(scope="session")
def small_client(small_service):
    with small_service.client(KEY) as client:
        yield client
