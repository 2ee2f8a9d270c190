"""Integrated gradients: exact on a linear logit, complete on a small network, and plotted."""

import numpy as np
import pytest

from astroflow.evaluate.saliency import integrated_gradients, plot_saliency, saliency_sample

torch = pytest.importorskip("torch")


def test_exact_on_a_linear_logit():
    rng = np.random.default_rng(0)
    w = torch.from_numpy(rng.normal(0, 0.01, (2, 8, 8)).astype(np.float32))

    def forward(x):
        return torch.sigmoid((x * w).sum(dim=(1, 2, 3)) + 0.3)

    x = rng.normal(0, 5, (3, 2, 8, 8)).astype(np.float32)
    baseline = np.full((2, 8, 8), 0.5, np.float32)
    attr, gap = integrated_gradients(forward, x, baseline=baseline, steps=4)
    # The logit is linear: IG = (x - x0) * w whatever the number of steps.
    np.testing.assert_allclose(attr, (x - baseline) * w.numpy(), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(gap, 0.0, atol=1e-4)


def test_complete_on_a_network():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
        torch.nn.Linear(4 * 12 * 12, 1), torch.nn.Flatten(0))

    def forward(x):
        return torch.sigmoid(net(x / 10.0))

    x = np.random.default_rng(1).normal(0, 10, (5, 3, 12, 12)).astype(np.float32)
    with torch.no_grad():
        p = forward(torch.from_numpy(x)).numpy()
        p0 = forward(torch.zeros(1, 3, 12, 12)).numpy()
    attr, gap = integrated_gradients(forward, x, steps=64, batch_size=50)
    expected = np.log(p / (1 - p)) - np.log(p0 / (1 - p0))
    np.testing.assert_allclose(attr.reshape(5, -1).sum(axis=1), expected, atol=0.02)
    assert np.abs(gap).max() < 0.02
    assert np.abs(gap).max() > 0  # a real integration error, not an identity


def test_sample_and_plot(tmp_path):
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.7, 0.95, 0.05])
    groups = saliency_sample(y, p, 2, np.random.default_rng(0))
    assert set(groups["star"]) <= {0, 1, 2} and len(groups["star"]) == 2
    assert set(groups["galaxy"]) <= {3, 4, 5} and len(groups["galaxy"]) == 2
    assert list(groups["failure"]) == [6, 7]  # |y - p| 0.95 then 0.95: stable order
    order = np.concatenate(list(groups.values()))
    rng = np.random.default_rng(2)
    cutouts = rng.normal(0, 1, (len(order), 3, 16, 16)).astype(np.float32)
    attributions = rng.normal(0, 1, cutouts.shape).astype(np.float32)
    path = plot_saliency(cutouts, attributions, groups, y[order], p[order],
                         [f"obj{i}" for i in order], ["g", "r", "i"], tmp_path / "saliency.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
