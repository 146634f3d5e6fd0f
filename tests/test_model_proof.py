"""A model is proven before it serves: checksums, a load and a smoke check in a child process.

In process (the bundle and its proof): a logged model carries the checksums of its files and
the probe segment's scores; a missing, extra or changed file is an error naming it; a LightGBM
file with a ``nan`` leaf (which aborts the process that loads it) is refused by a child that
dies, not by this process; arm files swapped before logging are refused by the recorded scores.

Against a real service (``bentoml serve`` on 127.0.0.1, two workers, polling the alias every
second) that follows ``models:/persuade-proof-test@champion``: a NaN-leaf version, a version
whose two arm files were swapped in the artifact store and one with a file deleted there are
refused while clients keep scoring (0 failed requests, no worker restarted), ``/model`` names
the refused version and why, and no ``persuade-serve-*`` temp folder is left. A service started
on the bad alias serves the newest earlier version that passes; one with no good version
stays unready without restarting its workers.
"""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient
from model_faults import delete_calibration, logged_with_a_nan_leaf, nan_leaf, register_faulty_versions, swap_arms
from test_service_reload import wait_for

from serving.bundle import ScoringModel
from serving.bundle_checksums import CHECKSUMS, BundleChecksumError, verify_checksums, write_checksums
from serving.launcher import ServiceProcess
from serving.model_check import PROBE_SCORES, ModelCheckError, prove_in_child, record_probe_scores
from serving.proof_memory import is_recorded, proof_key, record
from serving.registry import download_bundle

NAME = "persuade-proof-test"
KEY = "sk-proof-" + secrets.token_hex(8)
AUTH = {"Authorization": f"Bearer {KEY}"}
HASH_KEY = "proof-hash-key-" + secrets.token_hex(8)  # the consent ledger's phone hashes (no consent used here)


# -- in process ----------------------------------------------------------------------------
def test_a_logged_model_carries_its_checksums_and_probe_scores(small_trained, tmp_path):
    bundle, _ = download_bundle(small_trained.model_uri, dst=tmp_path)
    assert (bundle / CHECKSUMS).exists() and (bundle / PROBE_SCORES).exists()
    assert verify_checksums(bundle) is True
    prove_in_child(bundle)  # a good model passes


def test_checksums_name_a_missing_an_extra_and_a_changed_file(small_model, tmp_path):
    model, _ = small_model
    bundle = model.save(tmp_path / "bundle")
    assert verify_checksums(bundle) is False  # saved, never logged: loads unverified
    write_checksums(bundle)
    ScoringModel.load(bundle)
    first, second = swap_arms(bundle)
    with pytest.raises(BundleChecksumError) as swapped:
        ScoringModel.load(bundle)
    assert f"file {first} changed" in str(swapped.value) and f"file {second} changed" in str(swapped.value)
    swap_arms(bundle)
    ScoringModel.load(bundle)
    delete_calibration(bundle)
    with pytest.raises(BundleChecksumError, match=r"missing file turnout_calibration\.json"):
        ScoringModel.load(bundle)
    model.save(bundle)
    write_checksums(bundle)
    (bundle / "uplift" / "extra.txt").write_text("not listed")
    with pytest.raises(BundleChecksumError, match=r"file uplift/extra\.txt is not in checksums\.json"):
        ScoringModel.load(bundle)


def test_a_nan_leaf_kills_the_child_not_this_process(small_model, tmp_path):
    model, _ = small_model
    bundle = model.save(tmp_path / "bundle")
    nan_leaf(bundle)
    write_checksums(bundle)  # as if it had been logged so: the checksums hold, the load aborts
    with pytest.raises(ModelCheckError) as refused:
        prove_in_child(bundle)
    assert "killed by SIGABRT" in str(refused.value) and "[Fatal]" in str(refused.value)
    assert not refused.value.smoke


def test_arms_swapped_before_logging_are_refused_by_the_recorded_scores(small_model, tmp_path):
    model, _ = small_model
    bundle = model.save(tmp_path / "bundle")
    record_probe_scores(model, bundle)  # from the model in memory
    swap_arms(bundle)
    write_checksums(bundle)  # checksums of the swapped files: only the recorded scores can tell
    with pytest.raises(ModelCheckError, match="differ from those recorded when the model was logged") as refused:
        prove_in_child(bundle)
    assert refused.value.smoke


