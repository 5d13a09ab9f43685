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
from ..core.restriction import check_rows

__all__ = ["TestResult", "parse_restrictions", "restriction_matrix", "critical_value"]

#: A number: ``2``, ``0.5``, ``.5``, ``1e-3`` (signs are operators).
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
#: A run of characters without white space or operators (a name or a number).
_WORD = re.compile(r"[^\s+\-*=]+")
_SPECIAL = re.compile(r"[\s+\-*]")


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


class _Names:
    """Parameter names for the parser: positions, and the names that contain
    white space or an operator (matched literally, longest first)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.pos = {nm: i for i, nm in enumerate(self.names)}
        self.special = sorted((nm for nm in self.names if _SPECIAL.search(nm)),
                              key=len, reverse=True)

    def at(self, text: str, i: int) -> str | None:
        """The parameter name starting at ``text[i]`` and ending at a token
        boundary (end, white space or an operator), or None."""
        for nm in self.special:
            if text.startswith(nm, i) and _boundary(text, i + len(nm)):
                return nm
        m = _WORD.match(text, i)
        return m.group(0) if m and m.group(0) in self.pos else None

    def unknown(self, bad: str, full: str) -> ValueError:
        """The error for a word that is not a parameter: glued names are shown
        apart, anything else gets the closest names (difflib)."""
        for cut in range(len(bad) - 1, 0, -1):
            a, b = bad[:cut], bad[cut:]
            if a in self.pos and b in self.pos:
                return ValueError(
                    f"restriction {full!r}: {bad!r} is not a parameter; it reads as "
                    f"{a!r} and {b!r} glued together: join terms with an operator, "
                    f"e.g. '{a} + {b}' or '{a} - {b}'")
        close = difflib.get_close_matches(bad, self.names, n=3)
        hint = (f"; did you mean {' or '.join(repr(c) for c in close)}?" if close
                else f"; parameters are named like {self.names[0]!r}" if self.names else "")
        return ValueError(f"restriction {full!r} names unknown parameter {bad!r}{hint}")


def _boundary(text: str, j: int) -> bool:
    """A token may end before ``text[j]``: the end, white space or an operator."""
    return j >= len(text) or text[j].isspace() or text[j] in "+-*"


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _term(text: str, i: int, names: _Names, full: str) -> tuple[float, str | None, int, str]:
    """One term at ``text[i]``: ``(coefficient, name or None for a constant,
    end, its text)``.  Accepted: ``name``, ``number``, ``number*name``,
    ``name*number`` (white space allowed around ``*``)."""
    name = names.at(text, i)
    if name is not None:
        j = _skip(text, i + len(name))
        if j < len(text) and text[j] == "*":
            k = _skip(text, j + 1)
            if k >= len(text):
                raise ValueError(f"restriction {full!r} ends with an operator")
            m = _NUMBER.match(text, k)
            if not m or not _boundary(text, m.end()):
                what = _WORD.match(text, k)
                raise ValueError(
                    f"restriction {full!r}: {name!r} is multiplied by "
                    f"{what.group(0) if what else text[k:]!r}; restrictions are linear: "
                    "a term is a parameter times a number, e.g. '2*name'")
            return float(m.group(0)), name, m.end(), text[i:m.end()]
        return 1.0, name, i + len(name), name
    m = _NUMBER.match(text, i)
    if m is None:
        word = _WORD.match(text, i)
        raise names.unknown(word.group(0) if word else text[i:], full)
    if not _boundary(text, m.end()):            # a number glued to a word: '2eq0_x1'
        rest = _WORD.match(text, m.end())
        word = m.group(0) + (rest.group(0) if rest else "")
        if rest and rest.group(0) in names.pos:
            raise ValueError(f"restriction {full!r}: {word!r} is not a parameter; write the "
                             f"product with '*': '{m.group(0)}*{rest.group(0)}'")
        raise names.unknown(word, full)
    j = _skip(text, m.end())
    if j < len(text) and text[j] == "*":
        k = _skip(text, j + 1)
        name = names.at(text, k)
        if name is None:
            word = _WORD.match(text, k)
            if word is None:
                raise ValueError(f"restriction {full!r} ends with an operator")
            raise names.unknown(word.group(0), full)
        return float(m.group(0)), name, k + len(name), text[i:k + len(name)]
    return float(m.group(0)), None, m.end(), m.group(0)


def _parse_side(text: str, names: _Names, row: np.ndarray, sign_side: float,
                full: str) -> float:
    """Add ``sign_side * (linear terms)`` of ``text`` to ``row``; return its constant.

    A side is a sum of terms joined by ``+`` / ``-``; two terms without an
    operator between them (``2 eq0_x1``, ``eq0_x1 eq1_x1``) are refused with
    the accepted spelling.
    """
    i, n, const, prev = 0, len(text), 0.0, None
    while True:
        sign, saw_op = 1.0, False
        while i < n and (text[i] in "+-" or text[i].isspace()):
            saw_op |= text[i] in "+-"
            sign = -sign if text[i] == "-" else sign
            i += 1
        if i >= n:
            if saw_op or prev is None and not text.strip():
                raise ValueError(f"restriction {full!r} ends with an operator" if saw_op
                                 else f"restriction {full!r} has an empty side")
            return const
        if text[i] == "*":
            raise ValueError(f"restriction {full!r}: '*' needs a number and a parameter "
                             "on either side, e.g. '2*name'")
        coef, name, j, term = _term(text, i, names, full)
        if prev is not None and not saw_op:
            p_text, p_name = prev
            if p_name is None and name is not None and coef == 1.0:
                raise ValueError(f"restriction {full!r}: {p_text + ' ' + term!r} is an "
                                 f"implicit product; write '{p_text}*{term}'")
            raise ValueError(f"restriction {full!r}: no operator between {p_text!r} and "
                             f"{term!r}; write '{p_text} + {term}' or '{p_text} - {term}'")
        if name is None:
            const += sign_side * sign * coef
        else:
            row[names.pos[name]] += sign_side * sign * coef
        prev, i = (term, name), j


def parse_restrictions(restrictions: str | Sequence[str],
                       names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Turn restriction strings into ``(R, r)`` with ``R beta = r``.

    Parameters
    ----------
    restrictions : str or list of str
        Linear equations in the parameter names, separated by commas or
        semicolons, e.g. ``"eq1_x1 = eq2_x1, eq1_x2 = 0"``.  A side is a sum
        of terms joined by ``+`` / ``-``; a term is ``name``, ``number``,
        ``number*name`` or ``name*number`` (``2*eq1_x1``, ``0.5 * eq1_x1``,
        ``1e-3*eq1_x1``).  A string without ``=`` means ``... = 0``.
    names : list of str
        Parameter names (length P).  A name is matched whole: it must end at
        white space, an operator or the end of the side.

    Returns
    -------
    R : ndarray, shape (q, P)
    r : ndarray, shape (q,)

    Raises
    ------
    ValueError
        An unknown name (with the closest names), an implicit product
        (``2 eq1_x1``, ``2eq1_x1``: write ``2*eq1_x1``), names glued
        together or two terms without an operator, a non-linear product, a
        dangling operator, an empty side, more than one ``=``, or a
        restriction without a parameter.

    Examples
    --------
    >>> R, r = parse_restrictions("2*a_x - b_x = 1", ["a_x", "b_x"])
    >>> R.tolist(), r.tolist()
    ([[2.0, -1.0]], [1.0])
    >>> parse_restrictions("a_x = b_x2", ["a_x", "b_x"])
    Traceback (most recent call last):
    ...
    ValueError: restriction 'a_x = b_x2' names unknown parameter 'b_x2'; did you mean 'b_x'?
    >>> parse_restrictions("2 a_x = 1", ["a_x", "b_x"])
    Traceback (most recent call last):
    ...
    ValueError: restriction '2 a_x = 1': '2 a_x' is an implicit product; write '2*a_x'
    """
    if isinstance(restrictions, str):
        items = _split_top(restrictions)
    else:
        items = [s for it in restrictions for s in _split_top(str(it))]
    if not items:
        raise ValueError("no restriction given")
    known = _Names(names)
    R = np.zeros((len(items), len(known.names)))
    r = np.zeros(len(items))
    for q, text in enumerate(items):
        parts = text.split("=")
        if len(parts) > 2:
            raise ValueError(f"restriction {text!r} has more than one '='")
        lhs, rhs = parts[0], parts[1] if len(parts) == 2 else "0"
        c = _parse_side(lhs, known, R[q], 1.0, text)
        c += _parse_side(rhs, known, R[q], -1.0, text)
        r[q] = 0.0 - c
        if not np.any(R[q]):
            raise ValueError(f"restriction {text!r} involves no parameter")
    return R, r


