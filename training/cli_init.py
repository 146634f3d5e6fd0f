"""``persuade init``: draft an annotated run config from an experiment table (:mod:`training.config_init`).

``persuade init --data FILE --arm-column COL --outcome COL [--group-column COL]
[--id-column COL] [--channel CHANNEL] --output CONFIG.yaml`` writes a config that
``persuade train --config CONFIG.yaml`` accepts as it is, every guess in a comment.
"""

from __future__ import annotations

from pathlib import Path

import click

from features.config import Channel
from training.cli_output import USER_ERRORS, console, fail, warn


@click.command("init")
@click.option("--data", "data_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="The experiment table (parquet, CSV or TSV): one row per voter or respondent.")
@click.option("--arm-column", required=True, help="The column of the assigned arm, control included.")
@click.option("--outcome", required=True, help="The outcome column (0/1 turnout or a numeric support scale).")
@click.option("--group-column", default=None,
              help="The randomization cluster (default: a household, cluster or precinct column, else the id).")
@click.option("--id-column", default=None, help="The voter or respondent id (default: a column unique per row).")
@click.option("--channel", type=click.Choice([c.value for c in Channel]), default=None,
              help="Every arm's channel (default: guessed from the arm names, else mail).")
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The run config to write; its file name is the experiment and model name.")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
def init_command(data_path: Path, arm_column: str, outcome: str, group_column: str | None, id_column: str | None,
                 channel: str | None, output_path: Path, force: bool) -> None:
    """Draft a run config from an experiment table: arms, control, outcome, features, and why each
    other column is not a feature."""
    from features.table_files import read_table
    from training.config_init import draft_config, project_name, table_path_for

    try:
        if output_path.exists() and not force:
            raise ValueError(f"{output_path} exists: give --force to overwrite it")
        draft = draft_config(read_table(data_path), table=table_path_for(data_path, output_path),
                             arm_column=arm_column, outcome=outcome, name=project_name(output_path),
                             id_column=id_column, group_column=group_column, channel=channel)
    except USER_ERRORS as exc:
        fail(exc)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(draft.to_yaml())
    values = draft.values
    arms = ", ".join(values["arms"])
    console.print(f"wrote {output_path}: control {values['control_label']!r}, arms {arms}; outcome "
                  f"{values['outcome']['column']!r} ({values['outcome']['kind']}); {len(values['features'])} "
                  f"features; group {values['group_column']!r}")
    for col, why in draft.excluded.items():
        console.print(f"  not a feature: {col}: {why}")
    for problem in draft.problems:
        warn(f"validation still refuses: {problem}")
    console.print(f"check the comments, then: persuade train --config {output_path}")