def proven_before(bundle, *, home=None) -> bool:
    """Whether these exact bytes passed their proof before (the check ``prove_in_child`` makes)."""
    key = proof_key(bundle)
    return key is not None and is_recorded(key, home=home)


def remember(bundle, *, home=None):
    """Record a proof of the bundle's bytes as ``prove_in_child`` does after one passes."""
    key = proof_key(bundle)
    return None if key is None else record(key, home=home)


def test_a_passed_proof_is_remembered_by_the_bundles_bytes(small_model, tmp_path, monkeypatch):
    model, _ = small_model
    bundle = model.save(tmp_path / "bundle")
    record_probe_scores(model, bundle)
    assert proof_key(bundle) is None and not proven_before(bundle, home=tmp_path)  # no checksums: never remembered
    write_checksums(bundle)
    monkeypatch.setenv("PERSUADE_HOME", str(tmp_path))
    assert not proven_before(bundle)
    prove_in_child(bundle)
    assert proven_before(bundle) and len(list((tmp_path / "proofs").glob("*.json"))) == 1
    with monkeypatch.context() as no_child:  # the same bytes again: no child process is started
        no_child.setattr("serving.model_check.sys.executable", str(tmp_path / "no-python-here"))
        prove_in_child(bundle)
        swap_arms(bundle)  # changed files under the remembered checksums: not the proven bytes
        assert proof_key(bundle) is None and not proven_before(bundle)
        with pytest.raises((ModelCheckError, OSError)):
            prove_in_child(bundle)  # so a child is needed (and here cannot start)
    write_checksums(bundle)  # the swapped files logged as a version of their own: proven, refused, not remembered
    with pytest.raises(ModelCheckError, match="differ from those recorded"):
        prove_in_child(bundle)
    assert not proven_before(bundle) and len(list((tmp_path / "proofs").glob("*.json"))) == 1


def test_a_proof_is_remembered_per_library_version_and_proof_format(small_model, tmp_path, monkeypatch):
    model, _ = small_model
    bundle = model.save(tmp_path / "bundle")
    write_checksums(bundle)
    key = proof_key(bundle)
    assert remember(bundle, home=tmp_path) == tmp_path / "proofs" / f"{key}.json"
    assert proven_before(bundle, home=tmp_path)
    monkeypatch.setattr("serving.proof_memory.PROOF_FORMAT", "persuade-proof/2")
    assert proof_key(bundle) != key and not proven_before(bundle, home=tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr("lightgbm.__version__", "0.0.0")
    assert proof_key(bundle) != key and not proven_before(bundle, home=tmp_path)


# -- against a real service ----------------------------------------------------------------
@pytest.fixture(scope="module")
def versions(small_model):
    """``good``, ``nan_leaf``, ``swapped``, ``deleted``: versions of NAME, the last three broken in the store."""
    return register_faulty_versions(*small_model, NAME)


def temp_folders(folder: Path) -> list[Path]:
    return sorted(folder.glob("persuade-serve-*"))


PAUSE = 0.05  # seconds between one client's requests (Traffic)


class Traffic:
    """Clients scoring one voter in a loop (each its own connection) until stopped; counts answers.

    Each client pauses ``PAUSE`` between requests: about 70 requests a second in all, so
    every reload is crossed by a hundred requests or more, while the workers keep the CPU
    to load (unpaced, four clients took both cores and a refused reload took 9 s).
    """

    def __init__(self, base_url: str, voter: dict, clients: int = 4):
        self.ok, self.failed, self.versions = 0, [], set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(base_url, voter)) for _ in range(clients)]

    def _client(self, base_url: str, voter: dict) -> None:
        with httpx.Client(base_url=base_url, headers=AUTH, timeout=60) as http:
            while not self._stop.is_set():
                try:
                    r = http.post("/score", json={"voters": [voter]})
                    outcome = r.status_code, r.json()["model"]["version"] if r.status_code == 200 else r.text[:200]
                except (httpx.HTTPError, ValueError) as exc:
                    outcome = None, repr(exc)
                with self._lock:
                    if outcome[0] == 200:
                        self.ok += 1
                        self.versions.add(outcome[1])
                    else:
                        self.failed.append(outcome)
                self._stop.wait(PAUSE)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)


def serve(uri: str, tmp: Path, wait_ready: bool = True) -> ServiceProcess:
    """The service (default workers) following ``uri``, polling every second, its temp folders in ``tmp``."""
    return ServiceProcess(model_uri=uri, api_keys=[KEY], wait_ready=wait_ready,
                          env={"PERSUADE_RELOAD_SECONDS": "1", "TMPDIR": str(tmp), "PERSUADE_HASH_KEY": HASH_KEY})


