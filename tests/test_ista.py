"""The paper's claim: soft-threshold pruning with a constant λ = Δd/lr is ISTA, so full-batch gradient descent
through the pruner converges to the Lasso solution. Checked against scikit-learn's coordinate-descent
Lasso."""
import numpy as np
import torch
from sklearn.linear_model import Lasso
from torch import nn

import snn_lats


def test_soft_threshold_descent_converges_to_sklearn_lasso():
    rng = np.random.default_rng(0)
    n, p = 80, 30
    X = rng.standard_normal((n, p))
    w_true = np.zeros(p)
    w_true[:6] = [2.0, -1.5, 1.0, -0.7, 0.5, 0.3]
    y = X @ w_true + 0.1 * rng.standard_normal(n)
    lam = 0.05

    lasso = Lasso(alpha=lam, fit_intercept=False, tol=1e-12, max_iter=200_000).fit(X, y)

    model = nn.Linear(p, 1, bias=False).double()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y).unsqueeze(1)
    lipschitz = float(np.linalg.eigvalsh(X.T @ X / n).max())
    # no momentum: plain proximal gradient
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0 / lipschitz)
    pruner = snn_lats.SoftThresholdPruner(model, schedule="lr", l1_coefficient=lam, optimizer=optimizer)
    for _ in range(4000):
        loss = 0.5 * ((model(Xt) - yt) ** 2).mean()  # sklearn's (1/2n)·||y − Xw||²
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        pruner.step()

    w = model.weight.detach().squeeze(0).numpy()
    assert np.array_equal(w != 0, lasso.coef_ != 0), (w, lasso.coef_)
    assert 0 < (lasso.coef_ != 0).sum() < p  # a non-trivial support
    np.testing.assert_allclose(w, lasso.coef_, atol=1e-3)
    assert abs(pruner.l1_coefficient - lam) < 1e-12
