"""Which registered model version a URI names, and loading its scoring model.

``models:/name@alias``, ``models:/name/N``, ``runs:/id/model`` or a local model folder
resolve to a :class:`ModelRef`; :func:`load_scoring_model` downloads the logged model and
reads its bundle (:mod:`serving.bundle`) without unpickling anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from serving.bundle import ScoringModel


@dataclass(frozen=True)
class ModelRef:
    """Which registered model version a scorer is serving."""

    name: str | None
    version: str | None
    run_id: str | None
    uri: str

    def as_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "run_id": self.run_id, "uri": self.uri}


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def resolve(uri: str, client: MlflowClient | None = None) -> ModelRef:
    """Resolve ``models:/name@alias``, ``models:/name/N`` or ``runs:/id/model`` to a version."""
    client = client or MlflowClient()
    match = _MODELS_URI.match(uri)
    if match:
        name = match["name"]
        if match["alias"]:
            mv = client.get_model_version_by_alias(name, match["alias"])
        else:
            mv = client.get_model_version(name, match["version"])
        return ModelRef(name, str(mv.version), mv.run_id, f"models:/{name}/{mv.version}")
    run = re.match(r"^runs:/(?P<run>[^/]+)/", uri)
    return ModelRef(None, None, run["run"] if run else None, uri)


def download_bundle(uri: str, dst: str | Path | None = None) -> tuple[Path, ModelRef]:
    """The bundle folder of a logged persuade model (downloaded into ``dst``) or of a local model dir."""
    if Path(uri).exists():
        path = Path(uri)
        bundle = path / "artifacts" / "bundle" if (path / "artifacts" / "bundle").exists() else path
        return bundle, ModelRef(None, None, None, str(path))
    ref = resolve(uri)
    local = mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=str(dst) if dst else None)
    return Path(local) / "artifacts" / "bundle", ref


def load_scoring_model(uri: str, dst: str | Path | None = None) -> tuple[ScoringModel, ModelRef]:
    """Download a logged persuade model (or read a local model dir) and load its bundle (checksums verified)."""
    bundle, ref = download_bundle(uri, dst)
    return ScoringModel.load(bundle), ref


def earlier_versions(ref: ModelRef, client: MlflowClient | None = None) -> list[ModelRef]:
    """The versions of ``ref``'s registered model older than ``ref``, newest first."""
    if ref.name is None or ref.version is None:
        return []
    client = client or MlflowClient()
    found = client.search_model_versions(f"name='{ref.name}'")
    older = sorted((mv for mv in found if int(mv.version) < int(ref.version)), key=lambda mv: -int(mv.version))
    return [ModelRef(ref.name, str(mv.version), mv.run_id, f"models:/{ref.name}/{mv.version}") for mv in older]
