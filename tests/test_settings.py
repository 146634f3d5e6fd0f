"""One typed settings object for every ``PERSUADE_*`` variable (features/settings.py).

The source is read like tests/test_layers.py does: no module under features/, training/
or serving/ but features/settings.py reads a ``PERSUADE_*`` variable itself, and none
reads settings when it is imported (serving/service.py excepted: BentoML's decorator
takes the worker count there). Then the object: its defaults, a mapping that ignores the
process environment, a bad value's message naming the variable, secrets never shown,
and the CLI and the service stopping on a bad value before they start.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from features.calling_hours import CallingHours
from features.config import ConsentSpec
from features.consent import ConsentError, EligibilityRules
from features.phones import MissingHashKeyError, PhoneHasher
from features.settings import (
    DEFAULT_CONSENT_MAX_AGE_HOURS,
    DEFAULT_PRERECORDED_CAP,
    DEFAULT_THREADS,
    PROJECT_ROOT,
    Settings,
    SettingsError,
)
from serving.auth import KeyRing
from serving.eligibility import PREDICT_PARAMS, ConsentEligibility
from serving.launcher import ServiceProcess, service_workers
from training.learners.base import n_threads

PACKAGES = ("features", "training", "serving")
SETTINGS_MODULE = Path("features/settings.py")
# BentoML reads the worker count and tracing from @bentoml.service when the module is imported
IMPORT_TIME_READERS = {Path("serving/service.py")}
ENV_METHODS = {"get", "getenv", "pop", "setdefault"}
VARIABLE = re.compile(r"PERSUADE_[A-Z0-9_]+")
SECRET = "hash-key-that-must-never-show-0123"


# -- who reads PERSUADE_* variables ----------------------------------------------------
def _persuade_names(tree: ast.Module) -> set[str]:
    """Module-level names bound to a ``"PERSUADE_..."`` literal (``LEDGER_ENV = "PERSUADE_..."``)."""
    return {target.id for node in tree.body if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant) and str(node.value.value).startswith("PERSUADE_")
            for target in node.targets if isinstance(target, ast.Name)}


def _names_a_variable(node: ast.AST, names: set[str]) -> bool:
    """``node`` is ``"PERSUADE_X"``, f"PERSUADE_{...}", ``"PERSUADE_" + x`` or a name bound to one."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value.startswith("PERSUADE_")
    if isinstance(node, ast.JoinedStr):
        return bool(node.values) and _names_a_variable(node.values[0], names)
    if isinstance(node, ast.BinOp):
        return _names_a_variable(node.left, names)
    return isinstance(node, ast.Name) and node.id in names


def direct_reads(source: str) -> list[int]:
    """Lines of ``source`` that read a ``PERSUADE_*`` variable without :class:`Settings`.

    A read is ``<mapping>.get/pop/setdefault(NAME)``, ``getenv(NAME)``, ``<mapping>[NAME]``
    (not an assignment to it: a child process's environment may be written) and
    ``NAME in <mapping>``.
    """
    tree = ast.parse(source)
    names = _persuade_names(tree)
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            method = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if method in ENV_METHODS and node.args and _names_a_variable(node.args[0], names):
                lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            if _names_a_variable(node.slice, names):
                lines.append(node.lineno)
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            if _names_a_variable(node.left, names):
                lines.append(node.lineno)
    return sorted(lines)


def variable_names(source: str) -> list[int]:
    """Lines of ``source`` that spell a variable's name (``"PERSUADE_X"``) other than as a key written to
    a child process's environment (a dict key, ``env["PERSUADE_X"] = ...``): the names are Settings'."""
    tree = ast.parse(source)
    written = {id(key) for node in ast.walk(tree) if isinstance(node, ast.Dict) for key in node.keys}
    written |= {id(node.slice) for node in ast.walk(tree)
                if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store)}
    return sorted(node.lineno for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in written
                  and VARIABLE.fullmatch(node.value))


