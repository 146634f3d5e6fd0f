"""T-learner, distilled: the difference of the two outcome models, as a target."""

from __future__ import annotations

import numpy as np

from training.learners.base import UpliftLearner


class TLearner(UpliftLearner):
    """Regress mu_a(x) - mu_0(x) (cross-fitted) on X, one ensemble per arm.

    The classic T-learner's estimate, distilled into one explainable ensemble.
    """

    name = "t"

    def _contrast_targets(self, y, treated, mu_t, mu_c, e):
        return mu_t - mu_c, np.ones_like(y)
