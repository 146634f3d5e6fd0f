"""One of the concurrent writers of ``tests/test_consent_ledger.py``, in a module of its own.

The writers are forked from a fork server that imported only this module and ``features``
(not the test module, which imports the service and the CLI), once for all sixteen.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from features.consent_ledger import ConsentLedger
from features.ledger_rows import ledger_rows
from features.phones import PhoneHasher

STOP_TIME = "2026-11-01T12:00:00+00:00"
MAX_APPENDS = 100_000


def phone(i: int) -> str:
    return f"(202) 555-{i % 10_000:04d}"


def write_for_a_while(location: str, hash_key: str, writer: int, seconds: float, ready, start, out: str) -> None:
    """Append small batches for ``seconds`` once ``start`` is set; write what was acknowledged to ``out``.

    Each batch: a do-not-contact of the writer's own, every third a STOP reply by phone,
    every fifth an event every writer sends (stored once), every fourth a retry of the
    writer's previous event.
    """
    ledger = ConsentLedger(location, hasher=PhoneHasher(hash_key))
    acked, errors = [], []
    ready.put(writer)
    start.wait(600)
    end = time.monotonic() + seconds
    for i in range(MAX_APPENDS):
        if time.monotonic() >= end:
            break
        batch = [{"event_id": f"w{writer}-{i}", "voter_id": f"V{writer}-{i}", "event": "do_not_contact"}]
        if i % 3 == 0:
            batch.append({"event_id": f"w{writer}-{i}-sms", "phone": phone(writer * 1000 + i), "reply": "STOP",
                          "timestamp": STOP_TIME})
        if i % 5 == 0:
            batch.append({"event_id": f"shared-{i}", "voter_id": f"S{i}", "event": "do_not_contact"})
        if i % 4 == 3:
            batch.append({"event_id": f"w{writer}-{i - 1}", "voter_id": f"V{writer}-{i - 1}",
                          "event": "do_not_contact"})
        try:
            stored = ledger.append(ledger_rows(pd.DataFrame(batch), hasher=ledger.hasher, time_on_receipt=True),
                                   received_from=f"writer-{writer}")
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on any
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
            continue
        acked += [[e, int(s)] for e, s in zip(stored["event_id"], stored["seq"], strict=True)]
    ledger.close()
    Path(out).write_text(json.dumps({"acked": acked, "errors": errors}))
