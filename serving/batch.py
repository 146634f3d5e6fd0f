"""Batch scoring of files: stream parquet/CSV in, score in chunks, write parquet out.

Memory stays bounded by the chunk size whatever the file size: only the id and the
model's input columns are read (other columns, including PII, are never loaded), and
each scored chunk is appended to the output file before the next is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from features.pipeline import FeatureError
from serving.bundle import ScoringModel

DEFAULT_CHUNK = 200_000


@dataclass
class BatchStats:
    rows: int
    chunks: int
    output: Path


def open_dataset(path: str | Path) -> ds.Dataset:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    name = path.name.lower()
    fmt = "csv" if name.endswith((".csv", ".csv.gz")) else "parquet"
    return ds.dataset(str(path), format=fmt)


def input_columns(model: ScoringModel, dataset: ds.Dataset) -> list[str]:
    """The columns to read; a clear error if the id or a feature column is missing."""
    names = set(dataset.schema.names)
    missing = [c for c in model.input_features if c not in names]
    if missing:
        raise FeatureError(f"input is missing feature columns {missing}")
    if model.id_column not in names:
        raise FeatureError(f"input is missing the id column {model.id_column!r}")
    return [model.id_column, *model.input_features]


def iter_chunks(path: str | Path, model: ScoringModel, chunk_size: int = DEFAULT_CHUNK) -> Iterator[pd.DataFrame]:
    """Input chunks (id + feature columns only) as pandas frames."""
    dataset = open_dataset(path)
    columns = input_columns(model, dataset)
    for batch in dataset.to_batches(columns=columns, batch_size=chunk_size):
        if batch.num_rows:
            yield batch.to_pandas()


def count_rows(path: str | Path) -> int:
    return open_dataset(path).count_rows()


def score_file(
    model: ScoringModel,
    input_path: str | Path,
    output_path: str | Path,
    chunk_size: int = DEFAULT_CHUNK,
    transform: Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame] | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> BatchStats:
    """Score ``input_path`` into ``output_path`` (parquet), one chunk at a time.

    ``transform(chunk, scores)`` may post-process each chunk's scores (eligibility,
    explanations); ``on_chunk(rows)`` reports progress.
    """
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(output_path.name + ".partial")
    writer: pq.ParquetWriter | None = None
    rows = chunks = 0
    try:
        for chunk in iter_chunks(input_path, model, chunk_size):
            scores = model.score(chunk)
            if transform is not None:
                scores = transform(chunk, scores)
            table = pa.Table.from_pandas(scores, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(str(tmp), table.schema)
            writer.write_table(table)
            rows += len(chunk)
            chunks += 1
            if on_chunk is not None:
                on_chunk(len(chunk))
        if writer is None:  # empty input: still write a file with the right columns
            empty = model.score(pd.DataFrame(columns=[model.id_column, *model.input_features]))
            pq.write_table(pa.Table.from_pandas(empty, preserve_index=False), str(tmp))
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(output_path)
    return BatchStats(rows=rows, chunks=chunks, output=output_path)
