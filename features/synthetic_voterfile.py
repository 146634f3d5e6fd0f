"""A synthetic voter file of any size, GGL-shaped, written to parquet in chunks.

The file has the columns of the GGL 2008 voter file (``data/ggl2008/README.md``) that a
scoring model reads -- ``hh_size``, ``neighbors`` and the six past-turnout flags -- plus
``voter_id``, ``sex``, ``age`` and ``cluster``, and synthetic PII (first and last names,
phone numbers) so that the PII guard has something to find at scale. Everything is
made up: the names come from a short list, the phone numbers are random numbers in real
US area codes.

Marginals follow the GGL file (household sizes, the ``neighbors`` count, turnout rate of
each past election); past turnout is correlated through a per-voter propensity, as in a
real file. There are no treatments or outcomes: this is a file to *score*.

Voters are generated and written one chunk at a time, so memory stays bounded by the
chunk size (10 million voters take about the memory of one chunk). Strings are built as
Arrow buffers directly, without Python objects per row.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from features.synthetic import us_area_codes

# Share of voters who voted in each past election (the GGL file; it was drawn from the
# voters of the November 2004 general election, hence 1.0).
PAST_TURNOUT = {
    "primary_00": 0.252, "general_00": 0.843, "primary_02": 0.389,
    "general_02": 0.811, "primary_04": 0.402, "general_04": 1.0,
}
HH_SIZE = {1: 0.139, 2: 0.622, 3: 0.167, 4: 0.060, 5: 0.0096, 6: 0.001, 7: 0.0003, 8: 0.0001}
N_CLUSTERS = 10_000
FIRST_NAMES = ["Avery", "Jordan", "Casey", "Riley", "Morgan", "Quinn", "Harper", "Rowan", "Emerson", "Sage",
               "Dakota", "Reese", "Finley", "Skyler", "Marlowe", "Tatum"]
LAST_NAMES = ["Lindqvist", "Okafor", "Marchetti", "Nakamura", "Delacroix", "Abernathy", "Vasquez", "Oyelaran",
              "Kowalczyk", "Haddad", "Ferreira", "Ostrowski"]
PII_COLUMNS = ["first_name", "last_name", "phone"]
COLUMNS = ["voter_id", "cluster", "first_name", "last_name", "phone", "sex", "age", "hh_size", "neighbors",
           *PAST_TURNOUT]
DEFAULT_CHUNK = 500_000
ID_PREFIX = "VF-"
ID_DIGITS = 9

SCHEMA = pa.schema([
    ("voter_id", pa.string()),
    ("cluster", pa.int32()),
    ("first_name", pa.dictionary(pa.int8(), pa.string())),
    ("last_name", pa.dictionary(pa.int8(), pa.string())),
    ("phone", pa.string()),
    ("sex", pa.dictionary(pa.int8(), pa.string())),
    ("age", pa.int32()),
    ("hh_size", pa.int32()),
    ("neighbors", pa.int32()),
    *[(c, pa.int32()) for c in PAST_TURNOUT],
])


def _fixed_width_strings(chars: np.ndarray) -> pa.Array:
    """An Arrow string array from an (n, width) uint8 array of ASCII characters."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    data = np.ascontiguousarray(chars, dtype=np.uint8)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) ASCII digits of non-negative integers, zero padded."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (values[:, None] // powers % 10 + ord("0")).astype(np.uint8)


def voter_ids(start: int, n: int) -> pa.Array:
    """``VF-000000001``-style ids for voters ``start .. start + n - 1`` (fixed width)."""
    prefix = np.frombuffer(ID_PREFIX.encode(), dtype=np.uint8)
    chars = np.hstack([np.broadcast_to(prefix, (n, len(prefix))),
                       _digits(np.arange(start, start + n, dtype=np.int64), ID_DIGITS)])
    return _fixed_width_strings(chars)


def phone_numbers(rng: np.random.Generator, n: int) -> pa.Array:
    """Random numbers spelled ``(AAA) EEE-LLLL`` in real US geographic area codes.

    The area codes are :func:`features.synthetic.us_area_codes` (``phonenumbers``' own
    metadata), as in the synthetic campaign, so that every number has a local time zone
    and quiet hours can be kept, as they would be on a real voter file.
    """
    area = _digits(rng.choice(np.array(us_area_codes(), dtype=np.int64), n), 3)
    exchange = _digits(rng.integers(200, 1000, n), 3)
    line = _digits(rng.integers(0, 10_000, n), 4)

    def const(text: str) -> np.ndarray:
        return np.broadcast_to(np.frombuffer(text.encode(), dtype=np.uint8), (n, len(text)))

    return _fixed_width_strings(np.hstack([const("("), area, const(") "), exchange, const("-"), line]))


def _choice(rng: np.random.Generator, values: list[str], n: int, p: list[float] | None = None) -> pa.Array:
    codes = rng.choice(len(values), n, p=p).astype(np.int8)
    return pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int8()), pa.array(values, type=pa.string()))


