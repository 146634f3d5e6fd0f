"""Garbage collection tuned for a long-lived scoring worker.

A worker holds a large heap that never becomes garbage (the loaded model, pandas, MLflow,
BentoML) and allocates many short-lived objects per request (a 10,000-voter request is
hundreds of thousands of dicts, lists and floats). With CPython's defaults a collection
starts every 700 container allocations, and full collections walk the whole long-lived
heap: with 64 clients a worker paused 220-285 ms every second in full collections that freed
almost nothing (issue 20). So:

- :func:`tune` raises the first generation's threshold (fewer collections while a large
  request is parsed, each of about the same cost), and
- :func:`settle`, called each time a model is swapped in, collects once and then freezes
  what survives (:func:`gc.freeze`): the model and the libraries are never walked again.
  The previous freeze is undone first, so an old model's cycles are collected at the next
  swap instead of being kept forever.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 10)  # CPython's defaults: (700, 10, 10)


def tune() -> None:
    """Set the collection thresholds of a scoring worker (:data:`THRESHOLDS`)."""
    gc.set_threshold(*THRESHOLDS)


def settle() -> int:
    """Collect everything (an earlier freeze undone), then freeze the survivors; returns objects frozen."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
