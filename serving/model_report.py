"""``GET /report``: the compliance reviewer's model report of the model being served.

``persuade report --run RUN_ID`` writes the report and logs it to the run at
:data:`MODEL_REPORT_ARTIFACT`; the service fetches it from the tracking store of the run
that produced the served version, each time it is asked, so a report re-written for that
run is served at once. The HTML is self-contained (images embedded, no scripts), and is
served with a content security policy that forbids any network access from the page.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

REPORT_DIR = "report"
MODEL_REPORT_ARTIFACT = f"{REPORT_DIR}/model_report.html"
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


class ReportNotFound(LookupError):
    """The run of the served model has no model report (yet)."""


def fetch_model_report(run_id: str) -> bytes:
    """The model report logged to ``run_id`` (HTML bytes).

    Raises
    ------
    ReportNotFound
        No report was logged to the run; the message says how to write one.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from serving.store import use_store

    use_store()
    with tempfile.TemporaryDirectory(prefix="persuade-report-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=MODEL_REPORT_ARTIFACT,
                                                       dst_path=tmp)
        except (MlflowException, OSError) as exc:
            raise ReportNotFound(
                f"run {run_id} has no model report ({MODEL_REPORT_ARTIFACT}); write it with "
                f"`persuade report --run {run_id}`") from exc
        return Path(path).read_bytes()
