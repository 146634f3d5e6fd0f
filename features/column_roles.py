"""What a column of an experiment table probably is, read from its name and its values.

The rules ``persuade init`` drafts a run config by (``training/config_init.py``): which
value of the arm column is the control, which column groups voters (household, cluster,
precinct), which are identifiers, protected attributes (sex, race, age, ...) or recorded
after contact (contacted, reached, response, ...), and what channel an arm's name
suggests. Each is a guess that the drafted config states in a comment; none is used at
training time, where the config says what each column is. Personal data (names, phone
numbers, e-mails, addresses) is :mod:`features.pii`'s job.
"""

from __future__ import annotations

import re

import pandas as pd

# words of a column name (snake_case, camelCase, digits split off)
PROTECTED_WORDS = frozenset({
    "sex", "gender", "race", "racial", "ethnicity", "ethnic", "hispanic", "latino", "latinx", "age", "yob",
    "religion", "religious", "faith", "nationality", "citizenship", "disability", "disabled", "marital",
    "orientation", "lgbt", "lgbtq", "pregnant", "pregnancy",
})
AGE_WORDS = frozenset({"age"})
POST_TREATMENT_WORDS = frozenset({
    "contact", "contacted", "reached", "reach", "attempt", "attempted", "attempts", "response", "responded",
    "opened", "replied", "reply", "clicked", "answered", "delivered", "conversation", "conversations", "spoke",
    "canvassed", "called", "visited", "knocked", "complied", "compliance", "received", "treated", "bounced",
    "unsubscribed", "optout", "dose",
})
GROUP_WORDS = ("household", "hh", "hhid", "cluster", "precinct", "block", "family")  # in order of preference
SIZE_WORDS = frozenset({"size", "count", "n", "num", "number", "members", "total"})
ID_WORDS = frozenset({"id", "ids", "uuid", "guid", "key"})
CHANNEL_WORDS = {
    "mail": ("mail", "mailer", "mailing", "postcard", "postcards", "letter", "letters", "flyer"),
    "phone": ("phone", "call", "calls", "dial", "dialer", "robocall", "ivr"),
    "text": ("text", "texts", "sms", "txt", "message"),
    "canvass": ("canvass", "canvassing", "door", "doors", "knock", "visit", "f2f"),
}
CONTROL_PATTERN = re.compile(
    r"^\s*(control|controls|ctrl|none|nothing|placebo|untreated|holdout|hold[ _-]?out|baseline|0|no|false|"
    r"no[ _-].*|not[ _-].*)\s*$|control|placebo",
    re.IGNORECASE,
)


def name_words(column: str) -> list[str]:
    """Lower-case words of a column name: ``vf_age`` -> [vf, age], ``ageYears2024`` -> [age, years, 2024]."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1_\2", str(column))
    return re.findall(r"[a-z]+|\d+", spaced.lower())


def looks_protected(column: str) -> bool:
    """True if the name says protected attribute (sex, gender, race, ethnicity, age, religion, ...)."""
    words = name_words(column)
    return bool(PROTECTED_WORDS.intersection(words)) or ("birth" in words and "year" in words)


def looks_like_age(column: str, values: pd.Series) -> bool:
    """True for a column named like age (``age``, ``vf_age``, ``age_2024``) of whole years, 0 to 120."""
    if not AGE_WORDS.intersection(name_words(column)) or not pd.api.types.is_numeric_dtype(values):
        return False
    if pd.api.types.is_bool_dtype(values):
        return False
    years = values.dropna()
    return len(years) > 0 and bool(years.between(0, 120).all()) and years.nunique() > 12


def looks_post_treatment(column: str) -> bool:
    """True if the name says recorded after contact (contacted, reached, response, opened, replied, ...)."""
    return bool(POST_TREATMENT_WORDS.intersection(name_words(column)))


def looks_like_id(column: str, values: pd.Series) -> bool:
    """True for an identifier: named like one (``*_id``, ``uuid``), or text or whole numbers unique per row."""
    if ID_WORDS.intersection(name_words(column)):
        return True
    return unique_per_row(values) and not pd.api.types.is_float_dtype(values) and len(values) >= 20


def unique_per_row(values: pd.Series) -> bool:
    """True if no value is missing or repeated."""
    return bool(values.notna().all()) and values.nunique() == len(values)


def group_rank(column: str) -> int | None:
    """Preference of a column as the grouping of voters (0: household, then cluster, precinct, ...),
    None if its name is no grouping (``hh_size`` is a size, not a household)."""
    words = name_words(column)
    if SIZE_WORDS.intersection(words):
        return None
    ranks = [GROUP_WORDS.index(w) for w in words if w in GROUP_WORDS]
    return min(ranks) if ranks else None


def looks_like_control(label: object) -> bool:
    """True if an arm's value reads as the control: control, none, placebo, 0, "No Postcard", ..."""
    return bool(CONTROL_PATTERN.search(str(label)))


def channel_hint(*names: object) -> str | None:
    """The channel (``mail``, ``phone``, ``text``, ``canvass``) the first telling name suggests, else None."""
    for name in names:
        words = set(name_words(str(name)))
        for channel, hints in CHANNEL_WORDS.items():
            if words.intersection(hints):
                return channel
    return None
