"""Shared fixtures: a real MLflow store in a temp dir and a trained synthetic model.

Every test that touches MLflow uses a sqlite tracking store under a temp folder (never
the project's ``mlruns/``). The synthetic campaign is trained once per session and its
registered version promoted to ``champion``, for the scoring, serving and report tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one LightGBM thread each, none spinning
    os.environ.setdefault("PERSUADE_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Fixtures of other modules, registered once for the session: a test names them as arguments
# and never imports them (an imported fixture is a new fixture in each module, and a session
# one is then built again in each: the small model was trained eleven times a run).
pytest_plugins = ["small_model_fixtures", "small_service_fixtures"]

PROJECT = Path(__file__).resolve().parent.parent
SYNTHETIC_N = 50_000
# What grouped CV chooses on the 50,000-voter campaign with the synthetic config's whole grid
# (nuisance_treated_leaves [15, 2], turnout_score_feature "select"): see ``trained``.
# bench/champion_choices_bench.py says whether the whole grid still chooses them.
CHAMPION_CHOICES = {"nuisance_treated_leaves": [15], "turnout_score_feature": True}


def pytest_collection_modifyitems(config, items):
    """Keep each expensive shared fixture on one xdist worker (``make test`` runs two).

    Every test that needs the trained synthetic champion runs on one worker, so it is
    trained once; so does every test of the small model's shared service (``small_service``),
    so it starts once; every other module stays whole on a worker, so its module fixtures
    (the GGL run, the PII flow, the support model) are built once too. xdist's
    ``--dist loadgroup`` reads the group from a ``@group`` suffix of the node id; under
    pytest 9 xdist 3.8 can no longer set it (pytest keeps the id in ``_id``), so it is
    set here.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import NodeId

    for item in items:
        names = item.fixturenames
        group = ("synthetic" if "trained" in names else "small_service" if "small_service" in names
                 else item.module.__name__)
        item._id = NodeId.parse(f"{item.nodeid}@{group}")


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> Path:
    """A real sqlite MLflow store in a temp dir, active for the whole session."""
    home = tmp_path_factory.mktemp("persuade_home")
    (home / "mlruns").mkdir()
    uri = f"sqlite:///{home}/mlruns/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERSUADE_HOME", str(home))
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("BENTOML_HOME", str(home / "bentoml"))
        import mlflow

        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        yield home


@pytest.fixture(scope="session")
def campaign():
    """The seeded synthetic campaign (50k voters) with its truth."""
    from features.synthetic import make_campaign

    return make_campaign(SYNTHETIC_N, seed=1)


@pytest.fixture(scope="session")
def campaign_dir(campaign, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("synthetic")
    campaign.write(folder, outcome="voted")
    campaign.write(folder, outcome="support")
    return folder


@pytest.fixture(scope="session")
def trained(mlflow_store, campaign_dir):
    """The synthetic turnout campaign trained, registered and promoted to champion.

    Grouped CV chooses among every learner, size and arm candidate of the program's grid,
    run once instead of twice: repeating CV over fold seeds measures the selection's noise
    (tests/test_arm_choice.py checks that), which no test of the champion reads. The two
    choices the grid makes before the learner's are fixed at what grouped CV chooses on this
    campaign with the whole grid (15-leaf treated outcome models, the turnout score as a
    feature; ``CHAMPION_CHOICES``): the alternatives cost a second nested cross-fit and
    more grouped CV (123 s of training instead of 72 s on one thread), and the model
    registered is the same, score for score. Making those choices is tested on a smaller campaign
    (``grid_trained`` in tests/test_cli.py).
    """
    import yaml

    from training.promotion import promote
    from training.run import train

    config = campaign_dir / "synthetic_voted.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["split"]["cv_repeats"] = 1
    raw["uplift"].update(CHAMPION_CHOICES)
    config = campaign_dir / "synthetic_voted_tests.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    outcome = train(config)
    promote(outcome.model_name, version=outcome.version)
    return outcome


@pytest.fixture(scope="session")
def champion_uri(trained) -> str:
    return f"models:/{trained.model_name}@champion"


@pytest.fixture(scope="session")
def model(champion_uri):
    """The champion's scoring model, downloaded once (read-only: tests never change it)."""
    from serving.registry import load_scoring_model

    return load_scoring_model(champion_uri)[0]


# -- PostgreSQL (Debian's package) for the consent ledger's tests -------------------------
PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on a Unix socket in a temp dir (no TCP), run as user postgres.

    Yields ``(socket folder, port)``; the server is stopped and its folder removed after
    the session. ``.ci/run`` installs Debian's ``postgresql`` package when it is missing.
    """
    import shutil
    import subprocess
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="persuade-pg-"))
    shutil.chown(folder, "postgres")
    data = folder / "db"
    port = str(54329 + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]))  # one server per xdist worker

    def as_postgres(*command) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *map(str, command)], check=True, capture_output=True)

    as_postgres(PG_BIN / "initdb", "-D", data, "-A", "trust", "-U", "persuade")
    as_postgres(PG_BIN / "pg_ctl", "-D", data, "-o", f"-k {folder} -p {port} -c listen_addresses=",
                "-l", folder / "server.log", "-w", "start")
    try:
        yield folder, port
    finally:
        as_postgres(PG_BIN / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_database(postgres_server):
    """``postgres_database()`` creates a fresh database on the session's server and returns its URL (psycopg)."""
    import uuid

    import sqlalchemy as sa

    folder, port = postgres_server
    admin = sa.create_engine(f"postgresql+psycopg://persuade@/postgres?host={folder}&port={port}",
                             isolation_level="AUTOCOMMIT")

    def create() -> str:
        name = f"ledger_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        return f"postgresql+psycopg://persuade@/{name}?host={folder}&port={port}"

    yield create
    admin.dispose()


@pytest.fixture
def postgres_url(postgres_database) -> str:
    """A fresh database on the session's PostgreSQL server: its SQLAlchemy URL."""
    return postgres_database()


@pytest.fixture(scope="session")
def spark():
    """One local Spark session (``local[2]``, loopback) for every Spark test of a worker.

    A JVM start costs several seconds of both cores; each module used to start and stop its
    own. ``score_dataset`` uses the active session and leaves it running.
    """
    from serving.spark import spark_session

    session = spark_session("local[2]", app_name="persuade-tests")
    yield session
    session.stop()
