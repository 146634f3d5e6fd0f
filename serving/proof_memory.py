"""Proofs remembered: a bundle whose exact bytes passed its proof is not proven again.

Proving a model (:func:`serving.model_check.prove_in_child`) costs a Python process that
imports LightGBM, loads the bundle and scores the probe segment: about 4 s for every
``persuade score`` or ``plan`` and for every service worker that starts. What the proof
establishes is a fact about bytes and the code that reads them: the same files, under the
same LightGBM, Python and proof format, load and score the same way. So a passed proof is
written down, under ``<home>/proofs/`` (``PERSUADE_HOME``), named by the digest of

- the bundle's ``checksums.json`` (:mod:`serving.bundle_checksums`: the sha256 of every file),
- the LightGBM and Python versions, and :data:`PROOF_FORMAT` (raised when the proof changes),

and before a child is started the bundle's files are verified against that
``checksums.json`` in this process (sha256 of every file, milliseconds) and the record is
looked up. Only a verified bundle whose record exists skips the child. A bundle without
checksums is always proven in a child, and a failed proof is never recorded, so a bad
version is refused every time it is tried.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from features.settings import Settings
from serving.bundle_checksums import CHECKSUMS, BundleChecksumError, verify_checksums
from serving.flavor import bundle_path

PROOF_FORMAT = "persuade-proof/1"
PROOFS = "proofs"  # folder under the home


def proof_key(bundle: str | Path) -> str | None:
    """The record's name for the bundle (or model folder) at ``bundle``; None if it cannot be remembered.

    None when the bundle has no ``checksums.json`` or its files do not match it (the child
    then proves it and says what is wrong).
    """
    try:
        folder = bundle_path(bundle)  # a model folder's bundle, or the bundle itself
        if not verify_checksums(folder):
            return None
    except (BundleChecksumError, OSError, ValueError):
        return None
    import lightgbm

    digest = hashlib.sha256()
    for part in (PROOF_FORMAT, lightgbm.__version__, platform.python_version()):
        digest.update(part.encode() + b"\0")
    digest.update((folder / CHECKSUMS).read_bytes())
    return digest.hexdigest()


def _folder(home: str | Path | None) -> Path:
    return Path(home if home is not None else Settings.from_env().home) / PROOFS


def is_recorded(key: str, *, home: str | Path | None = None) -> bool:
    """Whether a proof of the bytes named ``key`` (:func:`proof_key`) was recorded."""
    return (_folder(home) / f"{key}.json").is_file()


def record(key: str, *, home: str | Path | None = None) -> Path | None:
    """Record that the bytes named ``key`` passed their proof; returns the record (None if not kept).

    Give the key computed *before* the proof, so that what is recorded is the bytes proven.
    Written to a temp file and renamed, so two workers proving the same bundle at once
    leave one whole record. A home that cannot be written to keeps nothing (the next
    proof runs in a child again).
    """
    folder = _folder(home)
    import lightgbm

    record = {"format": PROOF_FORMAT, "lightgbm": lightgbm.__version__, "python": platform.python_version(),
              "proven_at": datetime.now(UTC).isoformat(timespec="seconds")}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as handle:
            json.dump(record, handle)
        os.replace(handle.name, folder / f"{key}.json")
    except OSError:
        return None
    return folder / f"{key}.json"
