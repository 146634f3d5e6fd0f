"""Multi-arm uplift meta-learners on LightGBM, sharing one base class."""

from training.learners.base import ANY, Design, UpliftLearner
from training.learners.dr import DRLearner
from training.learners.nuisance import CrossFitNuisance
from training.learners.t import TLearner
from training.learners.turnout_rule import TurnoutMidReachRule, TurnoutMidRule
from training.learners.x import XLearner

LEARNERS: dict[str, type[UpliftLearner]] = {"t": TLearner, "x": XLearner, "dr": DRLearner}
# fixed rules that the reference candidates serve through the same machinery (not in ``uplift.learners``)
RULES: dict[str, type[UpliftLearner]] = {TurnoutMidRule.name: TurnoutMidRule}

__all__ = ["ANY", "LEARNERS", "RULES", "CrossFitNuisance", "DRLearner", "Design", "TLearner", "TurnoutMidReachRule",
           "TurnoutMidRule", "UpliftLearner", "XLearner"]
