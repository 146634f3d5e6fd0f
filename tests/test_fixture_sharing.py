"""Shared fixtures are built once: no test module imports a session or module fixture.

A fixture imported into a test module is registered again for that module, so a session
fixture imported into eleven modules was built eleven times (the small model trained eleven
times a run), and a module fixture imported into a second module is built twice (the
request-bounds service started twice). Shared fixtures are registered once by
``tests/conftest.py`` (``pytest_plugins``); this test fails on a module that imports a
fixture wider than a test.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


SHARED_SCOPES = ("session", "package", "module")


def shared_fixtures(path: Path) -> set[str]:
    """Names of the functions of ``path`` decorated ``@pytest.fixture(scope=...)``, a scope of ``SHARED_SCOPES``."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and any(
                        k.arg == "scope" and getattr(k.value, "value", None) in SHARED_SCOPES for k in deco.keywords):
                    names.add(node.name)
    return names


def imported_shared_fixtures(path: Path) -> list[str]:
    """``module.name`` of each session or module fixture that ``path`` imports from a module beside it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and (path.parent / f"{node.module}.py").exists():
            shared = shared_fixtures(path.parent / f"{node.module}.py")
            found += [f"{node.module}.{alias.name}" for alias in node.names if alias.name in shared]
    return found


def test_no_test_module_imports_a_shared_fixture():
    imported = {p.name: imported_shared_fixtures(p) for p in sorted(TESTS.glob("*.py"))}
    assert {name: found for name, found in imported.items() if found} == {}


def test_the_check_sees_an_imported_session_or_module_fixture(tmp_path):
    (tmp_path / "shared.py").write_text('import pytest\n\n\n@pytest.fixture(scope="session")\ndef big():\n'
                                        '    return 1\n\n\n@pytest.fixture(scope="module")\ndef served():\n'
                                        '    return 3\n\n\n@pytest.fixture\ndef small():\n    return 2\n')
    (tmp_path / "test_x.py").write_text("from shared import big, served, small\n")
    assert imported_shared_fixtures(tmp_path / "test_x.py") == ["shared.big", "shared.served"]
