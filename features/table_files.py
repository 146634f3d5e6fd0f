"""Table files: which format a path holds, and reading it, for every command alike.

One set of rules for what users bring: parquet (``.parquet``, ``.pq`` or a folder of
parquet files), comma-separated text (``.csv``, ``.csv.gz``) and tab-separated text
(``.tsv``, ``.tsv.gz``, ``.tab``). Anything else is a :class:`TableFileError` naming the
file, never a guess. Three ways to read, for three sizes of work:

- :func:`read_table`: the whole table as a pandas frame (training data, consent tables);
- :func:`open_dataset`: a lazy pyarrow dataset (its schema, its row count);
- :func:`stream_tables`: bounded-memory chunks of chosen columns (batch scoring, plans);

and one way to write: :func:`write_table`, all at once or nothing, never over an input.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

PARQUET, CSV, TSV = "parquet", "csv", "tsv"
SUFFIXES = {".parquet": PARQUET, ".pq": PARQUET, ".csv": CSV, ".csv.gz": CSV,
            ".tsv": TSV, ".tsv.gz": TSV, ".tab": TSV}
DELIMITER = {CSV: ",", TSV: "\t"}


class TableFileError(ValueError):
    """A table file that is missing, of an unknown type, or unreadable (the message names it)."""


def table_format(path: str | Path) -> str:
    """``"parquet"``, ``"csv"`` or ``"tsv"`` for ``path`` (a folder is parquet).

    Raises
    ------
    TableFileError
        For any other name, naming the file and the types accepted.
    """
    path = Path(path)
    if path.is_dir():
        return PARQUET
    name = path.name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return SUFFIXES[suffix]
    raise TableFileError(f"{path.name}: unsupported file type (use {', '.join(SUFFIXES)} or a parquet folder)")


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    return path


def read_table(path: str | Path, columns: Sequence[str] | None = None, *, as_text: bool = False) -> pd.DataFrame:
    """The whole table at ``path`` as a pandas frame.

    Parameters
    ----------
    path : str or Path
    columns : sequence of str, optional
        Read only these columns (a missing one is an error naming it).
    as_text : bool
        Read text files with every column as strings (ids and phone numbers keep their
        leading zeros; empty cells are missing); parquet keeps its own types.
    """
    path = _existing(path)
    fmt = table_format(path)
    try:
        if fmt == PARQUET:
            return pd.read_parquet(path, columns=list(columns) if columns is not None else None)
        return pd.read_csv(path, sep=DELIMITER[fmt], usecols=list(columns) if columns is not None else None,
                           dtype=str if as_text else None)
    except (ValueError, OSError, pa.ArrowException) as exc:
        raise TableFileError(f"{path.name} cannot be read: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _csv_format(fmt: str, column_types: Mapping[str, pa.DataType] | None) -> ds.CsvFileFormat:
    return ds.CsvFileFormat(parse_options=pacsv.ParseOptions(delimiter=DELIMITER[fmt]),
                            convert_options=pacsv.ConvertOptions(column_types=dict(column_types or {})))


_CSV_COLUMN = re.compile(r"CSV column #(\d+)")


def read_error(exc: Exception, path: str | Path) -> TableFileError:
    """A :class:`TableFileError` for a read error: a conversion error names the text column it is in."""
    path = Path(path)
    message = str(exc).strip()
    match = _CSV_COLUMN.search(message)
    if match and table_format(path) != PARQUET:
        parse = pacsv.ParseOptions(delimiter=DELIMITER[table_format(path)])
        names = pacsv.open_csv(str(path), parse_options=parse).schema.names  # untyped: the header only
        if int(match[1]) < len(names):
            detail = message[match.start():].splitlines()[0]
            return TableFileError(f"column {names[int(match[1])]!r} of {path.name} cannot be read as a "
                                  f"model input: {detail}")
    return TableFileError(f"input {path.name} cannot be read: {message.splitlines()[-1] if message else exc}")


def open_dataset(path: str | Path, column_types: Mapping[str, pa.DataType] | None = None) -> ds.Dataset:
    """A lazy pyarrow dataset over the table at ``path``.

    ``column_types`` fixes the types of those text columns (instead of per-block
    inference); a value that does not convert is a :class:`TableFileError` naming the column.
    """
    path = _existing(path)
    fmt = table_format(path)
    try:
        return ds.dataset(str(path), format=PARQUET if fmt == PARQUET else _csv_format(fmt, column_types))
    except pa.ArrowInvalid as exc:
        raise read_error(exc, path) from None


def count_rows(path: str | Path) -> int:
    """Rows of the table (parquet: from its metadata; text: one pass over it)."""
    return open_dataset(path).count_rows()


def _rechunk(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.Table]:
    """Regroup a stream of small batches into tables of exactly ``size`` rows (the last may be shorter)."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        pending.append(batch)
        rows += batch.num_rows
        while rows >= size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, size)
            rest = table.slice(size)
            pending, rows = rest.to_batches(), rest.num_rows
    if rows:
        yield pa.Table.from_batches(pending)