def import_time_reads(source: str) -> list[int]:
    """Lines of ``source`` that read settings or the environment when the module is imported.

    Module-level code, class bodies, decorators and default values count; function bodies do
    not. ``os.environ.setdefault`` (a default for a third-party library) is not a read.
    """
    lines: list[int] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for part in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
                if part is not None:
                    visit(part)
            return
        if isinstance(node, ast.Lambda):
            return
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in {"from_env", "Settings", "getenv"} or (
                    name == "get" and isinstance(func, ast.Attribute) and ast.unparse(func.value).endswith("environ")):
                lines.append(node.lineno)
        if isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("environ"):
            lines.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return sorted(lines)


def _sources() -> dict[Path, str]:
    return {path.relative_to(PROJECT_ROOT): path.read_text()
            for package in PACKAGES for path in sorted((PROJECT_ROOT / package).rglob("*.py"))}


def test_only_settings_reads_persuade_variables():
    sources = _sources()
    assert len(sources) > 60
    readers = {str(path): lines for path, source in sources.items()
               if path != SETTINGS_MODULE and (lines := direct_reads(source))}
    assert readers == {}


def test_only_settings_names_the_variables():
    named = {str(path): lines for path, source in _sources().items()
             if path != SETTINGS_MODULE and (lines := variable_names(source))}
    assert named == {}


def test_nothing_reads_settings_at_import_but_the_service_decorator():
    readers = {str(path): lines for path, source in _sources().items()
               if path not in IMPORT_TIME_READERS and (lines := import_time_reads(source))}
    assert readers == {}


def test_the_readers_are_found():
    found = direct_reads('import os\nLEDGER = "PERSUADE_CONSENT_LEDGER"\n'
                         'a = os.environ.get("PERSUADE_THREADS", "2")\n'
                         'b = env.get(LEDGER)\n'
                         'c = os.getenv(f"PERSUADE_{name}_FILE")\n'
                         'd = os.environ["PERSUADE_HOME"]\n'
                         'e = "PERSUADE_TRACING" in os.environ\n'
                         'env["PERSUADE_MODEL_URI"] = "m"\n'
                         'f = os.environ.get("MLFLOW_TRACKING_URI")\n')
    assert found == [3, 4, 5, 6, 7]
    assert variable_names('X = "PERSUADE_HASH_KEY"\nf(env, "PERSUADE_API_KEYS")\nenv["PERSUADE_HOME"] = h\n'
                          'g({"PERSUADE_THREADS": "1"}, "see PERSUADE_THREADS")\n') == [1, 2]
    at_import = import_time_reads('import os\nos.environ.setdefault("X", "1")\nS = Settings.from_env()\n'
                                  '@deco(workers=os.environ.get("W"))\ndef f(t=n(Settings().threads)):\n'
                                  '    return Settings.from_env()\n')
    assert at_import == [3, 4, 5]


# -- the object ---------------------------------------------------------------------------
def test_defaults():
    s = Settings.from_env({})
    assert (s.home, s.threads, s.workers, s.reload_seconds, s.batching, s.tracing) == \
        (PROJECT_ROOT, 2, 2, 30.0, "queue", False)
    assert s.model_uri is None and s.max_body_bytes == 64 * 1024 * 1024  # no project default model
    assert (s.prerecorded_cap, s.consent_max_age_hours, s.calling_hours) == (3, 24.0, None)
    unset = ("api_keys", "api_keys_file", "admin_keys", "admin_keys_file", "consent_keys", "consent_keys_file",
             "hash_key", "audit_log", "consent_table", "consent_as_of", "consent_timezone", "consent_ledger")
    assert all(getattr(s, name) is None for name in unset)
    assert sorted(Settings.variable(f) for f in Settings.model_fields) == sorted(f"PERSUADE_{name}" for name in (
        "HOME", "THREADS", "WORKERS", "MODEL_URI", "RELOAD_SECONDS", "BATCHING", "MAX_BODY_BYTES", "TRACING",
        "API_KEYS", "API_KEYS_FILE", "ADMIN_KEYS", "ADMIN_KEYS_FILE", "CONSENT_KEYS", "CONSENT_KEYS_FILE",
        "HASH_KEY", "AUDIT_LOG", "CONSENT_TABLE", "CONSENT_AS_OF", "CONSENT_TIMEZONE", "CONSENT_MAX_AGE_HOURS",
        "CONSENT_LEDGER", "PRERECORDED_CAP", "CALLING_HOURS"))
    assert all(info.description for info in Settings.model_fields.values())
    assert Settings.variable("consent_keys_file") == "PERSUADE_CONSENT_KEYS_FILE"


