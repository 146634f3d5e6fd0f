"""Score a voter file on Spark with the same model and the same code as the local engine.

For teams whose voter file outgrows one machine. The registered model is loaded once on
the driver, its bundle files (:mod:`serving.bundle`: JSON and LightGBM text, nothing
pickled) are broadcast, and each Python worker loads them once and scores Arrow batches
as pandas frames (``mapInPandas``, or the pandas UDF of :func:`scoring_udf`) with
:meth:`serving.batch.BatchScorer.score` -- the very function the local engine calls --
so both engines write the same columns and the same numbers.

Entry points::

    from serving.spark import score_dataset, score_frame, scoring_udf, spark_session

    # files in, files out (parquet or CSV in, a parquet folder out)
    score_dataset("models:/persuade-ggl2008@champion", "voters.parquet", "scores.parquet",
                  master="local[2]", explain=5)

    # or a Spark DataFrame you already have -> a lazy Spark DataFrame of scores
    spark = spark_session("spark://head:7077")
    scores = score_frame(spark.read.parquet("s3a://bucket/voters/"), "models:/persuade-ggl2008@champion")

    # or a pandas UDF column, to keep other columns beside the scores
    voters = spark.read.parquet("voters.parquet")
    score, _ = scoring_udf(voters, "models:/persuade-ggl2008@champion", explain=3)
    voters.select("precinct", score.alias("s")).select("precinct", "s.*")

pyspark is an optional extra: ``pip install '.[spark]'``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.consent import ConsentTransform
from features.consent_state import JoinTally, tally
from features.table_files import DELIMITER, PARQUET, table_format
from serving.batch import DEFAULT_CHUNK, BatchScorer, Transform
from serving.bundle import ScoringModel

try:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.pandas.types import from_arrow_schema
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the Spark engine needs pyspark: pip install 'persuade[spark]' (or '.[spark]')") from exc

# PySpark 4.3 warns on every pandas conversion that pandas 3 is "not fully supported";
# the conversions this module uses are checked against the local engine in tests/test_spark.py.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)

DEFAULT_MASTER = "local[2]"


@dataclass
class SparkStats:
    """What :func:`score_dataset` did (``consent``: the join diagnostics of a consent transform)."""

    rows: int
    output: str
    master: str
    consent: JoinTally | None = None


def spark_session(master: str = DEFAULT_MASTER, app_name: str = "persuade-score",
                  conf: dict[str, str] | None = None) -> SparkSession:
    """A Spark session for scoring (or the active one, if there is already one).

    Parameters
    ----------
    master : str
        ``local[N]`` (default ``local[2]``), or a cluster URL such as ``spark://host:7077``,
        ``yarn`` or ``k8s://https://host:443``.
    app_name : str
    conf : dict, optional
        Extra Spark settings (e.g. ``spark.executor.memory``).

    Notes
    -----
    In local mode the session binds to the loopback interface only, uses this Python
    for its workers and shows no web UI. Every mode gets one LightGBM (OpenMP) thread
    per task: Spark already runs one task per core.
    """
    settings = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.executorEnv.OMP_NUM_THREADS": "1",
    }
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        settings.update({
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.enabled": "false",
        })
    settings.update(conf or {})
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


# -- the model on the workers ------------------------------------------------------------
_WORKER_SCORERS: dict[str, BatchScorer] = {}


def bundle_files(model: ScoringModel) -> dict[str, bytes]:
    """The files of ``model``'s bundle (relative path -> bytes), to broadcast."""
    with tempfile.TemporaryDirectory(prefix="persuade-bundle-") as tmp:
        root = model.save(Path(tmp) / "bundle")
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def model_from_files(files: dict[str, bytes]) -> ScoringModel:
    """Load a :class:`ScoringModel` from :func:`bundle_files` output (on a worker)."""
    tmp = Path(tempfile.mkdtemp(prefix="persuade-bundle-"))
    try:
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        return ScoringModel.load(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _worker_scorer(token: str, broadcast, explain: int, transform: Transform | None) -> BatchScorer:
    """The job's scorer on the broadcast model, built once per Python worker process.

    ``token`` names the job (its model, ``explain`` and ``transform``), so the model is
    loaded and the scorer's fast paths are checked once, not once per task. Only the
    latest job's scorer is kept: a long-lived worker scoring job after job does not
    accumulate models.
    """
    scorer = _WORKER_SCORERS.get(token)
    if scorer is None:
        _WORKER_SCORERS.clear()
        model = model_from_files(broadcast.value)
        scorer = _WORKER_SCORERS[token] = BatchScorer(model, explain=explain, transform=transform)
    return scorer


def _plain(scores: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns (reasons) as plain strings, for Spark's Arrow conversion."""
    cats = [c for c in scores.columns if isinstance(scores[c].dtype, pd.CategoricalDtype)]
    return scores.astype(dict.fromkeys(cats, "object")) if cats else scores


# -- scoring -----------------------------------------------------------------------------
def _as_model(model: str | Path | ScoringModel) -> ScoringModel:
    if isinstance(model, ScoringModel):
        return model
    from serving.registry import load_scoring_model
    from serving.store import use_store

    use_store()
    return load_scoring_model(str(model))[0]


class _Shipped:
    """A model broadcast to the workers, and the function that scores batches there."""

    def __init__(self, spark: SparkSession, scorer: BatchScorer, sample: pd.DataFrame, row_counter=None):
        self.schema = from_arrow_schema(scorer.output_schema(scorer.score(sample)))
        self.shared = spark.sparkContext.broadcast(bundle_files(scorer.model))
        self.token = uuid.uuid4().hex
        self.explain, self.transform, self.row_counter = scorer.explain, scorer.transform, row_counter

    def __call__(self, chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        """Runs on a worker: the local engine's :meth:`BatchScorer.score` on each Arrow batch."""
        worker = _worker_scorer(self.token, self.shared, self.explain, self.transform)
        for chunk in chunks:
            out = _plain(worker.score(chunk))
            if self.row_counter is not None:
                self.row_counter.add(len(chunk))
            yield out


def _ship(frame: DataFrame, model: str | Path | ScoringModel, explain: int, transform: Transform | None,
          row_counter=None) -> tuple[BatchScorer, _Shipped]:
    scorer = BatchScorer(_as_model(model), explain=explain, transform=transform)
    scorer.check_columns(frame.columns)
    # The scorer's own columns have fixed types; a transform's are inferred from a few real rows.
    sample = scorer.empty_chunk()
    if transform is not None:
        head = frame.select(*scorer.input_columns).limit(64).toPandas()
        sample = head if not head.empty else sample
    return scorer, _Shipped(frame.sparkSession, scorer, sample, row_counter)


def score_frame(
    frame: DataFrame,
    model: str | Path | ScoringModel,
    explain: int = 0,
    transform: Transform | None = None,
    row_counter=None,
) -> DataFrame:
    """Score a Spark DataFrame of voters; lazy, like any Spark transformation.

    The batches go through ``mapInPandas`` (PySpark's pandas function API: Arrow batches
    in, pandas frames to :meth:`BatchScorer.score`, Arrow batches out). It measured about
    twice as fast here as :func:`scoring_udf`'s struct-valued pandas UDF, which does the
    same work as a column expression.

    Parameters
    ----------
    frame : pyspark.sql.DataFrame
        Voters with the model's id and feature columns; other columns are not read.
    model : str, Path or ScoringModel
        A model URI (``models:/name@alias``, ``models:/name/N``, ``runs:/...``), a local
        model folder, or a loaded model.
    explain : int
        Reasons per voter (0: none), as in the local engine.
    transform : callable, optional
        ``transform(chunk, scores) -> scores`` run on the workers (see
        :class:`serving.batch.BatchScorer`); it must be picklable.
    row_counter : pyspark Accumulator, optional
        Incremented by the rows scored (progress).

    Returns
    -------
    pyspark.sql.DataFrame
        The local engine's output columns, in the same order and types.
    """
    scorer, shipped = _ship(frame, model, explain, transform, row_counter)
    return frame.select(*[F.col(c) for c in scorer.input_columns]).mapInPandas(shipped, shipped.schema)


def scoring_udf(
    frame: DataFrame, model: str | Path | ScoringModel, explain: int = 0, transform: Transform | None = None
) -> tuple[Column, list[str]]:
    """A pandas UDF column that scores each row, for keeping other columns alongside.

    Example::

        score, columns = scoring_udf(voters, "models:/persuade-ggl2008@champion")
        voters.select("precinct", score.alias("s")).select("precinct", "s.*")

    Returns
    -------
    (Column, list of str)
        The struct-valued score column (fields: the local engine's output columns) and
        the input columns it reads.
    """
    scorer, shipped = _ship(frame, model, explain, transform)

    @pandas_udf(shipped.schema)
    def score(chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        yield from shipped(chunks)

    return score(F.struct(*[F.col(c) for c in scorer.input_columns])), scorer.input_columns


def read_voters(spark: SparkSession, path: str | Path, scorer: BatchScorer) -> DataFrame:
    """A parquet file/folder or a CSV/TSV file as a Spark DataFrame (text: typed as the model expects)."""
    fmt = table_format(path)
    path = str(path)
    if fmt != PARQUET:
        raw = spark.read.option("header", True).option("sep", DELIMITER[fmt]).csv(path)
        scorer.check_columns(raw.columns)
        types = scorer.input_types()
        return raw.select(*[F.col(c).cast("string" if str(types[c]) == "string" else "double").alias(c)
                            for c in scorer.input_columns])
    return spark.read.parquet(path)


_TALLY_SCHEMA = "voters long, phone_missing long, phone_unparseable long, ids array<string>, phones array<string>"


def consent_tally(frame: DataFrame, transform: ConsentTransform) -> JoinTally:
    """The join diagnostics of a consent transform over a Spark DataFrame of voters.

    Each partition tallies its voters on a worker (the consent layer's own
    :func:`features.consent_state.tally`); only counts and the table's matched keys
    come back to the driver.
    """
    eligibility, id_column = transform.eligibility, transform.id_column

    def per_partition(chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        table_ids, table_phones = eligibility.table.keys() if eligibility.table is not None else (set(), set())
        total = JoinTally()
        for chunk in chunks:
            total.add(tally(eligibility.keys(chunk, id_column), table_ids, table_phones))
        yield pd.DataFrame({"voters": [total.voters], "phone_missing": [total.phone_missing],
                            "phone_unparseable": [total.phone_unparseable],
                            "ids": [sorted(total.matched_ids)], "phones": [sorted(total.matched_phones)]})

    total = JoinTally()
    for row in frame.select(id_column, *transform.columns).mapInPandas(per_partition, _TALLY_SCHEMA).collect():
        total.add(JoinTally(row.voters, row.phone_missing, row.phone_unparseable, set(row.ids), set(row.phones)))
    return total


class _RowProgress(threading.Thread):
    """Reports newly scored rows (a Spark accumulator, updated as tasks finish) to ``on_chunk``."""

    def __init__(self, counter, on_chunk: Callable[[int], None], interval: float = 0.5):
        super().__init__(daemon=True)
        self.counter, self.on_chunk, self.interval = counter, on_chunk, interval
        self.seen = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self._report()

    def _report(self) -> None:
        now = self.counter.value
        if now > self.seen:
            self.on_chunk(now - self.seen)
            self.seen = now

    def finish(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join()
        self._report()


def score_dataset(
    model: str | Path | ScoringModel,
    input_path: str | Path,
    output_path: str | Path,
    *,
    spark: SparkSession | None = None,
    master: str = DEFAULT_MASTER,
    explain: int = 0,
    transform: Transform | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    on_chunk: Callable[[int], None] | None = None,
) -> SparkStats:
    """Score a parquet (or CSV) voter file on Spark into a parquet folder.

    Parameters
    ----------
    model : str, Path or ScoringModel
        Model URI, local model folder or loaded model.
    input_path, output_path : str or Path
        Any path Spark can read/write (local, ``hdfs://``, ``s3a://`` ...). The output
        is a parquet *folder* (one part file per task), replaced if it exists.
    spark : SparkSession, optional
        Use this session (left running). Without it, the active session is used, or a
        session on ``master`` is started and stopped at the end.
    master : str
        Used only when ``spark`` is not given.
    explain, transform
        As in :func:`serving.batch.score_file`. A consent transform
        (:meth:`features.consent.ConsentRules.transform`) decides on the workers, as the
        local engine does, and its join diagnostics come back in ``SparkStats.consent``.
    chunk_size : int
        Rows per Arrow batch handed to the scorer on the workers.
    on_chunk : callable, optional
        Called with the number of newly scored rows as tasks finish (progress).

    Returns
    -------
    SparkStats
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    model = _as_model(model)
    scorer = BatchScorer(model, explain=explain, transform=transform)
    if not str(input_path).startswith(("hdfs:", "s3a:", "s3:", "gs:", "abfs:")) and not Path(input_path).exists():
        raise FileNotFoundError(f"input not found: {input_path}")
    own = spark is None and SparkSession.getActiveSession() is None
    session = spark if spark is not None else spark_session(master)
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = session.conf.get(key)
    progress = None
    try:
        session.conf.set(key, str(chunk_size))
        frame = read_voters(session, input_path, scorer)
        counter = session.sparkContext.accumulator(0)
        scored = score_frame(frame, model, explain=explain, transform=transform, row_counter=counter)
        if on_chunk is not None:
            progress = _RowProgress(counter, on_chunk)
            progress.start()
        scored.write.mode("overwrite").parquet(str(output_path))
        if progress is not None:
            progress.finish()
        rows = session.read.parquet(str(output_path)).count()
        consent = consent_tally(frame, transform) if isinstance(transform, ConsentTransform) else None
        return SparkStats(rows=rows, output=str(output_path), master=session.sparkContext.master, consent=consent)
    finally:
        if progress is not None and progress.is_alive():
            progress.finish()
        if own:
            session.stop()
        elif previous is not None:
            session.conf.set(key, previous)
