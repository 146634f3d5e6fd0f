"""Run configuration: what a training run reads, models and refuses to use.

A run config is a YAML file validated by :class:`RunConfig`. Unknown keys are an
error (``extra="forbid"``) so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import Field, StrictInt, StrictStr, ValidationError, field_validator, model_validator

from features.calling_hours import STATE_COLUMN, TCPA_CALLING_HOURS, CallingHours
from features.model_specs import (  # the model blocks of a run config; importable from here too
    ContactRateSpec,
    GBMParams,
    TurnoutSpec,
    UpliftSpec,
    _Strict,
)
from features.program_spec import ProgramSpec  # past programs as training data
from features.settings import DEFAULT_PRERECORDED_CAP, DEFAULT_PRERECORDED_WINDOW_DAYS


class ConfigError(ValueError):
    """A run config that cannot be used, with a message that names the key."""


class Channel(StrEnum):
    mail = "mail"
    phone = "phone"
    text = "text"
    canvass = "canvass"


class Delivery(StrEnum):
    """How a contact is delivered; consent rules depend on it."""

    mail = "mail"
    canvass = "canvass"
    live_call = "live_call"
    autodialed_call = "autodialed_call"
    prerecorded_call = "prerecorded_call"
    ai_voice_call = "ai_voice_call"  # an artificial (AI-generated) voice: the rules of prerecorded calls
    text = "text"


DEFAULT_DELIVERY = {
    Channel.mail: Delivery.mail,
    Channel.canvass: Delivery.canvass,
    Channel.phone: Delivery.live_call,
    Channel.text: Delivery.text,
}


class ArmSpec(_Strict):
    """One contact arm of the experiment (the control arm is not listed)."""

    channel: Channel
    delivery: Delivery | None = None
    share: float | None = Field(
        default=None, gt=0, lt=1, description="designed assignment share of all voters"
    )
    cost: float = Field(default=1.0, gt=0, description="cost per attempt")
    value: StrictInt | StrictStr | None = Field(default=None, description="raw code in the arm column, e.g. 1")

    @property
    def resolved_delivery(self) -> Delivery:
        return self.delivery or DEFAULT_DELIVERY[self.channel]


class OutcomeSpec(_Strict):
    column: str
    kind: Literal["turnout", "support"]
    missing: Literal["refuse", "drop"] = Field(default="refuse", description="missing outcomes: refuse, or drop "
                                               "after a differential-attrition check (features/attrition.py)")
    attrition_p_value: float = Field(default=0.01, gt=0, lt=1, description="refuse below this chi-square p")


class TablesSpec(_Strict):
    """Either one flat experiment table, or a voter file + contact log + outcomes."""

    table: Path | None = None
    voter_file: Path | None = None
    contact_log: Path | None = None
    outcomes: Path | None = None

    @model_validator(mode="after")
    def _one_layout(self) -> TablesSpec:
        joined = [self.voter_file, self.contact_log, self.outcomes]
        if self.table is not None and any(p is not None for p in joined):
            raise ValueError("give either data.table or data.voter_file/contact_log/outcomes, not both")
        if self.table is None and not all(p is not None for p in joined):
            raise ValueError(
                "data needs either 'table' or all of 'voter_file', 'contact_log', 'outcomes'"
            )
        return self


class SplitSpec(_Strict):
    holdout_fraction: float = Field(default=0.2, gt=0, lt=0.9)
    folds: int = Field(default=5, ge=2, le=20)
    seed: int = 20060808
    cv_repeats: int | None = Field(
        default=None, ge=1, le=20,
        description="grouped CV repeated over this many fold seeds, so the selection's own noise is "
        "measured (unset: 3 below 20,000 training rows, else 2)",
    )

    def repeats_for(self, train_rows: int) -> int:
        """How many times grouped CV is repeated for ``train_rows`` training rows."""
        if self.cv_repeats is not None:
            return self.cv_repeats
        return 3 if train_rows < 20_000 else 2


class GatesSpec(_Strict):
    qini_bootstrap: int = Field(default=200, ge=20)
    min_rows_per_arm: int = Field(default=100, ge=1)
    srm_p_value: float = Field(default=0.001, gt=0, lt=1)


class BalanceSpec(_Strict):
    """The balance and leakage check before fitting: thresholds beyond which, and beyond chance
    (``p_value``), a feature is refused (features/balance.py)."""

    enabled: bool = True
    max_abs_smd: float = Field(default=0.1, gt=0, description="standardized mean difference, an arm vs control")
    max_auc: float = Field(default=0.55, gt=0.5, lt=1, description="grouped-CV AUC of assigned vs control")
    p_value: float = Field(default=0.001, gt=0, lt=1)
    folds: int = Field(default=5, ge=2, le=20)
    seed: int = 0


class AuditSpec(_Strict):
    budget_fraction: float = Field(default=0.2, gt=0, le=1)
    budgets: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: [0.1, 0.2, 0.3], min_length=1,
        description="shares of voters contacted at which rankings are judged (grouped-CV selection "
        "and the hold-out policy value)",
    )
    band: tuple[float, float] = (0.8, 1.25)
    age_column: str | None = Field(
        default=None, description="the protected column that holds age, whatever it is called (vf_age), banded by "
        "age_bands (unset: a protected column named age)")
    age_bands: list[int] = Field(default_factory=lambda: [30, 45, 65])
    bands: dict[str, list[float]] = Field(
        default_factory=dict, description="cut points of other numeric protected attributes, by column")
    quantile_bands: int = Field(
        default=4, ge=2, le=10, description="a numeric protected attribute with many values and no bands: banded "
        "at this many quantiles, a band too small to judge merged into a neighbour")
    reference: dict[str, str] = Field(
        default_factory=dict, description="reference group per protected attribute (default: the largest group)"
    )
    min_group_size: int = Field(default=100, ge=1, description="smaller groups are reported but not flagged")

    @model_validator(mode="after")
    def _increasing_bands(self) -> AuditSpec:
        for key, cuts in {"age_bands": self.age_bands, **{f"bands.{k}": v for k, v in self.bands.items()}}.items():
            if not cuts or list(cuts) != sorted(set(cuts)):
                raise ValueError(f"audit.{key} must be increasing cut points, got {list(cuts)}")
        if self.age_column in self.bands:
            raise ValueError(f"audit.bands.{self.age_column}: the age column is banded by audit.age_bands")
        return self

    def age_attribute(self, protected: list[str]) -> str | None:
        """The protected column banded by ``age_bands``: ``age_column``, else one named ``age``."""
        return self.age_column or ("age" if "age" in protected else None)


class ConsentSpec(_Strict):
    """Where the consent table is and the rules' settings (see features/consent.py)."""

    table: Path | None = None
    phone_column: str = "phone"
    landline_prerecorded_cap: int = Field(default=DEFAULT_PRERECORDED_CAP, ge=0,
                                          description="prerecorded calls per window, no consent")
    cap_window_days: int = Field(default=DEFAULT_PRERECORDED_WINDOW_DAYS, ge=1)
    as_of: datetime | None = Field(default=None, description="decision time (default: now)")
    time_zone: str | None = Field(default=None, description="IANA time zone of timestamps written without one "
                                  "(default: such timestamps are refused)")
    calling_hours: str = Field(default=TCPA_CALLING_HOURS, description="calling window HH:MM-HH:MM in the voter's "
                               "local time (features/calling_hours.py): it may narrow 08:00-21:00, never widen it")
    state_column: str = Field(default=STATE_COLUMN, description="the voters' address state column (two-letter "
                              "code), with the number where their local time zone comes from")

    @field_validator("calling_hours")
    @classmethod
    def _calling_window(cls, value: str) -> str:
        """Read as ``PERSUADE_CALLING_HOURS`` is (:class:`features.calling_hours.CallingHours`); kept as HH:MM-HH:MM."""
        return CallingHours(value).window