def test_one_default_wherever_it_is_used(monkeypatch):
    """The prerecorded-call cap, the table's age limit and the threads: one value everywhere."""
    assert EligibilityRules().landline_prerecorded_cap == ConsentSpec().landline_prerecorded_cap == \
        ConsentEligibility().rules.landline_prerecorded_cap == PREDICT_PARAMS["prerecorded_cap"] == \
        DEFAULT_PRERECORDED_CAP
    assert ConsentEligibility().max_age_hours == PREDICT_PARAMS["consent_max_age_hours"] == \
        DEFAULT_CONSENT_MAX_AGE_HOURS
    monkeypatch.delenv("PERSUADE_THREADS", raising=False)
    assert n_threads() == Settings().threads == DEFAULT_THREADS
    monkeypatch.setenv("PERSUADE_THREADS", "1")
    assert n_threads() == 1


def test_a_mapping_ignores_the_process_environment(monkeypatch):
    monkeypatch.setenv("PERSUADE_WORKERS", "7")
    monkeypatch.setenv("PERSUADE_API_KEYS", "process-key")
    monkeypatch.setenv("PERSUADE_CALLING_HOURS", "09:00-20:00")
    assert Settings().workers == Settings.from_env().workers == service_workers() == 7
    assert Settings.from_env({}).workers == service_workers({}) == 2
    assert Settings.from_env({"PERSUADE_WORKERS": "3"}).workers == 3
    assert KeyRing.from_env().identify("process-key")[0] is not None
    assert KeyRing.from_env({}).identify("process-key") == (None, False)
    assert CallingHours.from_env().window == "09:00-20:00"
    assert CallingHours.from_env({}).window == "08:00-21:00"


def test_blank_is_unset_and_values_are_trimmed():
    s = Settings.from_env({"PERSUADE_WORKERS": " ", "PERSUADE_THREADS": " 3 ", "PERSUADE_CONSENT_TABLE": "",
                           "PERSUADE_TRACING": "true", "PERSUADE_BATCHING": " bentoml"})
    assert (s.workers, s.threads, s.consent_table, s.tracing, s.batching) == (2, 3, None, True, "bentoml")
    assert Settings.from_env({"PERSUADE_TRACING": "0"}).tracing is False


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("PERSUADE_WORKERS", "x", "PERSUADE_WORKERS must be a whole number of at least 1, got 'x'"),
    ("PERSUADE_WORKERS", "0", "PERSUADE_WORKERS must be a whole number of at least 1, got '0'"),
    ("PERSUADE_THREADS", "1.5", "PERSUADE_THREADS must be a whole number of at least 1, got '1.5'"),
    ("PERSUADE_RELOAD_SECONDS", "-1", "PERSUADE_RELOAD_SECONDS must be a number of at least 0, got '-1'"),
    ("PERSUADE_PRERECORDED_CAP", "three", "PERSUADE_PRERECORDED_CAP must be a whole number of at least 0"),
    ("PERSUADE_BATCHING", "fast", "PERSUADE_BATCHING must be one of 'queue', 'bentoml', got 'fast'"),
    ("PERSUADE_TRACING", "maybe", "PERSUADE_TRACING must be true or false"),
    ("PERSUADE_CONSENT_AS_OF", "2026-10-01", "PERSUADE_CONSENT_AS_OF must be an ISO 8601 time with a zone"),
    ("PERSUADE_CONSENT_MAX_AGE_HOURS", "a day", "PERSUADE_CONSENT_MAX_AGE_HOURS must be a number of at least 0"),
])
def test_a_bad_value_names_the_variable(variable, value, message):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({variable: value})
    assert str(info.value).startswith(message)


