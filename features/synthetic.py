"""A seeded synthetic contact program with known per-voter effects.

It is the test bed of the learners: unlike real data, every voter's true uplift for
every arm is known, so recovery can be measured (Spearman of predicted vs true uplift).

The program has four arms on four channels against a no-contact control:

========== ======== ================ ==========================================
arm        channel  delivery         true effect (intent to treat)
========== ======== ================ ==========================================
Mail       mail     mail             common mobilization bump, small
Phone      phone    live_call        P(reached) x bigger bump; not reached = 0
Text       text     text             bump, larger for the young
Canvass    canvass  canvass          P(reached) x biggest bump, larger for 2+ hh
========== ======== ================ ==========================================

The bump peaks for voters whose baseline turnout is near 0.5 (the mobilization
literature's pattern), while the baseline itself is a deliberately complicated
function of vote history, age and place: a learner that models each arm's outcome
separately (T-learner) spends its capacity on the baseline and gets the difference
wrong, which is where the DR and X learners earn their keep.

Two outcomes: ``voted`` (0/1 turnout) and ``support`` (a 0-10 numeric score whose
uplift is in points). Names, phone numbers, e-mails and addresses are synthetic and
exist to exercise the PII guard.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import phonenumbers
import yaml
from phonenumbers.timezone import time_zones_for_geographical_number

ARMS = {
    "Mail": {"channel": "mail", "delivery": "mail", "share": 0.15, "cost": 0.6},
    "Phone": {"channel": "phone", "delivery": "live_call", "share": 0.15, "cost": 1.5},
    "Text": {"channel": "text", "delivery": "text", "share": 0.15, "cost": 0.1},
    "Canvass": {"channel": "canvass", "delivery": "canvass", "share": 0.15, "cost": 4.0},
}
CONTROL = "Control"
CONTROL_SHARE = 0.40
FEATURES = [
    "age", "hh_size", "urbanicity", "party_score",
    "primary_18", "general_18", "primary_20", "general_20", "primary_22", "general_22",
]
FIRST = ["Avery", "Jordan", "Casey", "Riley", "Morgan", "Quinn", "Harper", "Rowan", "Emerson", "Sage"]
LAST = ["Lindqvist", "Okafor", "Marchetti", "Nakamura", "Delacroix", "Abernathy", "Vasquez", "Oyelaran"]
STREETS = ["Maple Ave", "Cedar St", "Lakeview Dr", "Orchard Ln", "Hillcrest Rd"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class SyntheticCampaign:
    """The tables of one synthetic program and the truth behind them."""

    voter_file: pd.DataFrame
    contact_log: pd.DataFrame
    outcomes: pd.DataFrame
    truth: pd.DataFrame
    consent: pd.DataFrame | None = None

    @property
    def flat(self) -> pd.DataFrame:
        """Voter file, assignment and outcomes joined (one row per voter)."""
        return self.voter_file.merge(self.contact_log, on="voter_id").merge(self.outcomes, on="voter_id")

    def write(self, folder: str | Path, outcome: str = "voted") -> Path:
        """Write the three tables and a run config for ``outcome``; return the config path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.voter_file.to_parquet(folder / "voter_file.parquet", index=False)
        self.contact_log.to_parquet(folder / "contact_log.parquet", index=False)
        self.outcomes.to_parquet(folder / "outcomes.parquet", index=False)
        if self.consent is not None:
            self.consent.to_parquet(folder / "consent.parquet", index=False)
        cfg = synthetic_config(folder, outcome=outcome, consent=self.consent is not None)
        path = folder / f"synthetic_{outcome}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path


