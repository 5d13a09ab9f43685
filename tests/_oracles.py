"""Dense textbook references, independent of the package's matrix-free code.

Everything here builds the full K x K Sigma and the full P x P GLS system with
plain numpy, as a textbook would (Zellner 1962; Greene, Econometric Analysis,
ch. 10), so that it shares no code path with alsgls.core.ops.
"""

from __future__ import annotations

import numpy as np


def block_diag_design(Xs):
    """The NK x P block-diagonal design, vec(Y) stacked equation by equation."""
    N = Xs[0].shape[0]
    P = sum(x.shape[1] for x in Xs)
    Z = np.zeros((N * len(Xs), P))
    c = 0
    for j, x in enumerate(Xs):
        Z[j * N:(j + 1) * N, c:c + x.shape[1]] = x
        c += x.shape[1]
    return Z


def dense_nll_per_row(R, Sigma):
    """Gaussian NLL per row: 1/2 [K log 2pi + log|Sigma| + tr(Sigma^-1 R'R)/N]."""
    N, K = R.shape
    sign, logdet = np.linalg.slogdet(Sigma)
    assert sign > 0
    quad = np.trace(np.linalg.solve(Sigma, R.T @ R))
    return 0.5 * (K * np.log(2 * np.pi) + logdet + quad / N)


def dense_gls(Xs, Y, Sigma):
    """Closed-form GLS beta = (Z'(Sigma^-1 (x) I)Z)^-1 Z'(Sigma^-1 (x) I) vec(Y)."""
    N = Y.shape[0]
    Z = block_diag_design(Xs)
    Om_inv = np.kron(np.linalg.inv(Sigma), np.eye(N))
    y = Y.T.ravel()
    return np.linalg.solve(Z.T @ Om_inv @ Z, Z.T @ Om_inv @ y)


def ols(Xs, Y):
    return np.concatenate([np.linalg.lstsq(x, Y[:, j], rcond=None)[0] for j, x in enumerate(Xs)])


def residuals(Xs, Y, beta):
    R = np.empty_like(Y, dtype=float)
    c = 0
    for j, x in enumerate(Xs):
        R[:, j] = Y[:, j] - x @ beta[c:c + x.shape[1]]
        c += x.shape[1]
    return R


def iterated_fgls(Xs, Y, tol=1e-14, max_iter=10_000):
    """Unrestricted SUR MLE by iterated FGLS (Sigma = R'R/N, MLE divisor)."""
    N = Y.shape[0]
    beta = ols(Xs, Y)
    for _ in range(max_iter):
        R = residuals(Xs, Y, beta)
        Sigma = R.T @ R / N
        new = dense_gls(Xs, Y, Sigma)
        if np.max(np.abs(new - beta)) <= tol * max(1.0, np.max(np.abs(beta))):
            beta = new
            break
        beta = new
    R = residuals(Xs, Y, beta)
    return beta, R.T @ R / N
