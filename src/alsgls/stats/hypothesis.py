"""Hypothesis-test records and the parser of linear restrictions.

Restrictions are given as a ``(q, P)`` matrix (optionally a DataFrame whose
columns are parameter names) with a value vector, or as strings over the
parameter names, e.g. ``"GM_value = CH_value"`` or
``["2*eq1_x1 - eq2_x1 = 0", "eq3_const = 1"]``.

The system tests of :class:`~alsgls.SURResults` (Wald, likelihood
ratio, Breusch-Pagan) are computed here from the fitted results.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats

from ..core.ops import covariance_parameters
from ..core.options import check_real
from ..core.problem import as_float_matrix

__all__ = ["TestResult", "parse_restrictions", "restriction_matrix", "critical_value"]

_NUMBER = re.compile(r"(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
_IDENT = re.compile(r"[^\s+\-*=]+")


@dataclass(frozen=True)
class TestResult:
    """Outcome of a hypothesis test.

    Attributes
    ----------
    name : str
        Name of the test.
    stat : float
        Test statistic.
    pvalue : float
    df : float or tuple
        Degrees of freedom of the reference distribution.
    distribution : str
        ``"chi2"`` or ``"F"``.
    null : str
        The null hypothesis in words.
    """

    name: str
    stat: float
    pvalue: float
    df: Any
    distribution: str
    null: str

    def __str__(self) -> str:
        return (f"{self.name}\nH0: {self.null}\nStatistic: {self.stat:.6g}\n"
                f"P-value: {self.pvalue:.4g}\nDistribution: {self.distribution}({self._df_text})")

    @property
    def _df_text(self) -> str:
        df = self.df if isinstance(self.df, tuple) else (self.df,)
        return ", ".join(f"{d:g}" for d in df)

    __repr__ = __str__


def chi2_result(name: str, stat: float, df: int, null: str) -> TestResult:
    """A chi2 :class:`TestResult` with its upper-tail p-value."""
    return TestResult(name, float(stat), float(stats.chi2.sf(stat, df)), df, "chi2", null)


def critical_value(alpha: Any, df: Any = None) -> Any:
    """Two-sided critical value ``q`` with ``P(|T| > q) = alpha``.

    Parameters
    ----------
    alpha : float
        In (0, 1); checked (errors name ``alpha``).
    df : array_like, optional
        Degrees of freedom of Student t; None: the standard normal.

    Returns
    -------
    float or ndarray
        Shaped like ``df`` (a float for the normal).
    """
    a = check_real("alpha", alpha, upper=1.0)
    return stats.norm.ppf(1 - a / 2) if df is None else stats.t.ppf(1 - a / 2, df)


def _numeric(a: Any, name: str) -> np.ndarray:
    """``a`` as a float array of any shape (the one coercion, errors naming ``name``)."""
    return as_float_matrix(a, name, np.ndim(a))


def _split_top(text: str) -> list[str]:
    """Split on commas/semicolons outside brackets."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch in ",;\n" and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


