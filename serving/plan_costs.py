"""What a program costs and what its channels can take: ``configs/costs.yaml``.

:class:`ProgramCosts` holds the cost of one attempt per arm (default: the model's run
config) and, per channel, the attempts available (capacity) and the contact rate the
program expects; :func:`load_costs` reads and validates the YAML file. :class:`PlanError`
is the error of every planning step: it names the request field that is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from features.config import Channel, ConfigError, _describe
from serving.bundle import ScoringModel


class PlanError(ValueError):
    """A plan request that cannot be planned.

    Parameters
    ----------
    field : str
        What is wrong, as a request path (``costs.arms``, ``budget``, ``voters``).
    message : str
        Why; ``str(error)`` is ``"<field>: <message>"``.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


# "> 0" as OpenAPI 3.0 (BentoML's spec) spells it: minimum plus a boolean exclusiveMinimum
PositiveNumber = Annotated[float, Field(gt=0, allow_inf_nan=False),
                           WithJsonSchema({"type": "number", "minimum": 0, "exclusiveMinimum": True})]
Share = Annotated[float, Field(gt=0, le=1),
                  WithJsonSchema({"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1})]


class _CostsBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArmCost(_CostsBase):
    cost: PositiveNumber = Field(description="cost of one attempt with this arm, in budget units")


class ChannelLimits(_CostsBase):
    capacity: int | None = Field(default=None, ge=0, description="attempts available on this channel")
    contact_rate: Share | None = Field(
        default=None,
        description="expected share of attempts that reach the voter in this program (default: as in the "
                    "experiment); needs the model's contact-rate model for the channel",
    )


class ProgramCosts(_CostsBase):
    """Costs per attempt by arm and limits by channel (``configs/costs.yaml``).

    An arm not listed keeps the cost of the model's run config; a channel not listed
    has no capacity limit and the experiment's contact rate.
    """

    arms: dict[str, ArmCost] = Field(default_factory=dict)
    channels: dict[Channel, ChannelLimits] = Field(default_factory=dict)

    def arm_costs(self, model: ScoringModel) -> np.ndarray:
        """Cost per attempt of each arm of ``model``, in the model's arm order."""
        labels = [a.label for a in model.arms]
        unknown = sorted(set(self.arms) - set(labels))
        if unknown:
            raise PlanError("costs.arms", f"unknown arm(s) {unknown}; the model's arms are {labels}")
        return np.array([self.arms[a.label].cost if a.label in self.arms else a.cost for a in model.arms])

    def capacities(self, model: ScoringModel) -> dict[str, int | None]:
        """Attempts available per channel of the model (None: no limit), for the solver."""
        return {ch: lim.capacity for ch, lim in self.limits(model).items()}

    def limits(self, model: ScoringModel) -> dict[str, ChannelLimits]:
        """Limits of the model's channels (a channel the model does not use is an error)."""
        used = {a.channel for a in model.arms}
        unknown = sorted(c.value for c in self.channels if c.value not in used)
        if unknown:
            raise PlanError("costs.channels", f"the model has no arm on channel(s) {unknown}; "
                                              f"its channels are {sorted(used)}")
        return {c.value: v for c, v in self.channels.items()}


def load_costs(path: str | Path) -> ProgramCosts:
    """Read and validate a costs YAML file; errors name the key."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"costs file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return ProgramCosts.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc
