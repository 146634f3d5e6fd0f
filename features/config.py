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

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArmSpec(_Strict):
    """One contact arm of the experiment (the control arm is not listed)."""

    channel: Channel
    delivery: Delivery | None = None
    share: float | None = Field(
        default=None, gt=0, lt=1, description="designed assignment share of all voters"
    )
    cost: float = Field(default=1.0, gt=0, description="cost per attempt")

    @property
    def resolved_delivery(self) -> Delivery:
        return self.delivery or DEFAULT_DELIVERY[self.channel]


class OutcomeSpec(_Strict):
    column: str
    kind: Literal["turnout", "support"]


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


class GBMParams(_Strict):
    """LightGBM parameters for one model role."""

    n_estimators: int = Field(default=100, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    num_leaves: int = Field(default=15, ge=2)
    min_child_samples: int = Field(default=100, ge=1)
    max_depth: int = -1
    reg_lambda: float = Field(default=0.0, ge=0)
    subsample: float = Field(default=1.0, gt=0, le=1)
    colsample_bytree: float = Field(default=1.0, gt=0, le=1)


class TreeSize(_Strict):
    """One candidate size of the final uplift ensembles: trees x leaves per tree."""

    n_estimators: int = Field(ge=1)
    num_leaves: int = Field(ge=2)

    @property
    def label(self) -> str:
        return f"{self.n_estimators}x{self.num_leaves}"


class UpliftSpec(_Strict):
    learners: list[Literal["t", "x", "dr"]] = Field(default_factory=lambda: ["t", "x", "dr"])
    nuisance: GBMParams = GBMParams(n_estimators=150, num_leaves=15, min_child_samples=100)
    nuisance_from_control: bool = Field(
        default=True,
        description="boost each treated group's outcome model from the control model (its "
        "prediction is their start and a feature), so they learn only what contact changes",
    )
    nuisance_rounds: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [10, 20, 30, 50, 80, 150], min_length=1,
        description="with nuisance_from_control: candidate round counts of the treated groups' "
        "outcome models, chosen per group by out-of-fold loss (nuisance.n_estimators is for control)",
    )
    nuisance_treated_leaves: list[Annotated[int, Field(ge=2)]] = Field(
        default_factory=list,
        description="with nuisance_from_control: candidate leaves per tree of the treated groups' "
        "outcome models (empty: nuisance.num_leaves). With more than one, the outcome models are "
        "cross-fitted at each and grouped CV (selection_metric) chooses the shape with the learner "
        "and size; the first listed is the reference the shapes' DR-Qini is judged against",
    )
    final: GBMParams = GBMParams(
        n_estimators=200, learning_rate=0.02, num_leaves=4, min_child_samples=5000
    )
    final_sizes: list[TreeSize] = Field(
        default_factory=list,
        description="candidate sizes of the final models, chosen together with the learner by "
        "grouped-CV Qini on the training groups (empty: only final.n_estimators x final.num_leaves)",
    )
    selection_metric: Literal["qini", "dr_qini"] = Field(
        default="qini",
        description="how grouped CV ranks learners and sizes: the Qini coefficient of the held-out "
        "fold's outcomes, or its doubly-robust estimate (AIPW scores from outcome models that never "
        "saw the fold)",
    )
    pool_arms: bool = Field(
        default=True,
        description="fit a shared uplift shape on all arms' pseudo-outcomes, then boost "
        "arm-specific trees on top of it (one ensemble per arm)",
    )
    arm_rounds: int = Field(default=30, ge=0, description="arm-specific boosting rounds")
    arm_params: GBMParams = Field(
        default=GBMParams(learning_rate=0.1, num_leaves=2, min_child_samples=5000),
        description="parameters of the arm-specific rounds (their learning rate sets how fast "
        "each arm's level moves away from the shared shape)",
    )
    turnout_score_feature: bool | Literal["select"] = Field(
        default=False,
        description="give the final uplift models the (cross-fitted) turnout probability as a "
        "feature: true, false, or select (both are candidates, chosen by grouped CV with the "
        "learner and size)",
    )

    @model_validator(mode="after")
    def _check_candidates(self) -> UpliftSpec:
        labels = [s.label for s in self.final_sizes]
        if len(set(labels)) != len(labels):
            raise ValueError(f"final_sizes: a size is listed twice ({', '.join(labels)})")
        leaves = self.nuisance_treated_leaves
        if len(set(leaves)) != len(leaves):
            raise ValueError(f"nuisance_treated_leaves: a value is listed twice ({', '.join(map(str, leaves))})")
        if leaves and not self.nuisance_from_control:
            raise ValueError("nuisance_treated_leaves needs nuisance_from_control: true (it shapes the models "
                             "boosted from control)")
        return self

    def treated_leaves_options(self) -> list[int]:
        """Leaves per tree of the treated groups' outcome models: the shapes grouped CV compares."""
        return list(self.nuisance_treated_leaves) or [self.nuisance.num_leaves]

    def turnout_score_options(self) -> list[bool]:
        """Whether the final models see the turnout score: the candidates grouped CV compares."""
        return [False, True] if self.turnout_score_feature == "select" else [self.turnout_score_feature]

    def final_candidates(self) -> dict[str, GBMParams]:
        """The final models' parameters for each candidate size, by size label."""
        sizes = self.final_sizes or [
            TreeSize(n_estimators=self.final.n_estimators, num_leaves=self.final.num_leaves)
        ]
        return {s.label: self.final.model_copy(update=s.model_dump()) for s in sizes}