def _parse_side(text: str, names_by_len: list[str], pos_of: dict, row: np.ndarray,
                sign_side: float, full: str) -> float:
    """Add ``sign_side * (linear terms)`` of ``text`` to ``row``; return its constant."""
    i, n, const = 0, len(text), 0.0
    while True:
        sign = 1.0
        while i < n and (text[i] in "+-" or text[i].isspace()):
            sign = -sign if text[i] == "-" else sign
            i += 1
        if i >= n:
            if sign != 1.0:
                raise ValueError(f"restriction {full!r} ends with an operator")
            return const
        coef = 1.0
        m = _NUMBER.match(text, i)
        if m and not any(text.startswith(nm, i) for nm in names_by_len):
            rest = text[m.end():].lstrip()
            if not rest.startswith("*"):  # a constant term
                const += sign_side * sign * float(m.group(0))
                i = m.end()
                continue
            coef = float(m.group(0))
            i = text.index("*", m.end()) + 1
            while i < n and text[i].isspace():
                i += 1
        name = next((nm for nm in names_by_len if text.startswith(nm, i)), None)
        if name is None:
            m2 = _IDENT.match(text, i)
            bad = m2.group(0) if m2 else text[i:]
            close = difflib.get_close_matches(bad, names_by_len, n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise ValueError(f"restriction {full!r} names unknown parameter {bad!r}{hint}")
        row[pos_of[name]] += sign_side * sign * coef
        i += len(name)


def parse_restrictions(restrictions: str | Sequence[str],
                       names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Turn restriction strings into ``(R, r)`` with ``R beta = r``.

    Parameters
    ----------
    restrictions : str or list of str
        Linear equations in the parameter names, separated by commas or
        semicolons, e.g. ``"eq1_x1 = eq2_x1, eq1_x2 = 0"``.  A side may be a
        sum of terms ``[number *] name`` and numbers.  A string without ``=``
        means ``... = 0``.
    names : list of str
        Parameter names (length P).

    Returns
    -------
    R : ndarray, shape (q, P)
    r : ndarray, shape (q,)
    """
    if isinstance(restrictions, str):
        items = _split_top(restrictions)
    else:
        items = [s for it in restrictions for s in _split_top(str(it))]
    if not items:
        raise ValueError("no restriction given")
    names = list(names)
    pos_of = {nm: i for i, nm in enumerate(names)}
    by_len = sorted(names, key=len, reverse=True)
    R = np.zeros((len(items), len(names)))
    r = np.zeros(len(items))
    for q, text in enumerate(items):
        parts = text.split("=")
        if len(parts) > 2:
            raise ValueError(f"restriction {text!r} has more than one '='")
        lhs, rhs = parts[0], parts[1] if len(parts) == 2 else "0"
        c = _parse_side(lhs, by_len, pos_of, R[q], 1.0, text)
        c += _parse_side(rhs, by_len, pos_of, R[q], -1.0, text)
        r[q] = -c
        if not np.any(R[q]):
            raise ValueError(f"restriction {text!r} involves no parameter")
    return R, r


def restriction_matrix(restrictions: Any, value: Any, names: Sequence[str]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Coerce any supported form to a full-row-rank ``(R, r)``; see ``wald_test``."""
    P = len(names)
    if isinstance(restrictions, str) or (
            isinstance(restrictions, (list, tuple)) and restrictions
            and all(isinstance(s, str) for s in restrictions)):
        if value is not None:
            raise ValueError("value must be None when restrictions are strings "
                             "(write the value into the restriction)")
        R, r = parse_restrictions(restrictions, names)
    else:
        if hasattr(restrictions, "columns"):
            cols = [str(c) for c in restrictions.columns]
            unknown = [c for c in cols if c not in set(names)]
            if unknown:
                raise ValueError(f"restriction matrix names unknown parameters {unknown[:5]}")
            R = np.zeros((restrictions.shape[0], P))
            pos = {nm: i for i, nm in enumerate(names)}
            R[:, [pos[c] for c in cols]] = _numeric(restrictions, "restrictions")
        else:
            R = _numeric(restrictions, "restrictions")
        if R.ndim == 1:
            R = R[None, :]
        if R.ndim != 2 or R.shape[1] != P:
            raise ValueError(f"restriction matrix must be (q, P={P}), got shape {R.shape}")
        r = np.zeros(R.shape[0]) if value is None else np.atleast_1d(_numeric(value, "value"))
        if r.shape != (R.shape[0],):
            raise ValueError(f"value must have {R.shape[0]} entries, got shape {r.shape}")
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(r))):
        raise ValueError("restriction matrix and value must be finite")
    rank = np.linalg.matrix_rank(R)
    if rank < R.shape[0]:
        raise ValueError(
            f"the restriction matrix is singular: its {R.shape[0]} rows have rank {rank}; "
            "remove redundant (linearly dependent) restrictions"
        )
    return R, r


