"""Multi-arm uplift meta-learners on LightGBM, sharing one base class."""

from training.learners.base import ANY, Design, UpliftLearner
from training.learners.dr import DRLearner
from training.learners.nuisance import CrossFitNuisance
from training.learners.t import TLearner
from training.learners.x import XLearner

LEARNERS: dict[str, type[UpliftLearner]] = {"t": TLearner, "x": XLearner, "dr": DRLearner}

__all__ = ["ANY", "LEARNERS", "CrossFitNuisance", "DRLearner", "Design", "TLearner", "UpliftLearner", "XLearner"]
