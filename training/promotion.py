"""Promotion: move the ``champion`` alias to a model version only if its gates pass.

The gates are computed at training time on the grouped hold-out and stored as tags of
the run (``gate.<name>`` = passed/failed, details in ``evaluation/gates.json``):

- ``qini_best_arm``: the best arm's Qini is positive and its bootstrap 95% CI is above 0;
- ``beats_constant``: grouped CV found a ranking better than the constant effect (each
  arm's average effect for everyone) for at least one arm;
- ``ate_consistency``: each arm's predicted ATE lies in the CI of the difference in means;
- ``validation``: the input data passed validation.

A refused promotion leaves the current champion untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
from mlflow.tracking import MlflowClient

GATES = ("qini_best_arm", "beats_constant", "ate_consistency", "validation")


class PromotionRefused(RuntimeError):
    """A gate failed; the alias was not moved."""

    def __init__(self, name: str, version: str, failed: dict[str, str]):
        self.failed = failed
        lines = [f"{gate}: {detail}" for gate, detail in failed.items()]
        super().__init__(
            f"refusing to promote {name} version {version}: gate(s) failed:\n- " + "\n- ".join(lines)
        )


@dataclass
class Promotion:
    name: str
    version: str
    alias: str
    previous: str | None


def _version_for(client: MlflowClient, name: str, version: str | None, run_id: str | None) -> str:
    if version:
        return str(client.get_model_version(name, version).version)
    versions = client.search_model_versions(f"name='{name}'")
    if run_id:
        versions = [v for v in versions if v.run_id == run_id]
    if not versions:
        what = f"run {run_id}" if run_id else "any run"
        raise LookupError(f"no registered version of {name!r} for {what}")
    return str(max(int(v.version) for v in versions))


def check_gates(client: MlflowClient, run_id: str) -> dict[str, str]:
    """Failed gates of a run, with details (empty when all pass)."""
    run = client.get_run(run_id)
    details = {}
    try:
        details = mlflow.artifacts.load_dict(f"runs:/{run_id}/evaluation/gates.json")
    except Exception:  # noqa: BLE001 - a run without the artifact fails every gate below
        details = {}
    failed = {}
    for gate in GATES:
        status = run.data.tags.get(f"gate.{gate}")
        if status != "passed":
            detail = details.get(gate, {}).get("detail", "gate not recorded for this run")
            failed[gate] = detail
    return failed


def failed_gates(metadata: dict | None) -> list[str]:
    """The gates a model's metadata (``ScoringModel.metadata``) records as failed, in order."""
    return [gate for gate, passed in ((metadata or {}).get("gates") or {}).items() if not passed]


def gates_verdict(run) -> str:
    """What ``persuade runs`` says of a run's gates.

    ``all passed`` only for a run that FINISHED with every gate recorded as passed; a run
    that is RUNNING, FAILED or KILLED says so (its gate tags may have been set before it
    stopped), and gates a finished run lacks are named as not recorded.
    """
    status = run.info.status
    if status != "FINISHED":
        return f"run {status}: not evaluated"
    tags = run.data.tags
    failed = [k.split(".", 1)[1] for k, v in tags.items() if k.startswith("gate.") and v != "passed"]
    if failed:
        return "failed: " + ",".join(failed)
    missing = [gate for gate in GATES if f"gate.{gate}" not in tags]
    return "not recorded: " + ",".join(missing) if missing else "all passed"


def promote(
    name: str,
    version: str | None = None,
    run_id: str | None = None,
    alias: str = "champion",
    client: MlflowClient | None = None,
) -> Promotion:
    """Point ``alias`` at a version of ``name`` (the latest, or the one given) if its gates pass.

    Raises
    ------
    PromotionRefused
        If any gate failed; the alias is left where it was.
    """
    client = client or MlflowClient()
    version = _version_for(client, name, version, run_id)
    mv = client.get_model_version(name, version)
    failed = check_gates(client, mv.run_id)
    previous = None
    try:
        previous = str(client.get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        previous = None
    if failed:
        raise PromotionRefused(name, version, failed)
    client.set_registered_model_alias(name, alias, version)
    return Promotion(name, version, alias, previous)