def synthetic_config(folder: str | Path, outcome: str = "voted", consent: bool = False) -> dict:
    """A run config (as a dict) for a campaign written to ``folder`` (with its consent table if ``consent``)."""
    folder = Path(folder).resolve()
    extra = {"consent": {"table": str(folder / "consent.parquet"), "as_of": SYNTHETIC_AS_OF}} if consent else {}
    return {
        "name": f"synthetic-{outcome}",
        "model_name": f"persuade-synthetic-{outcome}",
        "data": {
            "voter_file": str(folder / "voter_file.parquet"),
            "contact_log": str(folder / "contact_log.parquet"),
            "outcomes": str(folder / "outcomes.parquet"),
        },
        "id_column": "voter_id",
        "arm_column": "arm",
        "control_label": CONTROL,
        "control_share": CONTROL_SHARE,
        "arms": {k: dict(v) for k, v in ARMS.items()},
        "outcome": {"column": outcome, "kind": "turnout" if outcome == "voted" else "support"},
        "turnout": {"column": "voted"},
        "group_column": "precinct",
        "features": list(FEATURES),
        "derived_features": ["past_vote_count"],
        "protected": ["sex"],
        "pii": ["first_name", "last_name", "phone", "email", "address"],
        "uplift": {
            "learners": ["t", "x", "dr"],
            "nuisance": {"n_estimators": 150, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 50},
            "nuisance_from_control": True,
            "nuisance_rounds": [10, 20, 30, 50, 80, 150],
            # Treated groups' outcome models of 15-leaf or two-leaf trees, chosen by grouped CV
            # (log-loss ranks two-leaf trees last, yet they often rank the uplift better).
            "nuisance_treated_leaves": [15, 2],
            "final": {"learning_rate": 0.03, "min_child_samples": 300},
            "final_sizes": [{"n_estimators": 300, "num_leaves": 8}],
            "pool_arms": True,
            "turnout_score_feature": "select",
            "arm_rounds": 60,
            "arm_params": {"learning_rate": 0.05, "num_leaves": 4, "min_child_samples": 300},
        },
        "split": {"holdout_fraction": 0.2, "folds": 5, "seed": 7},
        **extra,
    }


@functools.cache
def us_area_codes() -> tuple[int, ...]:
    """The geographic area codes of the United States in ``phonenumbers``' own metadata, sorted.

    An area code counts when a number in it is valid for region ``US``, is geographic and
    has a time zone in ``phonenumbers``' time-zone data: the codes a US voter file's numbers
    come from (no Canadian or Caribbean, toll-free or unassigned codes).
    """
    codes = []
    for area in range(200, 1000):
        number = phonenumbers.parse(f"+1{area}2345678")
        if (phonenumbers.region_code_for_number(number) == "US"
                and phonenumbers.is_number_type_geographical(phonenumbers.number_type(number), number.country_code)
                and any(zone != "Etc/Unknown" for zone in time_zones_for_geographical_number(number))):
            codes.append(area)
    return tuple(codes)


def _phone_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    """Numbers spelled ``(AAA) EEE-LLLL``: a real US area code (:func:`us_area_codes`), a random exchange and line."""
    area = rng.choice(np.array(us_area_codes()), n)
    exch = rng.integers(200, 999, n)
    line = rng.integers(0, 10000, n)
    return np.array([f"({a}) {e}-{x:04d}" for a, e, x in zip(area, exch, line, strict=True)])


EFFECT_SHAPES = ("varied", "turnout", "constant")


