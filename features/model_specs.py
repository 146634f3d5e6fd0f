"""The model blocks of a run config: LightGBM parameters, the uplift, turnout and contact-rate models.

Part of the run config (:class:`features.config.RunConfig`), kept in a module of their
own: what is fitted and how, as opposed to what the data are.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)



class GBMParams(_Strict):
    """LightGBM parameters for one model role."""

    n_estimators: int = Field(default=100, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    num_leaves: int = Field(default=15, ge=2)
    min_child_samples: int | None = Field(
        default=None, ge=1,
        description="minimum rows per leaf; unset: scaled to the rows of the model's data (RunConfig.scaled_to)",
    )
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
    nuisance: GBMParams = GBMParams(n_estimators=150, num_leaves=15)
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
    final: GBMParams = GBMParams(n_estimators=200, learning_rate=0.02, num_leaves=4)
    final_sizes: list[TreeSize] = Field(
        default_factory=list,
        description="candidate sizes of the final models, chosen together with the learner by "
        "grouped-CV Qini on the training groups (empty: only final.n_estimators x final.num_leaves)",
    )
    selection_metric: Literal["policy_value", "qini", "dr_qini"] = Field(
        default="dr_qini",
        description="how grouped CV ranks learners, sizes and each arm's candidates: dr_qini, the "
        "doubly-robust Qini coefficient of the held-out fold (the whole ranking, so the steadiest "
        "choice: on synthetic truths it served more of the true policy value at 10-30% budgets than "
        "policy_value did, docs/BENCHMARKS.md); policy_value, the doubly-robust incremental outcomes "
        "captured by contacting the top audit.budgets of the fold, above random; or qini, the Qini "
        "coefficient of the fold's outcomes",
    )
    references: list[Literal["constant", "turnout_05", "turnout_shape"]] = Field(
        default_factory=lambda: ["constant", "turnout_05", "turnout_shape"],
        description="the simple targetings a campaign already has, compared per arm with the model by "
        "grouped CV (one-standard-error rule towards the simpler): constant, each arm's average effect; "
        "turnout_05, the average effect times the fixed rule 0.5 - |turnout - 0.5| (voters near 50% "
        "turnout first; for arms whose contact log has a reached column, also that rule times each voter's "
        "chance of being reached, turnout_05_reach); turnout_shape, the average effect times a shape of the "
        "turnout score learned from the outcomes",
    )
    reference_size: TreeSize = Field(
        default=TreeSize(n_estimators=100, num_leaves=3),
        description="trees x leaves of the turnout_05 and turnout_shape references (one-feature ensembles); "
        "turnout_05_reach continues the rule's trees by as many again on the features",
    )
    pool_arms: bool = Field(
        default=True,
        description="fit a shared uplift shape on all arms' pseudo-outcomes, then boost "
        "arm-specific trees on top of it (one ensemble per arm)",
    )
    arm_rounds: int = Field(
        default=30, ge=0,
        description="with pool_arms: arm-specific boosting rounds on top of the pooled shape, and on "
        "top of the turnout references (on the voter features): candidates grouped CV compares with the "
        "shapes per arm (0: no such candidates)",
    )
    arm_params: GBMParams = Field(
        default=GBMParams(learning_rate=0.1, num_leaves=2),
        description="parameters of the arm-specific rounds (their learning rate sets how fast "
        "each arm's level moves away from the shared shape)",
    )
    min_propensity: float = Field(
        default=0.1, ge=0, lt=0.5,
        description="past programs' rows (programs:) whose probability of an arm, against control, is below "
        "this or above one minus it are left out of the arm's average effect and CV metrics (limited overlap: "
        "their inverse-propensity weights would make them noise); the DR trees keep them at their overlap "
        "weight e(1-e). Lowered to the experiment's own so that no experiment row is trimmed",
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
        ignored = self._ignored_fields()
        if ignored:
            raise ValueError("; ".join(ignored))
        return self

    def _ignored_fields(self) -> list[str]:
        """One message per field given in the config that another field would make ignored."""
        given, out = self.model_fields_set, []
        sized = sorted({"n_estimators", "num_leaves"} & self.final.model_fields_set)
        if self.final_sizes and sized:
            out.append(f"final.{' and final.'.join(sized)} would be ignored: final_sizes gives the sizes "
                       "(remove them from final, or remove final_sizes)")
        if "n_estimators" in self.arm_params.model_fields_set:
            out.append("arm_params.n_estimators would be ignored: arm_rounds gives the arm-specific rounds")
        arm_specific = self.pool_arms and self.arm_rounds > 0
        for name in ("arm_params", "arm_rounds"):
            if name in given and not arm_specific and not (name == "arm_rounds" and self.arm_rounds == 0):
                out.append(f"{name} would be ignored: arm-specific rounds need pool_arms: true and arm_rounds > 0")
        if "nuisance_rounds" in given and not self.nuisance_from_control:
            out.append("nuisance_rounds would be ignored: it needs nuisance_from_control: true "
                       "(nuisance.n_estimators sets the rounds otherwise)")
        if "reference_size" in given and not {"turnout_05", "turnout_shape"} & set(self.references):
            out.append("reference_size would be ignored: it sizes the turnout_05 and turnout_shape references, "
                       "neither in references")
        return out

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
    params: GBMParams = GBMParams(n_estimators=200, num_leaves=15)
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
    params: GBMParams = GBMParams(n_estimators=100, num_leaves=15)
