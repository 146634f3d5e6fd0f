"""``persuade`` commands run in the test's own process, for tests of what they print and write.

A subprocess per command pays for its imports and the MLflow store's start again (3 to 9 s
a command on the 2-core test machine, most of a report test); :func:`persuade` runs the
same click command in this process (``click.testing.CliRunner``), against the same
environment and MLflow store. What a test reads is what a subprocess gives: the exit
code, stdout and stderr. An exception that escapes a command is rendered into stderr as
Python would print it (``Traceback (most recent call last): ...``, exit code 1), so a test
that a command fails cleanly still sees a crash. Tests of how the process itself ends keep
a real subprocess (tests/test_cli_inputs.py, tests/test_pii_guard.py).
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass
class Done:
    """A finished command: exit code, stdout and stderr (as ``subprocess.CompletedProcess``)."""

    returncode: int
    stdout: str
    stderr: str


def persuade(*args: str, env: Mapping[str, str] | None = None) -> Done:
    """Run ``persuade ARGS`` in this process; its stderr comes back with rich's line wrapping
    undone (runs of whitespace as one space), so a message matches at any terminal width.

    Parameters
    ----------
    *args : str
        The command line after ``persuade``.
    env : mapping, optional
        Environment variables set while the command runs (e.g. ``COLUMNS``).
    """
    from click.testing import CliRunner

    from training.cli import main

    result = CliRunner(env=dict(env or {})).invoke(main, list(args))
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return Done(result.exit_code, result.stdout, " ".join(stderr.split()))