def test_callers_report_the_variable(monkeypatch):
    with pytest.raises(ValueError, match=r"^PERSUADE_WORKERS must be a whole number of at least 1, got 'two'$"):
        service_workers({"PERSUADE_WORKERS": "two"})
    with pytest.raises(SettingsError, match="PERSUADE_PRERECORDED_CAP"):
        ConsentEligibility.from_env({"PERSUADE_PRERECORDED_CAP": "x"})
    with pytest.raises(SettingsError, match="PERSUADE_CONSENT_AS_OF"):
        ConsentEligibility.from_env({"PERSUADE_CONSENT_AS_OF": "2026-10-01T09:00"})
    with pytest.raises(ConsentError, match="PERSUADE_CALLING_HOURS: calling hours '07:00-22:00'"):
        CallingHours.from_env({"PERSUADE_CALLING_HOURS": "07:00-22:00"})
    with pytest.raises(ValueError, match=r"PERSUADE_API_KEYS_FILE .*: cannot be read"):
        KeyRing.from_env({"PERSUADE_API_KEYS_FILE": "/nonexistent/keys.sha256"})
    monkeypatch.setenv("PERSUADE_THREADS", "many")
    with pytest.raises(SettingsError, match="PERSUADE_THREADS must be a whole number of at least 1, got 'many'"):
        n_threads()


def test_secrets_never_show(monkeypatch):
    env = {"PERSUADE_HASH_KEY": SECRET, "PERSUADE_API_KEYS": "api-" + SECRET, "PERSUADE_ADMIN_KEYS": "adm-" + SECRET,
           "PERSUADE_CONSENT_KEYS": "con-" + SECRET}
    s = Settings.from_env(env)
    for shown in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        assert SECRET not in shown
    with pytest.raises(SettingsError) as info:
        Settings.from_env({**env, "PERSUADE_WORKERS": "x"})
    assert SECRET not in str(info.value)
    with pytest.raises(SettingsError) as info:
        Settings(hash_key=12345678901234567890, api_keys=["a", SECRET])
    assert "PERSUADE_HASH_KEY must be text, got a value that is not shown" in str(info.value)
    assert SECRET not in str(info.value) and "1234567890" not in str(info.value)
    # the key is taken byte for byte (blanks are part of it) and used for hashing
    assert s.hash_key.get_secret_value() == SECRET
    assert Settings.from_env({"PERSUADE_HASH_KEY": f" {SECRET} "}).hash_key.get_secret_value() == f" {SECRET} "
    monkeypatch.setenv("PERSUADE_HASH_KEY", SECRET)
    assert PhoneHasher().hash("+15552345678") == PhoneHasher(SECRET).hash("+15552345678") == \
        PhoneHasher(s.hash_key).hash("+15552345678")
    monkeypatch.setenv("PERSUADE_HASH_KEY", "short-" + SECRET[:4])
    with pytest.raises(MissingHashKeyError) as info:
        PhoneHasher().hash("+15552345678")
    assert "PERSUADE_HASH_KEY is too short" in str(info.value) and SECRET[:4] not in str(info.value)


# -- a bad value stops the CLI and the service --------------------------------------------
def _env(tmp_path: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSUADE_")}
    env.update({"PERSUADE_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
                "BENTOML_HOME": str(tmp_path / "bentoml"), "PYTHONPATH": str(PROJECT_ROOT), **more})
    return env


def test_persuade_serve_refuses_a_bad_value_before_starting(tmp_path):
    done = subprocess.run([sys.executable, "-m", "training.cli", "serve", "--port", "3999"], cwd=PROJECT_ROOT,
                          env=_env(tmp_path, PERSUADE_WORKERS="x"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "PERSUADE_WORKERS must be a whole number of at least 1, got 'x'" in done.stderr
    assert "Traceback" not in done.stderr and "serving" not in done.stdout


def test_the_service_stops_on_a_bad_value(tmp_path, monkeypatch):
    for name in ("PERSUADE_HOME", "MLFLOW_TRACKING_URI", "BENTOML_HOME"):
        monkeypatch.setenv(name, _env(tmp_path)[name])
    svc = ServiceProcess(env={"PERSUADE_BATCHING": "fast"}, wait_ready=False, timeout=300)
    with pytest.raises(RuntimeError, match="the service exited"):
        svc.start()
    assert "PERSUADE_BATCHING must be one of 'queue', 'bentoml', got 'fast'" in svc.log
    svc.cleanup()