def make_chunk(start: int, n: int, rng: np.random.Generator) -> pa.Table:
    """Voters ``start .. start + n - 1`` as an Arrow table with :data:`SCHEMA`."""
    propensity = rng.normal(0.0, 1.2, n)  # a voter's habit: makes past turnout correlated
    age = np.clip(np.rint(rng.normal(50, 14.4, n) + 4 * propensity), 18, 106).astype(np.int32)
    sizes = np.array(list(HH_SIZE), dtype=np.int32)
    share = np.array(list(HH_SIZE.values()))
    hh = rng.choice(sizes, n, p=share / share.sum())
    short = np.clip(21 - rng.geometric(0.3, n), 1, 20)  # GGL: 97% list 21 neighbours, the rest a few less
    neighbors = np.where(rng.random(n) < 0.973, 21, short).astype(np.int32)
    past = {}
    for col, rate in PAST_TURNOUT.items():
        if rate >= 1.0:
            past[col] = np.ones(n, dtype=np.int32)
            continue
        logit = np.log(rate / (1 - rate)) * 1.35 + propensity  # 1.35 keeps the marginal near the rate
        past[col] = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int32)
    columns = {
        "voter_id": voter_ids(start, n),
        "cluster": pa.array(rng.integers(1, N_CLUSTERS + 1, n).astype(np.int32)),
        "first_name": _choice(rng, FIRST_NAMES, n),
        "last_name": _choice(rng, LAST_NAMES, n),
        "phone": phone_numbers(rng, n),
        "sex": _choice(rng, ["Female", "Male"], n),
        "age": pa.array(age),
        "hh_size": pa.array(hh.astype(np.int32)),
        "neighbors": pa.array(neighbors),
        **{c: pa.array(v) for c, v in past.items()},
    }
    return pa.table([columns[f.name] for f in SCHEMA], schema=SCHEMA)


def write_voter_file(
    path: str | Path,
    n: int,
    seed: int = 0,
    chunk_size: int = DEFAULT_CHUNK,
    on_chunk: Callable[[int], None] | None = None,
) -> Path:
    """Write ``n`` synthetic voters to a parquet file, ``chunk_size`` at a time.

    Parameters
    ----------
    path : str or Path
        Output parquet file (its folder is created).
    n : int
        Number of voters (10 million for the benchmark).
    seed : int
        Seed; the same ``seed`` and ``chunk_size`` give the same file.
    chunk_size : int
        Voters generated and written at once; also the parquet row-group size, so a
        streaming reader never needs more than one chunk in memory.
    on_chunk : callable, optional
        Called with the number of voters written after each chunk (progress).

    Returns
    -------
    Path
        The written file.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with pq.ParquetWriter(str(path), SCHEMA) as writer:
        for start in range(0, n, chunk_size):
            size = min(chunk_size, n - start)
            writer.write_table(make_chunk(start, size, rng), row_group_size=size)
            if on_chunk is not None:
                on_chunk(size)
    return path

