"""Quiet hours (``features/calling_hours.py``): what placing voters in their local time costs.

1. **Per number**: the local time zones of ``--voters`` synthetic numbers (random North
   American area codes and exchanges) with ``phonenumbers``' ``time_zones_for_number`` per
   number, against :func:`features.calling_hours.number_time_zones` (looked up once per area
   code and exchange) with a cold and a warm cache, and against the parse of the same
   numbers that the consent join does anyway (``parse_phones``).
2. **The whole decision**: ``ConsentRules.for_voters`` of those voters (the synthetic
   campaign's consent table, the 7 deliveries), and the quiet-hours stage alone
   (``EligibilityRules.keep_calling_hours``) on its decisions.
3. **One small request**: the service's rule (``ConsentEligibility``) on 10 voters.

Medians of ``--repeats`` runs. Command (project root, about a minute)::

    PERSUADE_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/calling_hours_bench.py

Tables are printed as markdown on stdout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import phonenumbers
from phonenumbers.timezone import time_zones_for_number

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PERSUADE_HASH_KEY", "bench-hash-key-0123456789")

import features.calling_hours as calling_hours  # noqa: E402
from features.consent import ConsentRules, ConsentTable, arm_deliveries, as_utc  # noqa: E402
from features.phones import parse_phones  # noqa: E402
from features.synthetic import SYNTHETIC_AS_OF, make_campaign  # noqa: E402
from serving.bundle import ArmInfo  # noqa: E402
from serving.eligibility import ConsentEligibility  # noqa: E402
from serving.voters import VoterBatch  # noqa: E402

ARMS = [ArmInfo("Mail", "mail", "mail"), ArmInfo("Door", "canvass", "canvass"), ArmInfo("Live", "phone", "live_call"),
        ArmInfo("Auto", "phone", "autodialed_call"), ArmInfo("Robo", "phone", "prerecorded_call"),
        ArmInfo("AI", "phone", "ai_voice_call"), ArmInfo("Text", "text", "text")]


def _medians(steps: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each step, the steps interleaved in every repeat (a shared machine drifts)."""
    runs: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, (fn, before) in steps.items():
            if before is not None:
                before()
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
    return {name: statistics.median(r) for name, r in runs.items()}


def per_number(e164: pd.Series, repeats: int) -> pd.DataFrame:
    clear = calling_hours._NANP_ZONES.clear
    rows = _medians({
        "parse_phones (the join's parse, for scale)": (lambda: parse_phones(e164), None),
        "time_zones_for_number per number": (
            lambda: [time_zones_for_number(phonenumbers.parse(v)) for v in e164], None),
        "number_time_zones, cold cache": (lambda: calling_hours.number_time_zones(e164), clear),
        "number_time_zones, warm cache": (lambda: calling_hours.number_time_zones(e164), None),
    }, repeats)
    return pd.DataFrame([{"step": k, "seconds": round(v, 3), "us_per_number": round(v / len(e164) * 1e6, 2)}
                         for k, v in rows.items()])


def decision(voters: pd.DataFrame, rules: ConsentRules, repeats: int) -> pd.DataFrame:
    keys = rules.keys(voters)
    at = as_utc(SYNTHETIC_AS_OF)
    decided = rules.consent_decision(keys, ARMS, at)
    specs = arm_deliveries(ARMS)
    allowed = decided[[f"eligible_{s}" for _, s, _ in specs]].to_numpy(bool)
    reason = decided[[f"suppression_{s}" for _, s, _ in specs]].to_numpy(object)
    zones = keys.time_zones.tolist()
    clear = calling_hours._NANP_ZONES.clear
    rows = _medians({
        "ConsentRules.for_voters, zone cache cold": (lambda: rules.for_voters(voters, ARMS), clear),
        "ConsentRules.for_voters, zone cache warm": (lambda: rules.for_voters(voters, ARMS), None),
        "  of which the quiet-hours stage": (
            lambda: rules.rules.keep_calling_hours(allowed, reason, [d for *_, d in specs], zones, at), None),
    }, repeats)
    return pd.DataFrame([{"step": k, "seconds": round(v, 3), "us_per_voter": round(v / len(voters) * 1e6, 2)}
                         for k, v in rows.items()])


def small_request(voters: pd.DataFrame, table_path: Path, repeats: int) -> pd.DataFrame:
    rule = ConsentEligibility(table_path, SYNTHETIC_AS_OF)
    head = voters.head(10)
    batch = VoterBatch(head.voter_id.to_numpy(dtype=object), {}, {"phone": head.phone.to_numpy(dtype=object)})
    rule(batch, ARMS)  # warm
    real = rule.rules.keep_calling_hours

    def without_stage(allowed, reason, *_):  # the same request with the quiet-hours stage skipped
        return np.array(allowed, dtype=bool), np.array(reason, dtype=object)

    def call(stage):
        rule.rules.keep_calling_hours = stage
        rule(batch, ARMS)

    rows = _medians({"ConsentEligibility, 10 voters, 7 arms": (lambda: call(real), None),
                     "  the same without the quiet-hours stage": (lambda: call(without_stage), None)}, repeats * 20)
    rule.rules.keep_calling_hours = real
    return pd.DataFrame([{"step": k, "ms_per_request": round(v * 1e3, 3)} for k, v in rows.items()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voters", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    campaign = make_campaign(args.voters, seed=3)
    voters = campaign.voter_file[["voter_id", "phone"]].reset_index(drop=True)
    e164, _ = parse_phones(voters.phone)
    print(f"## {args.voters:,} synthetic numbers ({e164.str[:8].nunique():,} distinct area code + exchange)\n")
    print(per_number(e164, args.repeats).to_markdown(index=False), "\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "consent.parquet"
        campaign.consent.to_parquet(path)
        rules = ConsentRules(ConsentTable.read(path), as_of=SYNTHETIC_AS_OF)
        print(decision(voters, rules, args.repeats).to_markdown(index=False), "\n")
        print(small_request(voters, path, args.repeats).to_markdown(index=False))
    print(f"\nrandom seed 3, repeats {args.repeats}, numpy {np.__version__}, phonenumbers {phonenumbers.__version__}")


if __name__ == "__main__":
    main()
