"""The consent options of ``persuade score`` and ``persuade plan``: one wiring for both.

:func:`consent_options` adds the options to a command, which receives them as one
:class:`ConsentOptions`, with the rules' settings of a run config's ``consent:`` block
(``--config``) where no flag gives them. :meth:`ConsentOptions.eligibility` reads the consent table;
:func:`report` prints what was applied and the join's diagnostics (table keys that
matched no voter, voters whose number is missing or cannot be parsed), the calling
window kept in each voter's local time, and the warnings a reviewer must see (replay,
stale table, data errors). Nothing printed holds a number.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.console import Console

from features.calling_hours import STATE_COLUMN, TCPA_CALLING_HOURS
from features.consent import ConsentRules, EligibilityRules, needs_consent
from features.consent_state import JoinTally
from features.settings import (
    DEFAULT_CONSENT_MAX_AGE_HOURS,
    DEFAULT_PRERECORDED_CAP,
    DEFAULT_PRERECORDED_WINDOW_DAYS,
)
from training.cli_output import warning as warning_text


@dataclass(frozen=True)
class ConsentOptions:
    """The consent options of a command line."""

    consent_path: Path | None
    no_consent: bool
    as_of: str | None
    prerecorded_cap: int
    phone_column: str
    consent_time_zone: str | None
    consent_max_age_hours: float
    calling_hours: str
    state_column: str
    config_path: Path | None = None
    window_days: int = DEFAULT_PRERECORDED_WINDOW_DAYS  # no flag: consent.cap_window_days of the run config

    def with_config(self, given: Callable[[str], bool]) -> ConsentOptions:
        """These options with the run config's ``consent:`` settings (``--config``) where ``given(option)`` is False.

        Raises
        ------
        features.config.ConfigError
            The run config cannot be read, or its ``consent:`` block is not valid.
        """
        if self.config_path is None:
            return self
        from features.config import load_config

        spec = load_config(self.config_path).consent
        return replace(self, **{name: getattr(spec, key) for name, key in FROM_RUN_CONFIG.items() if not given(name)})

    def check(self) -> None:
        """Refuse contradicting options (a ``click.UsageError``)."""
        if self.consent_path is not None and self.no_consent:
            raise click.UsageError("give --consent TABLE or --no-consent, not both")

    def eligibility(self) -> ConsentRules | None:
        """The consent decision of these options: with ``--consent`` its table; with ``--no-consent`` no table.

        No table means nobody has consent (every arm that needs it is suppressed,
        ``no_consent``) and no do-not-contact list; the other rules still hold: quiet
        hours in each voter's local time, from the phone and state columns, which the
        output carries (``time_zone``). None without either option.
        """
        if self.no_consent:
            return ConsentRules(None, EligibilityRules(self.prerecorded_cap, self.window_days, self.calling_hours),
                                self.as_of, self.phone_column, state_column=self.state_column)
        if self.consent_path is None:
            return None
        max_age = self.consent_max_age_hours if self.consent_max_age_hours > 0 else None
        return ConsentRules.from_path(self.consent_path, self.prerecorded_cap, self.window_days, as_of=self.as_of,
                                     phone_column=self.phone_column, time_zone=self.consent_time_zone,
                                     max_age_hours=max_age, calling_hours=self.calling_hours,
                                     state_column=self.state_column)


_OPTIONS = [
    click.option("--consent", "consent_path", default=None,
                 type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="Consent table: arms a voter may not get are never chosen (eligible_<arm>, "
                      "suppression_<arm>; phone_hash: the number decided for)."),
    click.option("--no-consent", is_flag=True,
                 help="Decide with no consent table: arms that need consent are dropped for everybody "
                      "and no do-not-contact list is applied; quiet hours still hold (time_zone)."),
    click.option("--as-of", "as_of", default=None,
                 help="Replay a past decision (ISO 8601 with a zone): consents are taken as of then; "
                      "do-not-contact and revocations apply whatever their date. Default: now."),
    click.option("--prerecorded-cap", default=DEFAULT_PRERECORDED_CAP, show_default=True, type=click.IntRange(min=0),
                 help="Prerecorded calls a landline may get without consent per "
                      f"{DEFAULT_PRERECORDED_WINDOW_DAYS} days (per line)."),
    click.option("--phone-column", default="phone", show_default=True,
                 help="Phone column of the input: the number each decision is for (read, hashed, dropped)."),
    click.option("--consent-time-zone", default=None,
                 help="IANA time zone of the table's timestamps written without one (else they are refused)."),
    click.option("--consent-max-age-hours", default=DEFAULT_CONSENT_MAX_AGE_HOURS, show_default=True,
                 type=click.FloatRange(min=0),
                 help="An older consent table file suppresses automated contact (consent_stale); 0: no limit."),
    click.option("--calling-hours", default=TCPA_CALLING_HOURS, show_default=True,
                 help="Calling window (HH:MM-HH:MM) in each voter's local time at the decision time (--as-of or "
                      "now): phone and text arms outside it are suppressed (outside_calling_hours). It may be "
                      "narrowed, never widened past the TCPA's 08:00-21:00."),
    click.option("--state-column", default=STATE_COLUMN, show_default=True,
                 help="Address state column of the input (two-letter code, optional): with the number, where the "
                      "voter's local time zone comes from (none known: unknown_timezone)."),
    click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
                 help="Run config (YAML) whose consent: block gives the rules' settings no flag gives: "
                      "phone_column, landline_prerecorded_cap, cap_window_days, time_zone, calling_hours, "
                      "state_column. Its table and as_of are the model report's: give --consent and --as-of."),
]
# option -> the key of a run config's consent: block it defaults to (--config)
FROM_RUN_CONFIG = {"prerecorded_cap": "landline_prerecorded_cap", "window_days": "cap_window_days",
                   "phone_column": "phone_column", "consent_time_zone": "time_zone",
                   "calling_hours": "calling_hours", "state_column": "state_column"}
_NAMES = [f.name for f in fields(ConsentOptions) if f.name != "window_days"]
_GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)  # a flag given, not its default


def consent_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the consent options to a click command; it receives them as ``consent: ConsentOptions``."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from training.cli_output import USER_ERRORS, fail

        options = ConsentOptions(**{name: kwargs.pop(name) for name in _NAMES})
        source = click.get_current_context().get_parameter_source
        try:
            options = options.with_config(lambda name: source(name) in _GIVEN)
        except USER_ERRORS as exc:
            fail(ValueError(f"--config {exc}"))
        options.check()
        return command(*args, consent=options, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def consent_arms(model) -> list[str]:
    """Labels of the model's arms that need consent."""
    return [a.label for a in model.arms if needs_consent(a.delivery)]


