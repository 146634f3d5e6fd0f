"""``persuade consent import|export``: consent tables into and out of the consent ledger.

The ledger (:mod:`features.consent_ledger`) is where ``POST /consent/events`` writes; these
commands move whole tables through it: ``import`` appends the rows of a consent table
(parquet or CSV, the columns of :class:`features.consent.ConsentTable`, optionally
``event_id``, ``reply`` and ``status``), idempotently: importing the same table again adds
nothing. ``export`` writes the events in effect as a consent table (phone numbers as keyed
hashes with the key's check value, never the numbers), which ``persuade score --consent``
and the service read, and which imports again as the same events.

The ledger is ``--ledger`` (a SQLAlchemy URL or a SQLite file), else ``PERSUADE_CONSENT_LEDGER``,
else the embedded SQLite file the service uses by default.
"""

from __future__ import annotations

from pathlib import Path

import click
import pandas as pd

from features.table_files import TableFileError, read_table, table_format, write_table

LEDGER_HELP = "SQLAlchemy URL or SQLite file of the ledger; default PERSUADE_CONSENT_LEDGER, else the embedded file."
def _open(location: str | None):
    from features.consent_ledger import ConsentLedger

    return ConsentLedger(location) if location else ConsentLedger.from_env()


def read_frame(path: Path) -> pd.DataFrame:
    """A consent table file as written (parquet, or text with every column as text)."""
    return read_table(path, as_text=True)


@click.group("consent")
def consent_group() -> None:
    """Move consent tables into and out of the consent ledger (the service's opt-outs in real time)."""


@consent_group.command("import")
@click.option("--table", "table_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Consent table (parquet or CSV); phone numbers are hashed at once (PERSUADE_HASH_KEY).")
@click.option("--ledger", "location", default=None, help=LEDGER_HELP)
@click.option("--id-column", default="voter_id", show_default=True)
@click.option("--phone-column", default="phone", show_default=True)
def import_table(table_path: Path, location: str | None, id_column: str, phone_column: str) -> None:
    """Append a consent table's events to the ledger (idempotent: rows already there are skipped)."""
    from features.consent_ledger import LedgerError
    from features.ledger_rows import ledger_rows
    from training.cli_output import USER_ERRORS, console, fail

    try:
        with _open(location) as ledger:
            rows = ledger_rows(read_frame(table_path), hasher=ledger.hasher, id_column=id_column,
                               phone_column=phone_column)
            stored = ledger.append(rows, received_from=f"import:{table_path.name}")
            where = ledger.describe()["url"]
    except (LedgerError, *USER_ERRORS) as exc:
        fail(ValueError(f"{table_path.name}: {exc}"))
    new = int((~stored["duplicate"]).sum())
    review = int(((stored["status"] == "review") & ~stored["duplicate"]).sum())
    console.print(f"imported {len(stored):,} events from {table_path.name}: {new:,} new, "
                  f"{len(stored) - new:,} already in the ledger"
                  + (f", {review:,} unclear replies kept for review (they revoke automated contact)" if review
                     else ""), highlight=False)
    console.print(f"ledger {where}", highlight=False, markup=False)


@consent_group.command("export")
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the table (.parquet or .csv).")
@click.option("--ledger", "location", default=None, help=LEDGER_HELP)
def export_table(output_path: Path, location: str | None) -> None:
    """Write the ledger's events in effect as a consent table."""
    from features.consent_ledger import LedgerError
    from training.cli_output import USER_ERRORS, console, fail

    try:
        table_format(output_path)
    except TableFileError as exc:
        fail(ValueError(f"--output {exc}"))
    try:
        with _open(location) as ledger:
            table = ledger.as_table()
            where = ledger.describe()["url"]
    except (LedgerError, *USER_ERRORS) as exc:
        fail(exc)
    write_table(table, output_path)
    counts = table["event"].value_counts().sort_index()
    console.print(f"exported {len(table):,} events ({', '.join(f'{k} {v:,}' for k, v in counts.items()) or 'none'}) "
                  f"from {where} -> {output_path}", highlight=False, markup=False)
