"""``persuade consent import|export|review``: consent tables into and out of the consent ledger, and its review queue.

The ledger (:mod:`features.consent_ledger`) is where ``POST /consent/events`` writes; these
commands move whole tables through it: ``import`` appends the rows of a consent table
(parquet or CSV, the columns of :class:`features.consent.ConsentTable`, optionally
``event_id``, ``reply`` and ``status``), idempotently: importing the same table again adds
nothing. ``export`` writes the events in effect as a consent table (phone numbers as keyed
hashes with the key's check value, never the numbers), which ``persuade score --consent``
and the service read, and which imports again as the same events. ``review`` lists the unclear
replies awaiting a person's reading (they revoke automated contact meanwhile) and records one
reading (``--resolve EVENT_ID --as stop|consent|other``) as an event of its own: the reply is
never changed.

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


# --as -> the reading recorded (features.consent_ledger.ReviewDecision) and what it does
REVIEW_READINGS = {
    "stop": ("opt_out", "an opt-out: its revocation stays"),
    "consent": ("opt_in", "asks for messages: its revocation is lifted and the voter's earlier consent applies "
                          "again (the reply grants none of its own: record new consent as a consent event)"),
    "other": ("not_opt_out", "neither: its revocation is lifted and the voter's earlier consent applies again"),
}


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
                     else ""))
    console.print(f"ledger {where}")


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
                  f"from {where} -> {output_path}")


@consent_group.command("review")
@click.option("--ledger", "location", default=None, help=LEDGER_HELP)
@click.option("--resolve", "event_id", default=None, help="Record a reading of this reply (its event id).")
@click.option("--as", "reading", type=click.Choice(list(REVIEW_READINGS)), default=None,
              help="The reading: " + "; ".join(f"{k}: {v[1]}" for k, v in REVIEW_READINGS.items()) + ".")
@click.option("--reviewer", default=None, help="Who read the reply (recorded as review:<name>); default: the login.")
def review_queue(location: str | None, event_id: str | None, reading: str | None, reviewer: str | None) -> None:
    """List the unclear replies awaiting review (they revoke automated contact meanwhile), or resolve one."""
    from features.consent_ledger import LedgerConflict, LedgerError
    from training.cli_output import USER_ERRORS, console, fail

    if (event_id is None) != (reading is None):
        raise click.UsageError("give --resolve EVENT_ID and --as together")
    try:
        with _open(location) as ledger:
            if event_id is None:
                waiting = ledger.review_queue()
            else:
                stored = ledger.resolve(event_id, decision=REVIEW_READINGS[reading][0],
                                        reviewer=f"review:{reviewer or _login()}")
    except LedgerConflict:
        fail(ValueError(f"{event_id} was resolved before with another reading: the ledger keeps the first"))
    except (LedgerError, *USER_ERRORS) as exc:
        fail(exc)
    if event_id is not None:
        again = " (already recorded)" if bool(stored["duplicate"].iloc[0]) else ""
        console.print(f"resolved {event_id} as {reading}{again}: {REVIEW_READINGS[reading][1]}", soft_wrap=True)
        return
    console.print(f"{len(waiting):,} unclear replies awaiting review (each revokes automated contact until resolved "
                  "with --resolve EVENT_ID --as stop|consent|other)")
    for row in waiting.itertuples():
        number = f"{row.phone_hash[:12]}…" if isinstance(row.phone_hash, str) else "-"
        console.print(f"{row.event_id}  received {row.received_at:%Y-%m-%d %H:%M:%S}Z  voter {row.voter_id or '-'}  "
                      f"number (hash) {number}\n  reply: {row.reply}", soft_wrap=True)


def _login() -> str:
    """The reviewer's login name, or ``unknown``."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