def report(out: Console, err: Console, eligibility: ConsentRules, tally: JoinTally) -> dict[str, Any]:
    """Print what was applied and the join's diagnostics; return them (for the provenance)."""
    facts = eligibility.describe(tally)
    join, errors = facts["join"], facts["data_errors"]
    if facts["table"] is None:
        out.print(f"no consent table (--no-consent): nobody has consent, no do-not-contact list; decided as of "
                  f"{facts['as_of']} for {join['voters']:,} voters")
    else:
        out.print(f"consent table {facts['table']} (fingerprint {facts['fingerprint'][:16]}…) applied as of "
                  f"{facts['as_of']} to {join['voters']:,} voters")
    out.print(f"join: numbers missing {join['phone_missing']:,}, not parseable {join['phone_unparseable']:,} "
              f"(automated contact suppressed: unverifiable_phone); table voter ids matching no voter "
              f"{join['table_ids_matching_no_voter']:,}, table numbers matching no voter "
              f"{join['table_phones_matching_no_voter']:,}")
    out.print(f"quiet hours: phone and text arms only within {facts['calling_hours']} in each voter's local time "
              f"at {facts['as_of']} (the zone from the number and the address state; several: the window must hold "
              "in each; none: unknown_timezone)")
    for warning in facts["warnings"]:
        err.print(warning_text(warning))
    if facts["stale"]:
        err.print(warning_text(f"{facts['stale']}: automated contact is suppressed (consent_stale)"))
    if errors.get("dated_after_as_of"):
        err.print(warning_text(f"{errors['dated_after_as_of']:,} do-not-contact, revocation or prerecorded-call "
                               "rows are dated after the decision time (a data error; applied anyway)"))
    unbound = errors.get("consent_without_number", 0) + errors.get("line_type_without_number", 0)
    if unbound:
        err.print(warning_text(f"{unbound:,} consent or line-type rows name no number and grant nothing "
                               "(the number is what is consented)"))
    return facts


def no_consent_facts(model) -> dict[str, Any]:
    """What ``--no-consent`` applied (for the provenance)."""
    return {"table": None, "no_consent": True, "dropped_arms": consent_arms(model)}
