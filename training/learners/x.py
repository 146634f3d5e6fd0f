"""X-learner: imputed individual effects, weighted by each row's design propensity."""

from __future__ import annotations

import numpy as np

from training.learners.base import UpliftLearner


class XLearner(UpliftLearner):
    """Künzel et al.'s X-learner with one final model per arm.

    Treated rows impute ``y - mu_0(x)``, control rows ``mu_a(x) - y``. The two
    second-stage models of the original, mixed with g(x) = e(x), are fitted as one
    weighted regression: treated rows weigh (1-e)/e and control rows e/(1-e) (each row's
    own propensity), which gives the control-imputed effects the share e(x) of the fit
    at x, as the original does.
    """

    name = "x"

    def _contrast_targets(self, y, treated, mu_t, mu_c, e):
        target = np.where(treated == 1, y - mu_c, mu_t - y)
        weight = np.where(treated == 1, (1 - e) / e, e / (1 - e))
        return target, weight