def test_bad_versions_are_refused_while_the_old_one_keeps_serving(versions, tmp_path):
    client = MlflowClient()
    client.set_registered_model_alias(NAME, "champion", versions["good"])
    voter = {"voter_id": "V-1", "age": 44, "hh_size": 2, "urbanicity": "rural"}
    svc = serve(f"models:/{NAME}@champion", tmp_path)
    with svc, svc.client(KEY, timeout=60) as http:
        wait_for(lambda: svc.log.count("now serving it") == 2)  # both workers
        started = svc.worker_pids()
        assert len(started) == 2
        with Traffic(svc.base_url, voter) as traffic:
            wait_for(lambda: traffic.ok > 20)
            for bad, reason in (("nan_leaf", "killed by SIGABRT"),
                                ("swapped", f"file {versions['swapped_files'][0]} changed"),
                                ("deleted", "missing file turnout_calibration.json")):
                version = versions[bad]
                client.set_registered_model_alias(NAME, "champion", version)
                refused = f"version {version} failed to load"
                wait_for(lambda r=refused: svc.log.count(r) >= 2)  # each worker refused it, once
                card = http.get("/model").json()
                assert card["version"] == versions["good"], card
                assert card["reload"]["state"] == "failed" and card["reload"]["failed_version"] == version
                assert refused in card["reload"]["message"] and reason in card["reload"]["message"]
                served = traffic.ok
                wait_for(lambda s=served: traffic.ok > s + 20)  # still scoring after the refusal
        assert traffic.failed == [] and traffic.versions == {versions["good"]}
        assert svc.worker_pids() == started  # no worker died
        assert svc.log.count(f"version {versions['nan_leaf']} failed to load") == 2  # not retried
        assert temp_folders(tmp_path) == []
    svc.cleanup()


def test_a_service_started_on_a_bad_alias_serves_the_last_good_version(versions, tmp_path):
    MlflowClient().set_registered_model_alias(NAME, "champion", versions["deleted"])
    svc = serve(f"models:/{NAME}@champion", tmp_path)  # waits for /readyz
    with svc, svc.client(KEY, timeout=60) as http:
        wait_for(lambda: svc.log.count("now serving it") == 2)  # both workers (each went down the same list)
        card = http.get("/model").json()
        assert card["version"] == versions["good"]
        assert card["reload"]["failed_version"] == versions["deleted"]
        message = card["reload"]["message"]
        assert f"version {versions['deleted']} failed to load" in message and "turnout_calibration.json" in message
        assert f"serving version {versions['good']} instead" in message
        for skipped in ("swapped", "nan_leaf"):  # newer than the good one, each proven and refused
            assert f"version {versions[skipped]} failed to load" in svc.log
        assert temp_folders(tmp_path) == []
    svc.cleanup()


def test_a_service_with_no_good_version_stays_unready_without_restarting(small_model, tmp_path):
    model, example = small_model
    name = "persuade-proof-nothing-good"
    version = logged_with_a_nan_leaf(model, example, name)
    MlflowClient().set_registered_model_alias(name, "champion", version)
    stale = tmp_path / "persuade-serve-999999999-left"  # a folder of a worker killed mid-download
    stale.mkdir()
    svc = serve(f"models:/{name}@champion", tmp_path, wait_ready=False)
    with svc:
        refused = f"version {version} failed to load"
        wait_for(lambda: svc.log.count(refused) == 2)
        started = svc.worker_pids()
        assert len(started) == 2
        checks = set()

        def polled_again() -> bool:  # the workers poll every second; their check times move on
            checks.add(httpx.get(svc.base_url + "/model", headers=AUTH).json()["checked_at"])
            return len(checks) >= 3

        wait_for(polled_again)
        r = httpx.get(svc.base_url + "/model", headers=AUTH)
        assert r.status_code == 503 and r.json()["failed_version"] == version
        assert "killed by SIGABRT" in r.json()["message"] and "no model is loaded yet" in r.json()["message"]
        assert httpx.get(svc.base_url + "/readyz").status_code == 503
        assert httpx.get(svc.base_url + "/livez").status_code == 200
        assert svc.worker_pids() == started and svc.log.count(refused) == 2  # polled, not retried, not restarted
        assert temp_folders(tmp_path) == []
    svc.cleanup()
