"""What the command line prints: one console for results, one for errors and warnings.

User text (file names, column names, values, error messages) is never read as rich
markup: a column called ``[key]`` prints as ``[key]``. Both consoles read no markup at all
(``markup=False``, table cells included), so an f-string that carries user text is safe
wherever it is printed; styles come from :class:`rich.text.Text` parts.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.text import Text

console = Console(stderr=False, highlight=False, markup=False)
err = Console(stderr=True, highlight=False, markup=False)

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, LookupError, FileNotFoundError)


def labelled(label: str, style: str, message: object) -> Text:
    """``label`` in ``style``, then ``message`` as plain text."""
    return Text.assemble((label, style), " ", str(message))


def warning(message: object) -> Text:
    """``warning:`` in yellow, then ``message`` as plain text."""
    return labelled("warning:", "yellow", message)


def warn(message: object) -> None:
    """Print a warning on stderr."""
    err.print(warning(message))


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