# -- system tests on fitted SURResults ------------------------------------
def wald_test(res: Any, restrictions: Any, value: Any = None) -> TestResult:
    """:meth:`SURResults.wald_test` for the fitted results ``res``."""
    R, r = restriction_matrix(restrictions, value, res.param_names)
    diff = R @ np.asarray(res.params) - r
    V = res.contrast_covariance(R)
    try:
        W = float(diff @ np.linalg.solve(V, diff))
    except np.linalg.LinAlgError as exc:
        raise ValueError("the covariance of the restrictions is singular") from exc
    q = R.shape[0]
    null = "R beta = r" if not isinstance(restrictions, (str, list, tuple)) else str(restrictions)
    if res.debiased:
        df2 = int(np.min(np.asarray(res.df_resid_equation)))
        return TestResult("Wald test (F)", W / q, float(stats.f.sf(W / q, q, df2)),
                          (q, df2), "F", null)
    return chi2_result("Wald test", W, q, null)


def lr_test(res: Any, against: str = "diagonal", **fit_options: Any) -> TestResult:
    """:meth:`SURResults.lr_test` for the fitted results ``res``."""
    k = res.rank
    if k == 0:
        raise ValueError("the fitted model already has a diagonal Sigma (rank 0)")
    if against not in ("diagonal", "rank-1"):
        raise ValueError(f"against must be 'diagonal' or 'rank-1', got {against!r}")
    k0 = 0 if against == "diagonal" else k - 1
    method = res.fit_result.method
    opts = {"tol": res.fit_result.tol, "method": method if method in ("als", "em") else "als"}
    opts.update(fit_options)
    res0 = res.model.with_rank(k0).fit(**opts)
    K = res.problem.K
    df = covariance_parameters(K, k) - covariance_parameters(K, k0)
    stat = max(2.0 * (res.llf - res0.llf), 0.0)
    return chi2_result(f"LR test rank {k} vs {k0}", stat, df,
                       f"Sigma has rank-{k0} factor structure")


def breusch_pagan(res: Any) -> TestResult:
    """:meth:`SURResults.breusch_pagan` for the fitted results ``res``."""
    prob = res.problem
    _, E = prob.ols()                                             # (weighted) OLS residuals
    if prob.w is not None:
        E = E * np.sqrt(prob.w)[None, :]
    if prob.O is not None:
        return _pairwise_breusch_pagan(E, prob.O)
    Z = E / np.linalg.norm(E, axis=1, keepdims=True)              # (K, N), unit rows
    K, N = Z.shape
    total, step = 0.0, max(1, 2**22 // max(K, N))
    if K <= N:
        for s in range(0, K, step):
            total += float(np.sum((Z[s:s + step] @ Z.T) ** 2))
    else:
        for s in range(0, N, step):
            total += float(np.sum((Z[:, s:s + step].T @ Z) ** 2))
    lm = N * (total - K) / 2.0
    return chi2_result("Breusch-Pagan LM test", lm, K * (K - 1) // 2,
                       "Sigma is diagonal (no cross-equation correlation)")


def _pairwise_breusch_pagan(E: np.ndarray, O: np.ndarray) -> TestResult:
    """Breusch-Pagan LM over pairwise-observed rows; E (K, N) zero where missing, O (K, N)."""
    K, N = E.shape
    E2 = E * E
    total, pairs, step = 0.0, 0, max(1, 2**22 // max(K, 1))
    for s in range(0, K, step):
        sl = slice(s, min(s + step, K))
        num = E[sl] @ E.T                        # sum over common rows of e_i e_j
        den = (E2[sl] @ O.T) * (O[sl] @ E2.T)    # sum_{common} e_i^2 * sum_{common} e_j^2
        n = O[sl] @ O.T
        off = np.arange(sl.stop - sl.start)[:, None] + s != np.arange(K)[None, :]
        ok = off & (n > 0) & (den > 0)
        total += float(np.sum(n[ok] * num[ok] ** 2 / den[ok]))
        pairs += int(ok.sum())
    return chi2_result("Breusch-Pagan LM test (pairwise observed rows)", total / 2.0,
                       pairs // 2, "Sigma is diagonal (no cross-equation correlation)")

