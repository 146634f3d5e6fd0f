"""What the service benchmarks share: a home of their own, and the last lines of their report.

Each benchmark that starts the service (``load_bench``, ``plan_load_bench``,
``fault_bench``) trains and registers into a temp home, so it never touches the project's
store, and ends its markdown with the machine, the load, the date and the command.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from datetime import date
from pathlib import Path


def service_bench_parser(doc: str, seconds_help: str = "traffic per phase") -> argparse.ArgumentParser:
    """The options every service benchmark takes: ``--clients``, ``--seconds`` and ``--out``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0, help=seconds_help)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    return parser


def temp_home(prefix: str) -> tempfile.TemporaryDirectory:
    """A temp ``PERSUADE_HOME`` with its own MLflow store and BentoML home, set in this process's environment."""
    home = tempfile.TemporaryDirectory(prefix=prefix)
    os.environ["PERSUADE_HOME"] = home.name
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home.name}/mlflow.db"
    os.environ["BENTOML_HOME"] = str(Path(home.name) / "bentoml")
    return home


def publish(lines: list[str], *, command: str, load: float, out: Path | None, note: str = "") -> str:
    """``lines`` with the machine, load, date and ``command`` appended: printed, and written to ``out`` if given."""
    lines = [*lines, f"Machine: {os.cpu_count()} cores, load average {load:.1f} before the run; "
             f"PERSUADE_THREADS={os.environ.get('PERSUADE_THREADS', 'unset')}; {note}{date.today().isoformat()}.",
             f"Command: `PERSUADE_THREADS=1 .venv/bin/python {command}`"]
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        out.write_text(text)
    return text
