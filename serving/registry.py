"""Which model version a URI names, and loading its scoring model through the flavor.

``models:/name@alias``, ``models:/name/N``, ``runs:/id/model``, a local model folder or
``bentoml:<tag or alias>`` (a model pinned into a Bento, see ``persuade build --pin``)
resolve to a :class:`ModelRef`; :func:`load_scoring_model` loads it with the ``persuade``
flavor's :func:`~serving.flavor.load_model` (nothing is unpickled), :func:`download_bundle`
finds its bundle folder the same way (:func:`~serving.flavor.bundle_path`).
"""

from __future__ import annotations

import re
from pathlib import Path

from mlflow.tracking import MlflowClient

from serving.bundle import ScoringModel
from serving.flavor import bundle_path, download_model, load_model
from serving.model_ref import ModelRef

__all__ = ["BENTO_MODEL_ALIAS", "BENTO_SCHEME", "ModelRef", "download_bundle", "earlier_versions",
           "load_scoring_model", "resolve"]

BENTO_SCHEME = "bentoml:"
BENTO_MODEL_ALIAS = "persuade-model"  # the alias of the model ``persuade build --pin`` puts into a Bento
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def resolve(uri: str, client: MlflowClient | None = None) -> ModelRef:
    """Resolve ``models:/name@alias``, ``models:/name/N``, ``runs:/id/model`` or ``bentoml:...`` to a version."""
    if uri.startswith(BENTO_SCHEME):
        return _bento_model(uri)[1]
    match = _MODELS_URI.match(uri)
    if match:
        client = client or MlflowClient()
        name = match["name"]
        if match["alias"]:
            mv = client.get_model_version_by_alias(name, match["alias"])
        else:
            mv = client.get_model_version(name, match["version"])
        return ModelRef(name, str(mv.version), mv.run_id, f"models:/{name}/{mv.version}")
    run = re.match(r"^runs:/(?P<run>[^/]+)/", uri)
    return ModelRef(None, None, run["run"] if run else None, uri)


def _bento_model(uri: str) -> tuple[Path, ModelRef]:
    """The folder and the registry version of a model in BentoML's model store (``bentoml:<tag or alias>``).

    In a served Bento the store is the Bento's own and its aliases are set, so
    ``bentoml:persuade-model`` is the model pinned into it.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    tag = uri[len(BENTO_SCHEME):]
    try:
        stored = bentoml.models.get(tag)
    except NotFound:
        raise LookupError(
            f"no model {tag!r} in BentoML's model store: set PERSUADE_MODEL_URI to the model to serve "
            "(models:/<model_name>@champion, the model_name of the run config), or serve a Bento built with "
            "`persuade build --pin`") from None
    meta = stored.info.metadata
    ref = ModelRef(meta.get("name"), meta.get("version"), meta.get("run_id"), f"{BENTO_SCHEME}{stored.tag}")
    return Path(stored.path), ref


def download_bundle(uri: str, dst: str | Path | None = None) -> tuple[Path, ModelRef]:
    """The bundle folder of a persuade model (downloaded into ``dst``), found as the flavor finds it."""
    if uri.startswith(BENTO_SCHEME):
        folder, ref = _bento_model(uri)
        return bundle_path(folder), ref
    if Path(uri).exists():
        return bundle_path(uri), ModelRef(None, None, None, str(uri))
    ref = resolve(uri)
    return bundle_path(download_model(ref.uri, dst)), ref


def load_scoring_model(uri: str, dst: str | Path | None = None) -> tuple[ScoringModel, ModelRef]:
    """Load a persuade model with the flavor's :func:`~serving.flavor.load_model` (checksums verified)."""
    if uri.startswith(BENTO_SCHEME):
        folder, ref = _bento_model(uri)
        return load_model(str(folder)), ref
    ref = ModelRef(None, None, None, str(uri)) if Path(uri).exists() else resolve(uri)
    return load_model(ref.uri, dst), ref


def earlier_versions(ref: ModelRef, client: MlflowClient | None = None) -> list[ModelRef]:
    """The versions of ``ref``'s registered model older than ``ref``, newest first."""
    if ref.name is None or ref.version is None:
        return []
    client = client or MlflowClient()
    found = client.search_model_versions(f"name='{ref.name}'")
    older = sorted((mv for mv in found if int(mv.version) < int(ref.version)), key=lambda mv: -int(mv.version))
    return [ModelRef(ref.name, str(mv.version), mv.run_id, f"models:/{ref.name}/{mv.version}") for mv in older]