def _batches(path: Path, dataset: ds.Dataset, columns: list[str], column_types: Mapping[str, pa.DataType],
             chunk_size: int) -> Iterator[pa.RecordBatch | pa.Table]:
    fmt = table_format(path)
    if fmt != PARQUET:
        options = pacsv.ConvertOptions(column_types=dict(column_types), include_columns=columns)
        parse = pacsv.ParseOptions(delimiter=DELIMITER[fmt])
        yield from _rechunk(pacsv.open_csv(str(path), parse_options=parse, convert_options=options), chunk_size)
        return
    for fragment in dataset.get_fragments():
        for row_group in fragment.split_by_row_group():
            yield from row_group.to_batches(schema=dataset.schema, columns=columns, batch_size=chunk_size,
                                            batch_readahead=0, fragment_readahead=1)


def stream_tables(path: str | Path, columns: Sequence[str], column_types: Mapping[str, pa.DataType] | None = None,
                  chunk_size: int = 200_000) -> Iterator[pd.DataFrame]:
    """Chunks of at most ``chunk_size`` rows of ``columns``, as pandas frames, read lazily.

    A dataset scanner reads ahead as fast as it can, so a slow consumer would let it hold
    most of a file in memory. Parquet is therefore read one row group at a time (no
    read-ahead) and text through pyarrow's streaming CSV reader (one block at a time):
    memory stays bounded by a row group or a chunk whatever the file size. A missing
    column is a :class:`TableFileError` naming it.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    path = _existing(path)
    column_types = dict(column_types or {})
    dataset = open_dataset(path, column_types)
    missing = [c for c in columns if c not in dataset.schema.names]
    if missing:
        raise TableFileError(f"{path.name}: columns {missing} are missing")
    batches = _batches(path, dataset, list(columns), column_types, chunk_size)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:  # a bad value, or a corrupt page (OSError)
            raise read_error(exc, path) from None
        if batch.num_rows:
            yield batch.to_pandas()


def check_not_an_input(path: str | Path, inputs: Sequence[str | Path]) -> None:
    """Refuse an output ``path`` that would write over one of ``inputs`` (the files a command reads).

    Refused: the same file (by path or a link to it), a path inside an input folder (a
    parquet folder), a folder holding an input (an output folder is replaced whole).

    Raises
    ------
    TableFileError
        Naming the output and the input; nothing has been written.
    """
    output = Path(path).resolve()
    for given in map(Path, inputs):
        source = given.resolve()
        same = source == output or (given.exists() and output.exists() and output.samefile(given))
        if same or source in output.parents or output in source.parents:
            how = "is also" if same else "is inside" if source in output.parents else "holds"
            raise TableFileError(f"output {Path(path).name} {how} an input of this command ({given.name}): "
                                 "write the output to another file")


def write_table(frame: pd.DataFrame, path: str | Path, *, inputs: Sequence[str | Path] = ()) -> Path:
    """Write ``frame`` to ``path`` in the format its name says, all at once or not at all.

    The table is written to a temporary file beside ``path`` and renamed over it, so a
    failure leaves any earlier file whole. ``path`` may not be one of ``inputs`` (the
    files the command read): that is a :class:`TableFileError`, and nothing is written.
    """
    path = Path(path)
    fmt = table_format(path) if not path.is_dir() else "folder"
    if fmt == "folder":
        raise TableFileError(f"{path.name} is a folder: give a file name")
    check_not_an_input(path, inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        if fmt == PARQUET:
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, sep=DELIMITER[fmt], index=False,
                         compression="gzip" if path.name.lower().endswith(".gz") else None)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
