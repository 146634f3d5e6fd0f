"""The bundle's checksums: every file of a logged scoring model, by path, size and sha256.

:func:`write_checksums` runs when a model is saved (:func:`serving.flavor.save_model`) and
writes ``checksums.json`` into the bundle folder::

    {"format": "persuade-checksums/1", "algorithm": "sha256",
     "files": {"manifest.json": {"bytes": 1234, "sha256": "9f86..."}, "uplift/mail.txt": {...}}}

:func:`verify_checksums` runs on every load (:meth:`serving.bundle.ScoringModel.load`): a
file that is missing, one that is not listed, or one whose size or digest differs is a
:class:`BundleChecksumError` naming the file. Digests are per path, so two arm files that
were swapped are two changed files. A bundle without ``checksums.json`` (saved but never
logged, or logged before checksums existed) loads unverified.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

CHECKSUMS = "checksums.json"
FORMAT = "persuade-checksums/1"
NAMED = 5  # files named in one error at most (the count says how many more)


class BundleChecksumError(ValueError):
    """A bundle's files do not match its checksums (the message names the files)."""


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (hex)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def bundle_files(folder: str | Path) -> list[str]:
    """Relative paths (``/``-separated, sorted) of every file under ``folder`` but the checksums."""
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).as_posix() != CHECKSUMS)


def write_checksums(folder: str | Path) -> Path:
    """Write ``checksums.json`` listing every file of the bundle at ``folder``; returns its path."""
    folder = Path(folder)
    files = {name: {"bytes": (folder / name).stat().st_size, "sha256": file_digest(folder / name)}
             for name in bundle_files(folder)}
    path = folder / CHECKSUMS
    path.write_text(json.dumps({"format": FORMAT, "algorithm": "sha256", "files": files}, indent=2))
    return path


def verify_checksums(folder: str | Path) -> bool:
    """Check the bundle at ``folder`` against its ``checksums.json``.

    Returns
    -------
    bool
        True if the bundle was verified, False if it has no checksums (loaded unverified).

    Raises
    ------
    BundleChecksumError
        A listed file is missing or changed, or a file is not listed; the message names them.
    """
    folder = Path(folder)
    path = folder / CHECKSUMS
    if not path.exists():
        return False
    try:
        listed = json.loads(path.read_text())
        files = listed["files"]
        if listed.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {listed.get('format')!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleChecksumError(f"{CHECKSUMS} of the bundle cannot be read: {exc}") from None
    present = set(bundle_files(folder))
    problems = [f"missing file {name}" for name in sorted(set(files) - present)]
    problems += [f"file {name} is not in {CHECKSUMS}" for name in sorted(present - set(files))]
    for name in sorted(set(files) & present):
        expected, actual = files[name], folder / name
        if actual.stat().st_size != expected.get("bytes") or file_digest(actual) != expected.get("sha256"):
            problems.append(f"file {name} changed (its sha256 differs from {CHECKSUMS})")
    if problems:
        more = f" and {len(problems) - NAMED} more" if len(problems) > NAMED else ""
        raise BundleChecksumError("the bundle does not match its checksums: " + "; ".join(problems[:NAMED]) + more)
    return True