class TurnoutSpec(_Strict):
    column: str | None = Field(
        default=None, description="0/1 turnout column; defaults to the outcome if it is turnout"
    )
    params: GBMParams = GBMParams(n_estimators=200, num_leaves=15, min_child_samples=200)
    calibration_tolerance: float = Field(
        default=0.02, gt=0, description="max |predicted-observed| per decile before recalibrating"
    )


class ContactRateSpec(_Strict):
    """The contact log's attempt/contact flags: the contact-rate model P(reached | attempted).

    Fitted per channel when the experiment frame has ``reached_column`` (phone and
    canvass logs usually do); a channel whose attempts were all reached needs none.
    """

    attempted_column: str = "attempted"
    reached_column: str = "reached"
    params: GBMParams = GBMParams(n_estimators=100, num_leaves=15, min_child_samples=200)


class GatesSpec(_Strict):
    qini_bootstrap: int = Field(default=200, ge=20)
    min_rows_per_arm: int = Field(default=200, ge=1)
    srm_p_value: float = Field(default=0.001, gt=0, lt=1)


class AuditSpec(_Strict):
    budget_fraction: float = Field(default=0.2, gt=0, le=1)
    band: tuple[float, float] = (0.8, 1.25)
    age_bands: list[int] = Field(default_factory=lambda: [30, 45, 65])
    reference: dict[str, str] = Field(
        default_factory=dict, description="reference group per protected attribute (default: the largest group)"
    )
    min_group_size: int = Field(default=100, ge=1, description="smaller groups are reported but not flagged")


class ConsentSpec(_Strict):
    """Where the consent table is and the rules' settings (see features/consent.py)."""

    table: Path | None = None
    phone_column: str = "phone"
    landline_prerecorded_cap: int = Field(default=3, ge=0, description="prerecorded calls per window, no consent")
    cap_window_days: int = Field(default=30, ge=1)
    as_of: datetime | None = Field(default=None, description="decision time (default: now)")


class RunConfig(_Strict):
    """A validated run config. See ``configs/ggl2008.yaml`` for an annotated example."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    model_name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    data: TablesSpec
    id_column: str
    arm_column: str
    control_label: str
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
    audit: AuditSpec = AuditSpec()
    consent: ConsentSpec = ConsentSpec()
    base_dir: Path = Field(default=Path("."), exclude=True)

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
        return self

    @property
    def turnout_column(self) -> str:
        if self.turnout.column:
            return self.turnout.column
        if self.outcome.kind == "turnout":
            return self.outcome.column
        raise ConfigError("turnout.column is required when the outcome kind is 'support'")

    @property
    def arm_labels(self) -> list[str]:
        return list(self.arms)

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
            **self.model_dump(), "base_dir": self.base_dir, "uplift": {**self.uplift.model_dump(), **overrides},
        })

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
        return RunConfig.model_validate({**raw, "base_dir": base})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