def restriction_matrix(restrictions: Any, value: Any, names: Sequence[str]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Coerce any supported form to a full-row-rank, consistent ``(R, r)``; see
    ``wald_test``.  Dependent rows are refused with the rows named
    (:func:`alsgls.core.restriction.check_rows`)."""
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
    check_rows(R, r, names)             # redundant or inconsistent rows, named
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


def lr_test(res: Any, against: Any = "diagonal", **fit_options: Any) -> TestResult:
    """:meth:`SURResults.lr_test` for the fitted results ``res``: against a
    refit at a lower rank (``"diagonal"``, ``"rank-1"``), or against another
    fitted :class:`SURResults` of the same data (nested fits)."""
    if not isinstance(against, str):
        if fit_options:
            raise TypeError(f"lr_test(other results) refits nothing; unexpected options "
                            f"{sorted(fit_options)}")
        return _lr_nested(res, against)
    k = res.rank
    if k == 0:
        raise ValueError("the fitted model already has a diagonal Sigma (rank 0)")
    if against not in ("diagonal", "rank-1"):
        raise ValueError(f"against must be 'diagonal', 'rank-1' or fitted results of the "
                         f"same data, got {against!r}")
    _check_ml(res)
    k0 = 0 if against == "diagonal" else k - 1
    solver = res.fit_result.method
    opts = {"tol": res.fit_result.tol, "solver": solver if solver in ("als", "em") else "als"}
    opts.update(fit_options)
    res0 = res.model.with_rank(k0).fit(**opts)
    K = res.problem.K
    df = covariance_parameters(K, k) - covariance_parameters(K, k0)
    stat = max(2.0 * (res.llf - res0.llf), 0.0)
    return chi2_result(f"LR test rank {k} vs {k0}", stat, df,
                       f"Sigma has rank-{k0} factor structure")


def _check_ml(res: Any) -> None:
    method = getattr(res, "method", "ml")
    if method != "ml":
        raise ValueError(f"a likelihood-ratio test compares maximum-likelihood fits "
                         f"(method='ml'); these results are method={method!r}")


def _restriction_rows(res: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(R, q)`` imposed in estimation ((0, P) and (0,) when none)."""
    con = getattr(res, "constraints", None)
    if con is None:
        return np.zeros((0, len(res.param_names))), np.zeros(0)
    return np.asarray(con[0], dtype=np.float64), np.asarray(con[1], dtype=np.float64)


def _free_parameters(res: Any) -> int:
    """Coefficients minus restrictions plus covariance parameters."""
    m = _restriction_rows(res)[0].shape[0]
    return int(res.problem.p.sum()) - m + covariance_parameters(res.problem.K, res.rank)


def _same_data(a: Any, b: Any) -> None:
    """Refuse two fits that are not on the same data (same rows, responses,
    designs, weights and observation pattern)."""
    pa, pb = a.problem, b.problem
    if pa is pb:
        return
    checks = [("K (equations)", pa.K == pb.K), ("N (rows)", pa.N == pb.N),
              ("regressors per equation", np.array_equal(pa.p, pb.p)),
              ("rows used", np.array_equal(pa.rows, pb.rows) and pa.n_rows_in == pb.n_rows_in),
              ("weights", (pa.w is None) == (pb.w is None)
               and (pa.w is None or np.array_equal(pa.w, pb.w))),
              ("missing responses", (pa.O is None) == (pb.O is None)
               and (pa.O is None or np.array_equal(pa.O, pb.O))),
              ("responses", pa.Yt.shape == pb.Yt.shape and np.array_equal(pa.Yt, pb.Yt)),
              ("designs", pa.X.shape == pb.X.shape and np.array_equal(pa.X, pb.X))]
    for what, ok in checks:
        if not ok:
            raise ValueError(f"lr_test needs two fits of the same data; these differ in "
                             f"their {what}")


def _implies(small: Any, big: Any) -> bool:
    """Every restriction of ``big`` follows from those of ``small`` (the
    restricted set of ``small`` lies in that of ``big``)."""
    Rb, qb = _restriction_rows(big)
    if not Rb.shape[0]:
        return True
    Rs, qs = _restriction_rows(small)
    if not Rs.shape[0]:
        return False
    T, *_ = np.linalg.lstsq(Rs.T, Rb.T, rcond=None)               # Rb' = Rs' T
    tol = 1e-9 * max(np.abs(Rb).max(), 1.0)
    return bool(np.abs(Rs.T @ T - Rb.T).max() <= tol
                and np.abs(T.T @ qs - qb).max() <= 1e-9 * max(np.abs(qb).max(initial=0), 1.0))


def _describe(res: Any) -> str:
    m = _restriction_rows(res)[0].shape[0]
    return f"rank {res.rank}, {m} restriction{'s' * (m != 1)}"


def _lr_nested(a: Any, b: Any) -> TestResult:
    """LR test of two nested ML fits of the same data (``lr_test(res, other)``)."""
    if not all(hasattr(r, "llf") and hasattr(r, "problem") for r in (a, b)):
        raise TypeError(f"lr_test compares with fitted SURResults, got {type(b).__name__}")
    _same_data(a, b)
    _check_ml(a)
    _check_ml(b)
    fa, fb = _free_parameters(a), _free_parameters(b)
    if fa == fb:
        raise ValueError(f"the two fits ({_describe(a)}; {_describe(b)}) have the same number "
                         f"of free parameters ({fa}): they are not nested, or the same model")
    small, big = (a, b) if fa < fb else (b, a)
    if small.rank > big.rank or not _implies(small, big):
        raise ValueError(
            f"the fits are not nested: the smaller model ({_describe(small)}, {min(fa, fb)} "
            f"free parameters) must have a rank no higher than the larger "
            f"({_describe(big)}) and every restriction of the larger must follow from its own")
    df = abs(fa - fb)
    m_s, m_b = _restriction_rows(small)[0].shape[0], _restriction_rows(big)[0].shape[0]
    K = big.problem.K
    n_cov = covariance_parameters(K, big.rank) - covariance_parameters(K, small.rank)
    stat = max(2.0 * (big.llf - small.llf), 0.0)
    return chi2_result(
        f"LR test ({_describe(small)} vs {_describe(big)})", stat, df,
        f"the restricted model ({_describe(small)}) holds; df = {df} = {m_s - m_b} "
        f"coefficient restriction(s) + {n_cov} covariance parameter(s)")


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