def make_campaign(
    n: int = 50_000, seed: int = 0, effect_scale: float = 1.0, effect_shape: str = "varied"
) -> SyntheticCampaign:
    """Generate a synthetic randomized contact program.

    Parameters
    ----------
    n : int
        Number of voters.
    seed : int
        Seed of the generator; the same seed gives the same tables.
    effect_scale : float
        Multiplies every true effect (0 gives a program in which contact moves nobody).
    effect_shape : {"varied", "turnout", "constant"}
        How the true effects vary: ``varied`` (the table above: with baseline turnout,
        reach, age and household), ``turnout`` (each arm's effect a function of baseline
        turnout alone, everyone reached) or ``constant`` (each arm moves every voter by
        the same amount). The last two are where a model must not beat the references:
        the turnout-shape reference and the constant effect.
    """
    if effect_shape not in EFFECT_SHAPES:
        raise ValueError(f"effect_shape must be one of {EFFECT_SHAPES}, not {effect_shape!r}")
    rng = np.random.default_rng(seed)
    ids = np.array([f"SYN-{i:08d}" for i in range(n)])
    precinct = rng.integers(0, max(n // 40, 10), n)
    age = np.clip(rng.normal(48, 17, n), 18, 95).round().astype(int)
    hh = rng.choice([1, 2, 3, 4, 5], n, p=[0.28, 0.38, 0.16, 0.12, 0.06])
    urban = rng.choice(["urban", "suburban", "rural"], n, p=[0.35, 0.45, 0.20])
    party = rng.beta(2, 2, n)
    sex = rng.choice(["F", "M"], n)
    propensity = _sigmoid(rng.normal(-0.3, 1.3, n) + 0.02 * (age - 48))
    votes = {col: (rng.random(n) < np.clip(propensity * (1.25 if col.startswith("general") else 0.7), 0, 1)).astype(int)
             for col in FEATURES[4:]}
    history = sum(votes.values())
    # Baseline turnout: deliberately wiggly, so per-arm outcome models are hard to difference.
    base_logit = (
        -2.2 + 0.55 * history + 0.9 * np.sin(age / 7.0) + 0.4 * (urban == "rural")
        - 0.6 * (urban == "urban") * votes["primary_22"] + 0.8 * (party - 0.5) ** 2
        + 0.3 * np.cos(hh * 1.7)
    )
    p0 = _sigmoid(base_logit)
    bump = np.exp(-((p0 - 0.5) ** 2) / 0.045)  # 1 at p0=0.5, ~0.1 at 0.05 or 0.95
    p_reach_phone = _sigmoid(-0.8 + 0.035 * (age - 40))  # older voters answer
    p_reach_canvass = _sigmoid(0.2 + 0.4 * (urban != "rural") - 0.3 * (hh == 1))
    reached_effect = {
        "Mail": 0.01 + 0.10 * bump,
        "Phone": 0.03 + 0.25 * bump,
        "Text": 0.01 + 0.08 * bump + 0.10 * (age < 35),
        "Canvass": 0.04 + 0.22 * bump * (1 + 0.5 * (hh >= 2)),
    }
    p_reach = {"Mail": np.ones(n), "Phone": p_reach_phone, "Text": np.ones(n), "Canvass": p_reach_canvass}
    if effect_shape != "varied":  # everyone reached; effects by baseline turnout alone, or by nothing
        p_reach = {label: np.ones(n) for label in p_reach}
        shape = bump if effect_shape == "turnout" else np.full(n, 0.5)
        reached_effect = {"Mail": 0.01 + 0.10 * shape, "Phone": 0.02 + 0.12 * shape,
                          "Text": 0.01 + 0.08 * shape, "Canvass": 0.04 + 0.16 * shape}
    reached_effect = {k: effect_scale * v for k, v in reached_effect.items()}
    # Support (0-10): persuasion moves it, most among cross-pressured voters (party ~ 0.5).
    support0 = 10 * party + 0.8 * np.sin(age / 9.0) + 0.5 * (urban == "suburban")
    cross = np.exp(-((party - 0.5) ** 2) / 0.03) if effect_shape == "varied" else np.full(n, 0.5)
    support_effect = {
        "Mail": 0.2 + 0.6 * cross,
        "Phone": 0.4 + 1.2 * cross,
        "Text": 0.1 + 0.4 * cross + 0.3 * (age < 35) * (effect_shape == "varied"),
        "Canvass": 0.5 + 1.5 * cross,
    }

    support_effect = {k: effect_scale * v for k, v in support_effect.items()}
    labels = [CONTROL, *ARMS]
    shares = [CONTROL_SHARE, *(a["share"] for a in ARMS.values())]
    arm = rng.choice(labels, n, p=shares)
    attempted = arm != CONTROL
    reach_draw = rng.random(n)
    reached = np.zeros(n, dtype=bool)
    for label in ARMS:
        mask = arm == label
        reached[mask] = reach_draw[mask] < p_reach[label][mask]
    p_vote = p0.copy()
    support = support0 + rng.normal(0, 1.5, n)
    for label in ARMS:
        mask = (arm == label) & reached
        p_vote[mask] = np.clip(p0[mask] + reached_effect[label][mask], 0, 1)
        support[mask] += support_effect[label][mask]
    voted = (rng.random(n) < p_vote).astype(int)

    first = rng.choice(FIRST, n)
    last = rng.choice(LAST, n)
    voter_file = pd.DataFrame({
        "voter_id": ids, "precinct": precinct, "first_name": first, "last_name": last,
        "phone": _phone_numbers(rng, n),
        "email": [f"{f.lower()}.{s.lower()}{i}@example.org" for i, (f, s) in enumerate(zip(first, last, strict=True))],
        "address": [f"{k} {s}" for k, s in zip(rng.integers(10, 9999, n), rng.choice(STREETS, n), strict=True)],
        "sex": sex, "age": age, "hh_size": hh, "urbanicity": urban, "party_score": party.round(4),
        **votes,
    })
    contact_log = pd.DataFrame({
        "voter_id": ids, "arm": arm, "channel": [ARMS[a]["channel"] if a in ARMS else "none" for a in arm],
        "attempted": attempted.astype(int), "reached": reached.astype(int),
    })
    outcomes = pd.DataFrame({"voter_id": ids, "voted": voted, "support": support.round(3)})
    truth = pd.DataFrame({"voter_id": ids, "p0": p0, "support0": support0})
    for label in ARMS:
        slug = label.lower()
        itt = np.clip(p0 + reached_effect[label], 0, 1) - p0
        truth[f"tau_voted_{slug}"] = p_reach[label] * itt
        truth[f"tau_support_{slug}"] = p_reach[label] * support_effect[label]
        truth[f"p_reach_{slug}"] = p_reach[label]
        truth[f"tau_reached_voted_{slug}"] = itt
    return SyntheticCampaign(voter_file, contact_log, outcomes, truth, make_consent_table(voter_file, seed))


SYNTHETIC_AS_OF = "2026-10-01T00:00:00+00:00"
_KEYWORD_SPELLINGS = ["STOP", "stop", "Stop", "QUIT", "END", "REVOKE", "opt out", "Opt-Out", "CANCEL", "unsubscribe"]
_CONSENT_SOURCES = ["voter_provided", "written", "opt_in_keyword", "verbal", "third_party"]


def make_consent_table(voter_file: pd.DataFrame, seed: int = 0, as_of: str = SYNTHETIC_AS_OF) -> pd.DataFrame:
    """A seeded consent table for a synthetic voter file (one row per event).

    Line types come from a (pretend) carrier lookup keyed by phone number; consent to
    texts and to automated calls from sign-up forms, keyed by voter id or by phone;
    revocations are replies with an opt-out keyword, keyed by phone, some followed by a
    new consent (only the voter's own opt-in or written consent restores eligibility);
    a few voters are on the internal do-not-contact list; some landlines got
    prerecorded calls in the weeks before ``as_of``. Phone numbers are written in
    other spellings than the voter file's, so the join must normalize them. The
    columns are those of :class:`features.consent.ConsentTable`.

    Parameters
    ----------
    voter_file : DataFrame
        ``voter_id`` and ``phone`` columns.
    seed : int
        Seed of the generator (a stream of its own: the campaign's tables do not change).
    as_of : str
        Every timestamp is before it.
    """
    rng = np.random.default_rng([seed, 3])
    n = len(voter_file)
    ids = voter_file["voter_id"].to_numpy()
    digits = voter_file["phone"].str.replace(r"\D", "", regex=True).to_numpy()
    spelled = np.where(rng.random(n) < 0.5, np.char.add("+1", digits.astype(str)),
                       [f"{d[:3]}.{d[3:6]}.{d[6:]}" for d in digits])
    end = pd.Timestamp(as_of)
    frames = []

    def rows(mask: np.ndarray, event: str, by_phone: np.ndarray | bool, days: tuple[float, float] | None,
             **cols: object) -> None:
        k = int(mask.sum())
        phone_key = np.broadcast_to(np.asarray(by_phone), (n,))[mask]
        when = (end - pd.to_timedelta(rng.uniform(*days, k), unit="D")) if days else pd.NaT
        frames.append(pd.DataFrame({
            "voter_id": np.where(phone_key, None, ids[mask]),
            "phone": np.where(phone_key, spelled[mask], None),
            "event": event, "timestamp": when,
            **{c: (v[mask] if isinstance(v, np.ndarray) else v) for c, v in cols.items()},
        }))

    known_line = rng.random(n) < 0.85
    cell = rng.random(n) < 0.7
    rows(known_line, "line_type", True, None, line_type=np.where(cell, "cell", "landline"))
    sources = rng.choice(_CONSENT_SOURCES, n, p=[0.45, 0.25, 0.15, 0.05, 0.10])
    rows(rng.random(n) < 0.35, "consent", rng.random(n) < 0.5, (120, 700), scope="texts", source=sources)
    rows(rng.random(n) < 0.20, "consent", False, (120, 700), scope=rng.choice(["calls", "all"], n), source=sources)
    revoked = rng.random(n) < 0.06
    rows(revoked, "revocation", True, (60, 110), keyword=rng.choice(_KEYWORD_SPELLINGS, n))
    again = revoked & (rng.random(n) < 0.3)
    rows(again, "consent", rng.random(n) < 0.5, (1, 50), scope="texts",
         source=rng.choice(["opt_in_keyword", "voter_provided"], n))
    rows(rng.random(n) < 0.015, "do_not_contact", False, (1, 400), source="internal")
    called = known_line & ~cell & (rng.random(n) < 0.3)
    for _ in range(5):
        rows(called & (rng.random(n) < 0.6), "prerecorded_call", True, (0, 45))
    table = pd.concat(frames, ignore_index=True)
    table["timestamp"] = pd.to_datetime(table["timestamp"], utc=True)
    columns = ["voter_id", "phone", "event", "line_type", "scope", "source", "keyword", "timestamp"]
    return table.reindex(columns=columns).sample(frac=1.0, random_state=seed).reset_index(drop=True)
