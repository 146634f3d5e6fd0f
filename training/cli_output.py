"""What the command line prints: one console for results, one for errors and warnings.

User text (file names, column names, values, error messages) is never read as rich
markup: a column called ``[key]`` prints as ``[key]``. Styles come from
:class:`rich.text.Text` parts, not from markup in the text.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.text import Text

console = Console(stderr=False, highlight=False)
err = Console(stderr=True, highlight=False)

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, LookupError, FileNotFoundError)


def labelled(label: str, style: str, message: object) -> Text:
    """``label`` in ``style``, then ``message`` as plain text."""
    return Text.assemble((label, style), " ", str(message))


def warn(message: object) -> None:
    """Print a warning on stderr."""
    err.print(labelled("warning:", "yellow", message))


def fail(exc: BaseException, label: str = "error:") -> None:
    """Print ``exc`` on stderr and exit with status 2 (a usage or input error)."""
    err.print(labelled(label, "bold red", exc))
    sys.exit(2)


def refuse_input_as_output(output: Path, *inputs: Path | None) -> None:
    """Exit with status 2 before any work if ``output`` would write over one of ``inputs``."""
    from features.table_files import check_not_an_input

    try:
        check_not_an_input(output, [path for path in inputs if path is not None])
    except ValueError as exc:
        fail(exc)


def load_model_and_rows(model_uri: str, input_path: Path):
    """The model to score or plan with, and the input's row count (for the progress bar); errors exit 2."""
    from features.table_files import count_rows
    from serving.registry import load_scoring_model

    try:
        model, ref = load_scoring_model(model_uri)
        return model, ref, count_rows(input_path)
    except USER_ERRORS as exc:
        fail(exc)
    except Exception as exc:  # noqa: BLE001 - MLflow's own errors for unknown models
        fail(LookupError(f"cannot load model {model_uri!r}: {exc}"))
