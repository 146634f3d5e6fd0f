"""One table reader and writer for every command: formats, streaming, errors, safe writes."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa
import pytest

from features.table_files import (
    TableFileError,
    count_rows,
    open_dataset,
    read_table,
    stream_tables,
    table_format,
    write_table,
)

FRAME = pd.DataFrame({"voter_id": ["007", "012", "100", "204", "305"], "age": [31, 45, 52, 67, 23],
                      "party": ["D", "R", None, "D", "I"]})


@pytest.mark.parametrize(("name", "fmt"), [("a.parquet", "parquet"), ("a.PQ", "parquet"), ("a.csv", "csv"),
                                           ("a.csv.gz", "csv"), ("a.tsv", "tsv"), ("a.tsv.gz", "tsv"),
                                           ("a.tab", "tsv")])
def test_the_format_comes_from_the_name(name, fmt):
    assert table_format(name) == fmt


@pytest.mark.parametrize("name", ["a.xlsx", "a.json", "a", "a.csv.bak"])
def test_other_names_are_refused_by_name(name):
    with pytest.raises(TableFileError, match=name.replace(".", r"\.")):
        table_format(name)


def test_a_folder_is_a_parquet_dataset(tmp_path):
    (tmp_path / "part").mkdir()
    FRAME.to_parquet(tmp_path / "part" / "0.parquet", index=False)
    assert table_format(tmp_path / "part") == "parquet"
    assert count_rows(tmp_path / "part") == 5


@pytest.mark.parametrize("name", ["t.parquet", "t.csv", "t.csv.gz", "t.tsv", "t.tsv.gz"])
def test_every_format_round_trips(tmp_path, name):
    path = write_table(FRAME, tmp_path / name)
    back = read_table(path, as_text=True)
    assert back.voter_id.tolist() == FRAME.voter_id.tolist()  # leading zeros kept
    assert back.party.isna().tolist() == FRAME.party.isna().tolist()
    assert count_rows(path) == 5
    assert open_dataset(path).schema.names == list(FRAME.columns)
    chunks = list(stream_tables(path, ["voter_id", "age"], {"voter_id": pa.string(), "age": pa.float64()},
                                chunk_size=2))
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert pd.concat(chunks).age.tolist() == FRAME.age.astype(float).tolist()


def test_missing_file_and_column_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothere\.csv"):
        read_table(tmp_path / "nothere.csv")
    path = write_table(FRAME, tmp_path / "t.tsv")
    with pytest.raises(TableFileError, match=r"\['income'\]"):
        list(stream_tables(path, ["voter_id", "income"]))


def test_a_value_that_does_not_convert_names_its_column(tmp_path):
    bad = FRAME.astype({"age": object})
    bad.loc[3, "age"] = "old"
    path = write_table(bad, tmp_path / "bad.tsv")
    with pytest.raises(TableFileError, match="'age'"):
        list(stream_tables(path, ["voter_id", "age"], {"age": pa.float64()}))


def test_an_unreadable_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(TableFileError, match=r"broken\.parquet"):
        read_table(path)


def test_write_refuses_an_input_and_writes_nothing(tmp_path):
    path = write_table(FRAME, tmp_path / "voters.parquet")
    before = path.read_bytes()
    with pytest.raises(TableFileError, match="also an input"):
        write_table(FRAME.head(1), tmp_path / "voters.parquet", inputs=[path])
    link = tmp_path / "alias.parquet"
    os.link(path, link)
    with pytest.raises(TableFileError, match="also an input"):
        write_table(FRAME.head(1), link, inputs=[path])
    assert path.read_bytes() == before


def test_a_failed_write_leaves_the_earlier_file_whole(tmp_path):
    path = write_table(FRAME, tmp_path / "out.parquet")
    before = path.read_bytes()
    with pytest.raises((TypeError, ValueError, pa.ArrowException)):
        write_table(pd.DataFrame({"x": [object(), object()]}), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]
