"""Temperature scaling recovers a known over-confidence and leaves the ranking alone."""

import numpy as np
import pytest

from astroflow.evaluate.calibration import apply_temperature, fit_temperature, logit
from astroflow.evaluate.metrics import auc, cal, logloss


def _overconfident(rng, n, temperature):
    z = rng.normal(0, 2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return y, 1 / (1 + np.exp(-temperature * z))  # logits `temperature` times too large


def test_recovers_the_temperature():
    rng = np.random.default_rng(0)
    y, p = _overconfident(rng, 20000, 3.0)
    t = fit_temperature(p, y)
    assert t == pytest.approx(3.0, rel=0.05)
    calibrated = apply_temperature(p, t)
    assert auc(y, calibrated) == pytest.approx(auc(y, p))  # monotone: same ranking
    assert cal(y, calibrated) < 0.3 * cal(y, p)
    assert logloss(y, calibrated) < logloss(y, p)


def test_identity_and_shapes():
    p = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(apply_temperature(p, 1.0), p)
    np.testing.assert_allclose(logit(p), [-np.log(9), 0.0, np.log(9)])
    # T = 2 halves the logit: p = 0.9 (odds 9) becomes odds 3, p = 0.75.
    assert apply_temperature(np.array([0.9]), 2.0)[0] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="both classes"):
        fit_temperature(np.array([0.2, 0.7]), np.array([1, 1]))
    with pytest.raises(ValueError, match="one length"):
        fit_temperature(np.array([0.2, 0.7]), np.array([1, 0, 1]))