class RunConfig(_Strict):
    """A validated run config. See ``configs/ggl2008.yaml`` for an annotated example."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    model_name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    data: TablesSpec
    id_column: str
    arm_column: str
    control_label: str
    control_value: StrictInt | StrictStr | None = Field(default=None, description="with arms.<arm>.value")
    arms: dict[str, ArmSpec]
    control_share: float | None = Field(default=None, gt=0, lt=1)
    outcome: OutcomeSpec
    turnout: TurnoutSpec = TurnoutSpec()
    contact_rate: ContactRateSpec = ContactRateSpec()
    group_column: str
    features: list[str] = Field(min_length=1)
    derived_features: list[str] = Field(default_factory=list)
    protected: list[str] = Field(default_factory=list)
    pii: list[str] = Field(default_factory=list)
    split: SplitSpec = SplitSpec()
    uplift: UpliftSpec = UpliftSpec()
    gates: GatesSpec = GatesSpec()
    balance: BalanceSpec = BalanceSpec()
    audit: AuditSpec = AuditSpec()
    consent: ConsentSpec = ConsentSpec()
    programs: list[ProgramSpec] = Field(
        default_factory=list, description="past programs whose plans and outcomes train the model too, each row "
        "with its recorded propensities (features/program_spec.py)",
    )
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _labels_are_text(cls, data: Any) -> Any:
        """Arm names and the control label are labels; raw numeric codes go in ``value:``/``control_value:``."""
        arms, label = (data.get("arms"), data.get("control_label")) if isinstance(data, dict) else (None, None)
        numeric = [k for k in arms if not isinstance(k, str)] if isinstance(arms, dict) else []
        if numeric:
            k = numeric[0]
            raise ValueError(f"arms: arm {k!r} is a number (an unquoted YAML key): name each arm by a label and give "
                             f"its raw code as value:, e.g. arms: {{canvass: {{value: {k}, channel: canvass}}}}, with "
                             f"the control's code as control_value: (or quote the key, '{k}', to use it as the label)")
        if label is not None and not isinstance(label, str):
            raise ValueError(f"control_label: {label!r} is a number: give the control a label (e.g. control_label: "
                             f"control) and its raw code as control_value: {label!r}, each arm's as arms.<arm>.value")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if not self.arms:
            raise ValueError("arms: at least one contact arm is needed")
        if self.control_label in self.arms:
            raise ValueError(f"arms: the control label {self.control_label!r} is not an arm")
        shares = [a.share for a in self.arms.values()]
        if any(s is not None for s in shares) or self.control_share is not None:
            if self.control_share is None or any(s is None for s in shares):
                raise ValueError("control_share and every arms.<arm>.share must be given together")
            total = self.control_share + sum(s for s in shares if s is not None)
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"assignment shares must add up to 1, they add up to {total:.6f}")
        if len(set(self.features)) != len(self.features):
            raise ValueError("features: a column is listed twice")
        values = [self.control_value, *(a.value for a in self.arms.values())]
        if any(v is not None for v in values):
            if any(v is None for v in values):
                raise ValueError("control_value and every arms.<arm>.value must be given together")
            if len({str(v) for v in values}) != len(values):
                raise ValueError(f"control_value and arms.<arm>.value: a code is given twice ({values})")
        audited = [*([self.audit.age_column] if self.audit.age_column else []), *self.audit.bands]
        for col in audited:
            if col not in self.protected:
                raise ValueError(f"audit: {col!r} is banded but is not a protected attribute (add it to protected:)")
        names = [p.name for p in self.programs]
        if len(set(names)) != len(names):
            raise ValueError(f"programs: a name is given twice ({', '.join(names)})")
        if self.programs and "control" in {arm_slug(a) for a in self.arms}:
            raise ValueError("programs: an arm named 'control' cannot be told from a plan's control "
                             "(assigned 'control', column p_control): rename the arm")
        return self

    @property
    def has_turnout(self) -> bool:
        """Whether the run fits a turnout model: a turnout outcome, or a support one with ``turnout.column``."""
        return self.outcome.kind == "turnout" or self.turnout.column is not None

    @property
    def turnout_column(self) -> str:
        if self.turnout.column:
            return self.turnout.column
        if self.outcome.kind == "turnout":
            return self.outcome.column
        raise ConfigError("this run has no turnout model: a support outcome needs turnout.column for one")

    @property
    def arm_labels(self) -> list[str]:
        return list(self.arms)

    @property
    def arm_channels(self) -> dict[str, str]:
        """Each arm's channel (``mail``, ``phone``, ...) by label."""
        return {label: arm.channel.value for label, arm in self.arms.items()}

    def arm_codes(self) -> dict[int | str, str] | None:
        """Label of each raw arm code (control included), or None if no codes are configured."""
        if self.control_value is None:
            return None
        return {self.control_value: self.control_label, **{a.value: k for k, a in self.arms.items()}}

    def design_shares(self) -> dict[str, float] | None:
        """Assignment shares by label (control included), or None if not configured."""
        if self.control_share is None:
            return None
        out = {self.control_label: self.control_share}
        out.update({k: float(v.share) for k, v in self.arms.items() if v.share is not None})
        return out

    def with_uplift(self, **overrides: Any) -> RunConfig:
        """This config with keys of its ``uplift:`` block replaced, validated like the YAML."""
        return RunConfig.model_validate({
            **self.model_dump(), "base_dir": self.base_dir,
            "uplift": {**self.uplift.model_dump(exclude_unset=True), **overrides},
        })

    def scaled_to(self, rows_per_label: dict[str, int]) -> RunConfig:
        """This config with every unset ``min_child_samples`` scaled to the data's rows per arm.

        The one place the size rules live, so that a config without an ``uplift:`` or
        ``turnout:`` block trains sensibly on 500 respondents and on 300,000 voters.
        ``m`` is the rows of control plus the smallest arm that one grouped-CV fit sees
        (training share of the split, all folds but one):

        - final models and arm-specific rounds: 5% of ``m``, between 10 and 5,000;
        - outcome models: 2% of the smallest group in a CV fit, between 5 and 100;
        - turnout and contact-rate models: 2% of the control rows in a CV fit, between 10 and 200.

        A value set in the config is kept.
        """
        fit_share = (1 - self.split.holdout_fraction) * (self.split.folds - 1) / self.split.folds
        control = rows_per_label.get(self.control_label, 0) * fit_share
        smallest = min(rows_per_label.get(a, 0) for a in self.arms) * fit_share
        rules = {
            "final": (0.05 * (control + smallest), 10, 5000),
            "nuisance": (0.02 * min(control, smallest), 5, 100),
            "turnout": (0.02 * control, 10, 200),
        }

        def filled(params: GBMParams, rule: str) -> GBMParams:
            if params.min_child_samples is not None:
                return params
            value, low, high = rules[rule]
            return params.model_copy(update={"min_child_samples": int(np.clip(round(value), low, high))})

        uplift = self.uplift.model_copy(update={
            "nuisance": filled(self.uplift.nuisance, "nuisance"),
            "final": filled(self.uplift.final, "final"),
            "arm_params": filled(self.uplift.arm_params, "final"),
        })
        return self.model_copy(update={
            "uplift": uplift,
            "turnout": self.turnout.model_copy(update={"params": filled(self.turnout.params, "turnout")}),
            "contact_rate": self.contact_rate.model_copy(
                update={"params": filled(self.contact_rate.params, "turnout")}),
        })

    def missing_program_files(self) -> list[str]:
        """One message per file named by ``programs:`` that does not exist."""
        return [m for i, p in enumerate(self.programs) for m in p.missing_files(self.resolve, f"programs[{i}]")]

    def resolve(self, path: Path | None) -> Path | None:
        if path is None:
            return None
        return path if path.is_absolute() else (self.base_dir / path)


def arm_slug(label: str) -> str:
    """Column-safe arm name: lower-cased, non-alphanumerics as ``_``."""
    return re.sub(r"[^a-z0-9]", "_", label.lower())


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run config.

    Relative data paths are resolved against the project root (the parent of the
    ``configs/`` folder) when the file lives in one, else against the file's folder.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = path.resolve().parent
    if base.name == "configs":
        base = base.parent
    try:
        config = RunConfig.model_validate({**raw, "base_dir": base})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc
    missing = config.missing_program_files()
    if missing:
        raise ConfigError(f"{path}: " + "; ".join(missing))
    return config


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
