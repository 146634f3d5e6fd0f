"""Past programs as extra training data: one entry of a run config's ``programs:`` list.

A program that ``persuade plan`` wrote with randomized assignment (a holdout, exploration)
records, for every voter it considered, the arm or control each voter got and the
probability of every arm and of control under the plan's design. Its outcomes then train
the next model like an experiment's, each row weighed by its own recorded propensity
instead of the design shares (``training.programs`` reads and checks the files).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import Field

from features.model_specs import _Strict

PROGRAM_FILES = ("plan", "outcomes", "voters")


class ProgramSpec(_Strict):
    """One past program: its plan file, its outcomes and its voters' features.

    Parameters
    ----------
    name : str
        How the program is named in the model's provenance (``fall-2026-text``).
    plan : Path
        The plan file (parquet) ``persuade plan`` wrote: ``voter_id``, ``assigned`` (an arm
        label or ``control``), ``holdout``, ``p_<arm slug>`` for every arm and ``p_control``,
        with the plan's design fingerprint in its ``persuade.plan`` metadata.
    outcomes : Path
        The id column and the run's outcome column, one row per voter of the plan.
    voters : Path
        Those voters' features by id (the experiment's columns; other voters are ignored).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    plan: Path
    outcomes: Path
    voters: Path

    def missing_files(self, resolve: Callable[[Path], Path], where: str) -> list[str]:
        """One message per file of the program that does not exist (``where``: its place in the config)."""
        return [f"{where}.{key}: file not found: {resolve(getattr(self, key))}"
                for key in PROGRAM_FILES if not resolve(getattr(self, key)).exists()]
