"""Shared pieces of the consent tests: the arms of every delivery, a voter and her number, helpers."""

from __future__ import annotations

import pandas as pd
import pytest

from features.consent import ConsentTable, EligibilityRules, eligibility_for
from features.phones import HASH_KEY_ENV
from serving.bundle import ArmInfo

KEY = "consent-test-key-0123456789"
AS_OF = "2026-10-01T00:00:00Z"
PHONE = "(415) 555-2671"  # voter v1's number, written in other spellings in the tables
ARMS = [
    ArmInfo("Mail", "mail", "mail"),
    ArmInfo("Door", "canvass", "canvass"),
    ArmInfo("Live", "phone", "live_call"),
    ArmInfo("Auto", "phone", "autodialed_call"),
    ArmInfo("Robo", "phone", "prerecorded_call"),
    ArmInfo("AI", "phone", "ai_voice_call"),
    ArmInfo("Text", "text", "text"),
]
AUTOMATED = ("auto", "robo", "ai", "text")


@pytest.fixture(autouse=True)
def hash_key(monkeypatch):
    monkeypatch.setenv(HASH_KEY_ENV, KEY)


def table(*rows: dict, time_zone: str | None = "UTC") -> ConsentTable:
    """A consent table of ``rows`` (dates without a zone are read in ``time_zone``)."""
    return ConsentTable.from_frame(pd.DataFrame(list(rows)), time_zone=time_zone)


def voter(voter_id: str = "v1", phone: object = PHONE) -> pd.DataFrame:
    return pd.DataFrame({"voter_id": [voter_id], "phone": pd.Series([phone], dtype=object)})


def decide(events: ConsentTable, voters: pd.DataFrame | None = None, cap: int = 3,
           as_of: str = AS_OF) -> pd.DataFrame:
    return eligibility_for(voters if voters is not None else voter(), ARMS, events, EligibilityRules(cap), as_of)


def outcome(result: pd.DataFrame, slug: str, row: int = 0) -> str:
    return "eligible" if result[f"eligible_{slug}"].iloc[row] else result[f"suppression_{slug}"].iloc[row]


def outcomes(result: pd.DataFrame, row: int = 0) -> dict[str, str]:
    return {a.slug: outcome(result, a.slug, row) for a in ARMS}
