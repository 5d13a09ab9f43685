"""Conditional prediction on real data shipped with scikit-learn (no download).

Data: ``sklearn.datasets.load_diabetes`` (N = 442): regressors age, sex, BMI
and blood pressure; outputs the six blood-serum measurements s1..s6 (K = 6),
which are strongly correlated (cholesterol fractions, triglycerides, glucose).
And ``load_linnerud`` (N = 20): three exercises -> weight, waist, pulse (K = 3).

For each test row and each output j, ALSGLS predicts y_j (a) from X alone and
(b) from X plus the row's *other* outputs (``predict(X, Y_partial)`` with only
y_j set to NaN).  Prints the 5-fold cross-validated R^2 of both.

    python benchmarks/conditional_prediction.py
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.datasets import load_diabetes, load_linnerud
from sklearn.model_selection import KFold

from alsgls.learn.estimator import ALSGLS
from alsgls.exceptions import HeywoodWarning

# s1, s2 and s4 (total/LDL cholesterol and their ratio to HDL) are nearly
# collinear, so rank-3 fits put some D_j at the floor: expected here.
warnings.simplefilter("ignore", HeywoodWarning)


def leave_one_output_out(est, X, Y):
    """Predictions of each output given X and all the other outputs."""
    out = np.empty_like(Y)
    for j in range(Y.shape[1]):
        Yp = Y.copy()
        Yp[:, j] = np.nan
        out[:, j] = est.predict(X, Yp)[:, j]
    return out


def evaluate(X, Y, rank, n_splits=5, seed=0):
    Y = (Y - Y.mean(0)) / Y.std(0)
    pu, pc = np.empty_like(Y), np.empty_like(Y)
    ranks = []
    for tr, te in KFold(n_splits, shuffle=True, random_state=seed).split(X):
        est = ALSGLS(rank=rank).fit(X[tr], Y[tr])
        ranks.append(est.rank_)
        pu[te] = est.predict(X[te])
        pc[te] = leave_one_output_out(est, X[te], Y[te])
    r2 = lambda P: 1 - ((Y - P) ** 2).sum(0) / ((Y - Y.mean(0)) ** 2).sum(0)  # noqa: E731
    return r2(pu), r2(pc), ranks


def main():
    d = load_diabetes()
    X, Y = d.data[:, :4], d.data[:, 4:]
    for rank in ["auto", 1, 2, 3]:
        u, c, ranks = evaluate(X, Y, rank)
        print(f"diabetes  rank={rank!s:>4} (fitted {ranks}): R2 from X only "
              f"{np.round(u, 2)} mean {u.mean():.3f}; given other outputs "
              f"{np.round(c, 2)} mean {c.mean():.3f}")
    ln = load_linnerud()
    u, c, ranks = evaluate(ln.data, ln.target, "auto", n_splits=5)
    print(f"linnerud  rank=auto (fitted {ranks}): R2 from X only {np.round(u, 2)}; "
          f"given other outputs {np.round(c, 2)}")


if __name__ == "__main__":
    main()
