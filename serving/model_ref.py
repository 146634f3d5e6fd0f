"""Which model version a scorer is serving: :class:`ModelRef`.

Its own module so that what loads models (:mod:`serving.flavor`, :mod:`serving.registry`)
and what scores with them (:mod:`serving.scoring`) can both name it without importing
each other. :func:`serving.registry.resolve` makes one from a model URI.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelRef:
    """Which registered model version a scorer is serving."""

    name: str | None
    version: str | None
    run_id: str | None
    uri: str

    def as_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "run_id": self.run_id, "uri": self.uri}
