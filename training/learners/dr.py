"""DR-learner: regress the doubly-robust (AIPW) score on X."""

from __future__ import annotations

import numpy as np

from training.learners.base import UpliftLearner


def aipw_score(
    y: np.ndarray, treated: np.ndarray, mu_t: np.ndarray, mu_c: np.ndarray, e: np.ndarray | float
) -> np.ndarray:
    """The doubly-robust (AIPW) score of each row of one treated-vs-control contrast.

    ``mu_t - mu_c + T (y - mu_t) / e - (1 - T) (y - mu_c) / (1 - e)``: given outcome models
    fitted without the row and the true propensity ``e`` of each row (a randomized design's
    share, or a program's recorded probability), its expectation given x is the CATE at x,
    whatever the outcome models' errors.
    """
    return mu_t - mu_c + treated * (y - mu_t) / e - (1 - treated) * (y - mu_c) / (1 - e)


class DRLearner(UpliftLearner):
    """Kennedy's DR-learner with each row's design propensity.

    Target: mu_a - mu_0 + T (y - mu_a) / e - (1 - T) (y - mu_0) / (1 - e), which is
    unbiased for the CATE when either the outcome models or the propensity is right;
    in a randomized experiment the propensity is known, so it always is.
    """

    name = "dr"

    def _precision(self, e):
        """Overlap weights ``e (1 - e)``, scaled to mean one, where rows' propensities differ.

        The AIPW score's variance given x grows as ``1 / (e (1 - e))``: a row a past
        program gave the arm with probability 0.9 or 0.02 is a far noisier target than an
        experiment row at 0.3. Weighting the trees' squared errors by ``e (1 - e)`` (the
        overlap weights of Li, Morgan and Zaslavsky, 2018; the R-learner's weighting) is
        inverse-variance weighting: the CATE at x is unchanged (the weight depends on x
        only), its noise is not. So the trees keep the rows with limited overlap, at their
        small weight, and only the arm's level, the plain mean of the scores, leaves them
        out (``Design.min_propensity``). Where every row has one propensity (a randomized
        experiment) the weights are all exactly one.
        """
        v = e * (1 - e)
        if v.size == 0 or np.all(v == v[0]):
            return np.ones_like(e)
        return v / v.mean()

    def _contrast_targets(self, y, treated, mu_t, mu_c, e):
        return aipw_score(y, treated, mu_t, mu_c, e), np.ones_like(y)
