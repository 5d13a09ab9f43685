"""Covariance estimators of the coefficients, chosen by ``cov_type``.

One mapping, :data:`COV_ESTIMATORS`, takes a ``cov_type`` (and its aliases,
:data:`COV_ALIASES`) to an estimator class; each estimator answers the two
questions the results ask -- the diagonal blocks ``Cov(beta_j)`` (K, pmax,
pmax) and the covariance of contrasts ``L' beta`` -- from the matrix-free
:class:`~alsgls.stats.inference.GLSCovariance` (or, for ``method="ols"``,
:class:`~alsgls.stats.ols_covariance.OLSCovariance`), which applies the bread
``A^-1`` (``solve``, ``diagonal_blocks``), ``Sigma_{O_i}^-1`` row by row
(``row_solve``) and holds the designs ``X`` and residuals ``Rt`` as the
estimators use them.

The sandwich estimators share the solved scores ``H = A^-1 Gamma'`` (K, pmax,
N), ``Gamma`` the (N, P) per-row scores ``g_i``; they differ only in the
N x N middle ``Omega`` of ``Cov = H Omega H'``:

* ``"robust"``: ``Omega = I`` (White, HC0);
* ``"kernel"``: ``Omega_{st} = w_{|s-t|}`` with the kernel weights (HAC,
  Newey-West); the rows must be in time order;
* ``"clustered"``: ``Omega_{st} = 1`` when rows ``s`` and ``t`` share a
  cluster (one-way), or ``M_1 + M_2 - M_12`` for two-way clustering.

None forms a P x P matrix: ``H Omega`` is a convolution (kernel) or a sum over
clusters, and the diagonal blocks are ``H_j (H Omega)_j'``.  Options are
validated once by :func:`covariance_config` into a :class:`CovarianceConfig`,
with linearmodels' names and rules (``kernel``, ``bandwidth``, ``clusters``,
``group_debias``).

A new estimator is a class with ``name``, an ``__init__(gls, config=None)``,
``diagonal_blocks`` and ``contrast_cov(L)`` registered in
:data:`COV_ESTIMATORS` (and its spellings in :data:`COV_ALIASES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from scipy import fft as sp_fft

from .._threads import single_blas_thread

if TYPE_CHECKING:
    from .inference import GLSCovariance

__all__ = ["CovarianceEstimator", "CovarianceConfig", "covariance_config", "ModelBased",
           "Robust", "Kernel", "Clustered", "COV_ESTIMATORS", "COV_ALIASES", "KERNELS",
           "normalise_cov_type", "kernel_weights", "automatic_bandwidth",
           "standardized_score_sum", "series_bandwidth"]

#: kernel spelling -> canonical kernel name (linearmodels' names, any case)
KERNELS = {"bartlett": "bartlett", "newey-west": "bartlett", "parzen": "parzen",
           "gallant": "parzen", "qs": "qs", "quadratic-spectral": "qs", "andrews": "qs"}
#: options each cov_type accepts (``debiased`` is an argument of its own)
COV_OPTIONS = {"unadjusted": (), "robust": (), "kernel": ("kernel", "bandwidth"),
               "clustered": ("clusters", "group_debias")}
#: ``(q, c, a)`` of the Newey-West (1994) automatic bandwidth per kernel: the
#: kernel's characteristic exponent, the rule's constant, and the exponent of
#: ``N / 100`` in the pilot lag count (the constants linearmodels uses)
_BANDWIDTH_RULE = {"bartlett": (1, 1.1447, 2 / 9), "parzen": (2, 2.6614, 4 / 25),
                   "qs": (2, 1.3221, 2 / 25)}
#: up to this many lags ``H Omega`` is a loop of shifted adds (exact); beyond it
#: an FFT convolution (``O(P N log N)``), e.g. for the untruncated QS kernel
LAG_LOOP_MAX = 32
#: Bytes of the per-chunk temporaries over equations (the clustered sums of H).
_CHUNK_BYTES = 16 * 2**20


class CovarianceEstimator(Protocol):
    """What every estimator of :data:`COV_ESTIMATORS` provides.

    Attributes
    ----------
    name : str
        The canonical ``cov_type``.
    gls : GLSCovariance
        The covariance it is built on.
    diagonal_blocks : ndarray, shape (K, pmax, pmax)
        ``Cov(beta_j)`` for every equation, zero padding.
    variance_scale : float
        A scale the results multiply into every variance and contrast
        covariance, on top of the per-equation ``debiased`` factor (1.0 for
        all estimators here: linearmodels' ``debiased`` is that factor for each).
    """

    name: str
    gls: GLSCovariance
    diagonal_blocks: np.ndarray
    variance_scale: float

    def contrast_cov(self, L: np.ndarray) -> np.ndarray:
        """Covariance (m, m) of ``L' beta`` for ``L`` (K, pmax, m) in padded layout."""
        ...


# -- options --------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CovarianceConfig:
    """Validated options of a covariance estimator (build with :func:`covariance_config`).

    Attributes
    ----------
    kernel : str or None
        ``"bartlett"``, ``"parzen"`` or ``"qs"`` (canonical name) for
        ``cov_type="kernel"``; None otherwise.
    bandwidth : float or None
        The kernel's bandwidth; None: automatic (Newey-West 1994, as linearmodels).
    clusters : ndarray of int, shape (N, c), or None
        Integer cluster codes ``0..G-1`` per column (``c`` = 1 or 2), read-only;
        None: every row its own cluster (the robust covariance, as linearmodels).
    group_debias : bool
        Scale each clustered middle by ``G / (G - 1) (N - 1) / N``.

    Notes
    -----
    Configs compare (and hash) by value, clusters included, so estimators are
    shared between results with equal options.
    """

    kernel: str | None = None
    bandwidth: float | None = None
    clusters: np.ndarray | None = None
    group_debias: bool = False

    @property
    def _key(self) -> tuple:
        cl = None if self.clusters is None else (self.clusters.shape, self.clusters.tobytes())
        return (self.kernel, self.bandwidth, cl, self.group_debias)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CovarianceConfig) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)


def _is_default(key: str, value: Any) -> bool:
    """Whether an option holds its default (not given): None, or False for group_debias."""
    return value is None or (key == "group_debias" and isinstance(value, (bool, np.bool_))
                             and not value)


def covariance_config(cov_type: str, N: int, **cov_config: Any) -> CovarianceConfig:
    """Validate the options of ``cov_type`` (linearmodels' names and rules).

    Parameters
    ----------
    cov_type : str
        A key or alias of :data:`COV_ESTIMATORS`.
    N : int
        Rows used in the fit (the length clusters must have).
    **cov_config
        ``kernel`` (str, default ``"bartlett"``; also ``"newey-west"``,
        ``"parzen"``/``"gallant"``, ``"qs"``/``"quadratic-spectral"``/
        ``"andrews"``, any case) and ``bandwidth`` (float >= 0; None:
        automatic) for ``"kernel"``; ``clusters`` (array, Series or DataFrame
        of shape (N,) or (N, c), c = 1 or 2, over the rows used, any labels)
        and ``group_debias`` (bool) for ``"clustered"``.  An option holding
        its default (None; False for ``group_debias``) counts as not given.

    Returns
    -------
    CovarianceConfig

    Raises
    ------
    TypeError
        For an unknown option, an option ``cov_type`` does not take (both
        named), or a value of the wrong type.
    ValueError
        For an unknown kernel (the choices listed), a negative or non-finite
        bandwidth, a bandwidth of ``N`` or more lags, or clusters of the wrong
        shape, with missing values, fewer than two groups, or nested columns.
    """
    name = normalise_cov_type(cov_type)
    unknown = sorted(k for k in cov_config if k not in ("kernel", "bandwidth", "clusters",
                                                         "group_debias"))
    if unknown:
        hint = (" (debiased is an argument of its own, not a covariance option)"
                if "debiased" in unknown else "")
        raise TypeError(f"unknown covariance option(s) {', '.join(map(repr, unknown))}{hint}; "
                        "the options are kernel, bandwidth (cov_type='kernel') and "
                        "clusters, group_debias (cov_type='clustered')")
    given = {k: v for k, v in cov_config.items() if not _is_default(k, v)}
    accepted = COV_OPTIONS.get(name)
    if accepted is None:                    # a registered estimator without options
        accepted = ()
    wrong = sorted(k for k in given if k not in accepted)
    if wrong:
        raise TypeError(f"option(s) {', '.join(map(repr, wrong))} do not apply to "
                        f"cov_type={name!r}; it accepts "
                        f"{', '.join(accepted) if accepted else 'no options'}")
    if name == "kernel":
        kernel = _check_kernel(given.get("kernel", "bartlett"))
        return CovarianceConfig(kernel=kernel,
                                bandwidth=_check_bandwidth(given.get("bandwidth"), kernel, N))
    if name == "clustered":
        gd = given.get("group_debias", False)
        if not isinstance(gd, (bool, np.bool_)):
            raise TypeError(f"group_debias must be True or False, got {gd!r}")
        clusters = given.get("clusters")
        return CovarianceConfig(clusters=None if clusters is None else cluster_codes(clusters, N),
                                group_debias=bool(gd))
    return CovarianceConfig()


def _check_kernel(kernel: Any) -> str:
    if not isinstance(kernel, str):
        raise TypeError(f"kernel must be the name of a kernel (a str), got {kernel!r}")
    key = kernel.lower()
    if key not in KERNELS:
        raise ValueError(f"kernel must be one of {sorted(KERNELS)} (any case), got {kernel!r}")
    return KERNELS[key]


def _check_bandwidth(bandwidth: Any, kernel: str, N: int) -> float | None:
    if bandwidth is None:
        return None
    if isinstance(bandwidth, (bool, np.bool_)):
        raise TypeError(f"bandwidth must be None or a number, got {bandwidth!r}")
    try:
        bw = float(bandwidth)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"bandwidth must be None or a number, got {bandwidth!r}") from exc
    if not np.isfinite(bw) or bw < 0:
        raise ValueError(f"bandwidth must be finite and non-negative, got {bandwidth!r}")
    if kernel != "qs" and int(bw) >= N:
        raise ValueError(f"bandwidth {bandwidth!r} uses int(bandwidth) = {int(bw)} lags, but "
                         f"there are only N = {N} rows: pass a bandwidth below {N}")
    return bw


def cluster_codes(clusters: Any, N: int) -> np.ndarray:
    """Integer codes ``0..G-1`` per column (N, c) of cluster labels.

    Parameters
    ----------
    clusters : array_like, Series or DataFrame, shape (N,) or (N, c)
        Cluster labels of any type (numbers, strings, categories), ``c`` = 1 or 2.
    N : int
        Rows used in the fit.

    Returns
    -------
    ndarray of int64, shape (N, c), read-only

    Raises
    ------
    TypeError
        For complex labels.
    ValueError
        For a wrong shape, missing labels, a column with a single group, or two
        nested columns (one-way clustering on the finer one is the same).
    """
    arr = clusters.to_numpy() if hasattr(clusters, "to_numpy") else np.asarray(clusters)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != N or not 1 <= arr.shape[1] <= 2:
        raise ValueError(f"clusters must have shape (N,) or (N, c) with c = 1 or 2 over the "
                         f"N = {N} rows used, got shape {np.shape(arr)}")
    if arr.dtype.kind == "c":
        raise TypeError("clusters must hold labels (numbers, strings), not complex numbers")
    codes = np.column_stack([_factorize(arr[:, c], c) for c in range(arr.shape[1])])
    counts = [int(codes[:, c].max()) + 1 for c in range(codes.shape[1])]
    for c, g in enumerate(counts):
        if g < 2:
            raise ValueError(f"clusters column {c} has a single group: a clustered covariance "
                             "needs at least two clusters")
    if codes.shape[1] == 2 and _n_groups(_intersection(codes)) == max(counts):
        raise ValueError("the two clusters columns are nested (every group of one lies "
                         "within a group of the other): cluster on the finer column alone")
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    codes.flags.writeable = False
    return codes


def _factorize(col: np.ndarray, c: int) -> np.ndarray:
    """Codes in order of first appearance; ValueError for missing labels."""
    try:
        import pandas as pd
    except ImportError:  # optional: numpy's unique does the same for sortable labels
        pd = None
    if pd is not None:
        codes = pd.factorize(col, use_na_sentinel=True)[0]
        if np.any(codes < 0):
            raise ValueError(f"clusters column {c} has missing values (NaN/None): every row "
                             "must belong to a cluster")
        return codes.astype(np.int64)
    if col.dtype.kind == "f" and np.isnan(col).any() or any(v is None for v in col):
        raise ValueError(f"clusters column {c} has missing values (NaN/None): every row "
                         "must belong to a cluster")
    return np.unique(col, return_inverse=True)[1].astype(np.int64)


def _intersection(codes: np.ndarray) -> np.ndarray:
    """Codes of the pairs ``(c_0, c_1)``: the groups of two-way clustering's ``M_12``."""
    pair = codes[:, 0] * (int(codes[:, 1].max()) + 1) + codes[:, 1]
    return np.unique(pair, return_inverse=True)[1]


def _n_groups(codes: np.ndarray) -> int:
    return int(codes.max()) + 1


# -- kernel weights and bandwidth ---------------------------------------------------
def kernel_weights(kernel: str, bandwidth: float, N: int) -> np.ndarray:
    """Weights ``w_0 = 1, w_1, ..., w_L`` of the lags of a HAC kernel.

    Parameters
    ----------
    kernel : {"bartlett", "parzen", "qs"}
        Canonical kernel name.
    bandwidth : float
        ``b >= 0``.  Bartlett and Parzen use ``m = int(b)`` lags; the
        quadratic-spectral kernel is not truncated (all ``N - 1`` lags).
    N : int
        Rows.

    Returns
    -------
    ndarray, shape (L + 1,)

    Notes
    -----
    Bartlett: ``w_l = 1 - l / (m + 1)``.  Parzen, ``z = l / (m + 1)``:
    ``1 - 6 z^2 + 6 z^3`` for ``z <= 1/2``, else ``2 (1 - z)^3``.  QS,
    ``z = 6 pi l / (5 b)``: ``3 (sin z / z - cos z) / z^2`` (no lags at ``b = 0``).
    These are linearmodels' conventions.
    """
    if kernel == "qs":
        if bandwidth == 0:
            return np.ones(1)
        z = 6.0 * np.pi * np.arange(N, dtype=np.float64) / float(bandwidth) / 5.0
        w = np.ones(N)
        w[1:] = 3.0 / z[1:] ** 2 * (np.sin(z[1:]) / z[1:] - np.cos(z[1:]))
        return w
    m = int(bandwidth)
    z = np.arange(m + 1) / (m + 1)
    if kernel == "bartlett":
        return 1.0 - z
    return np.where(z <= 0.5, 1.0 - 6.0 * z ** 2 + 6.0 * z ** 3, 2.0 * (1.0 - z) ** 3)


def automatic_bandwidth(moments: np.ndarray, kernel: str) -> int:
    """Newey-West (1994) bandwidth from the (P, N) scores, as linearmodels chooses it
    for system models.

    Parameters
    ----------
    moments : ndarray, shape (P, N)
        The per-row scores of every coefficient (rows in time order).
    kernel : {"bartlett", "parzen", "qs"}

    Returns
    -------
    int
        ``min(ceil(m), N - 1)``.

    Raises
    ------
    ValueError
        With too few rows for the pilot estimates (4 Bartlett, 5 Parzen, 6 QS),
        or when the bandwidth is not finite (a coefficient whose scores do not
        vary, or a zero long-run variance): pass ``bandwidth=`` then.

    Notes
    -----
    Each coefficient's scores are divided by their standard deviation and the
    P series summed into ``x`` (N,); with ``s_j = sum_t x_t x_{t-j} / N`` up to
    the pilot lag ``n = ceil(4 (N / 100)^a)``,
    ``m = c ((2 sum_j j^q s_j / (s_0 + 2 sum_j s_j))^2)^(1 / (2q + 1)) N^(1 / (2q + 1))``
    with ``(q, c, a)`` = (1, 1.1447, 2/9) Bartlett, (2, 2.6614, 4/25) Parzen,
    (2, 1.3221, 2/25) QS.
    """
    _pilot_lags(moments.shape[1], kernel)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = (moments / moments.std(axis=1)[:, None]).sum(axis=0)
    return series_bandwidth(x, kernel)


def _pilot_lags(N: int, kernel: str) -> int:
    """The pilot lag count ``n`` of the automatic bandwidth; ValueError when
    ``N`` is too small for it."""
    a = _BANDWIDTH_RULE[kernel][2]
    n = int(np.ceil(4 * (N / 100) ** a))
    if n >= N - 1:
        need = next(t for t in range(2, 10**6) if int(np.ceil(4 * (t / 100) ** a)) < t - 1)
        raise ValueError(f"the automatic bandwidth of the {kernel!r} kernel needs at least "
                         f"{need} rows, got N = {N}: pass bandwidth= explicitly")
    return n


def standardized_score_sum(X: np.ndarray, U: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``x = sum_c g_c / sd(g_c)`` (N,) over the coefficients ``c = (j, a)`` of
    ``mask``, for the scores ``g_(j,a),i = X[j, i, a] U[j, i]``: the series of
    :func:`automatic_bandwidth`, computed from ``X`` and ``U`` without the (P, N)
    scores (NaN where a coefficient's scores do not vary).  The variances are
    ``E g^2 - (E g)^2`` (the scores' means vanish at the estimate), two-pass
    where that would cancel.

    Parameters
    ----------
    X : ndarray, shape (K, N, pmax)
    U : ndarray, shape (K, N)
    mask : ndarray of bool, shape (K, pmax)

    Returns
    -------
    ndarray, shape (N,)
    """
    N = X.shape[1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mean = np.matmul(U[:, None, :], X)[:, 0] / N                   # (K, pmax)
        msq = np.einsum("kna,kna,kn->ka", X, X, U * U) / N
        var = msq - mean ** 2
        # where the mean dominates (cancellation), the two-pass variance of np.std
        for j, a in zip(*np.nonzero(mask & (var <= 1e-6 * msq))):
            var[j, a] = (X[j, :, a] * U[j]).var()
        w = np.where(mask, 1.0 / np.sqrt(var), 0.0)
        return np.einsum("kn,kn->n", np.matmul(X, w[:, :, None])[:, :, 0], U)


def series_bandwidth(x: np.ndarray, kernel: str) -> int:
    """The Newey-West (1994) bandwidth of the summed standardised scores ``x``
    (N,) (:func:`automatic_bandwidth`, :func:`standardized_score_sum`)."""
    q, c, _ = _BANDWIDTH_RULE[kernel]
    N = x.shape[0]
    n = _pilot_lags(N, kernel)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = np.array([x @ x] + [x[j:] @ x[:-j] for j in range(1, n + 1)]) / N
        s0 = s[0] + 2.0 * s[1:].sum()
        sq = 2.0 * np.sum(s[1:] * np.arange(1, n + 1) ** q)
        rate = 1.0 / (2 * q + 1)
        m = c * ((sq / s0) ** 2) ** rate * N ** rate
    if not np.isfinite(m):
        raise ValueError(f"the automatic bandwidth of the {kernel!r} kernel is not finite (a "
                         "coefficient's scores do not vary, or their long-run variance is 0): "
                         "pass bandwidth= explicitly")
    return int(min(np.ceil(m), N - 1))


def toeplitz_apply(H: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``H Omega`` along the last axis, ``Omega_{st} = w_{|s-t|}`` (``w_0 = 1``).

    A loop of shifted adds up to :data:`LAG_LOOP_MAX` lags (exact), else a
    zero-padded FFT convolution; ``O(L P N)`` or ``O(P N log N)``, never N x N.
    """
    L = len(w) - 1
    N = H.shape[-1]
    if L <= LAG_LOOP_MAX:
        out = H.copy()
        for lag in range(1, min(L, N - 1) + 1):
            out[..., lag:] += w[lag] * H[..., :-lag]
            out[..., :-lag] += w[lag] * H[..., lag:]
        return out
    M = sp_fft.next_fast_len(2 * N - 1, real=True)
    c = np.zeros(M)
    c[: L + 1] = w
    c[M - L:] = w[1:][::-1]                      # c[M - l] = w_l: the negative lags
    spec = sp_fft.rfft(H, n=M, axis=-1) * sp_fft.rfft(c)
    return sp_fft.irfft(spec, n=M, axis=-1)[..., :N]


# -- estimators ---------------------------------------------------------------------
class ModelBased:
    """``Cov(beta) = A^-1``, the inverse GLS information (``cov_type="unadjusted"``).

    Parameters
    ----------
    gls : GLSCovariance
        The matrix-free covariance of the coefficients.
    config : CovarianceConfig, optional
        Not used (no options).
    """

    name = "unadjusted"
    variance_scale = 1.0

    def __init__(self, gls: GLSCovariance, config: CovarianceConfig | None = None) -> None:
        self.gls = gls
        self.config = CovarianceConfig() if config is None else config

    @property
    def cov_config(self) -> dict:
        """The options in use (none)."""
        return {}

    @cached_property
    def diagonal_blocks(self) -> np.ndarray:
        """``(A^-1)_jj`` for every equation (K, pmax, pmax), zero padding."""
        return self.gls.diagonal_blocks

    @single_blas_thread
    def contrast_cov(self, L: np.ndarray) -> np.ndarray:
        """``L' A^-1 L`` (m, m) for ``L`` (K, pmax, m) in padded layout (one solve
        with the GLS information per contrast)."""
        out = np.einsum("jam,jan->mn", L, self.gls.solve(L))
        return 0.5 * (out + out.T)


class Robust(ModelBased):
    """The heteroskedasticity-robust sandwich ``A^-1 (sum_i g_i g_i') A^-1``
    (``cov_type="robust"``).

    The scores are ``g_i = w_i X_{i,O}' Sigma_{O_i}^-1 r_{i,O}`` (the scores of
    the weighted observed-data log-likelihood; ``X_i' Sigma^-1 r_i`` for complete,
    unweighted data).  With ``H = A^-1 Gamma'`` (the solve of all ``N`` scores at
    once) the sandwich is ``H H'``: its diagonal blocks and contrasts never form
    the P x P matrix.  Subclasses put an N x N middle ``Omega`` between the
    factors (:meth:`middle`).

    Parameters
    ----------
    gls : GLSCovariance
        Built with the residuals ``Rt``.
    config : CovarianceConfig, optional
        Not used by the robust covariance.
    """

    name = "robust"

    @cached_property
    def _shared(self) -> Robust | None:
        """The covariance's robust estimator, whose scores and ``H`` the other
        sandwiches reuse (None for the robust estimator itself)."""
        if self.name == "robust" or not hasattr(self.gls, "estimator"):
            return None
        shared = self.gls.estimator("robust")
        return shared if isinstance(shared, Robust) and shared is not self else None

    @cached_property
    @single_blas_thread
    def row_residuals(self) -> np.ndarray:
        """``w_i Sigma_{O_i}^-1 r_{i,O}`` per row (K, N): the scores are
        ``g_i = X_i' u_i``, ``Gamma'[j, a, i] = X[j, i, a] u_ij``."""
        gls = self.gls
        if gls.Rt is None:
            raise ValueError(f"residuals are required for the {self.name} covariance")
        if self._shared is not None:
            return self._shared.row_residuals
        return gls.row_solve(gls.Rt)

    @cached_property
    @single_blas_thread
    def scores(self) -> np.ndarray:
        """Per-row scores ``g_i`` as (K, pmax, N)."""
        U = self.row_residuals
        if self._shared is not None:
            return self._shared.scores
        X = self.gls.X
        out = np.empty((X.shape[0], X.shape[2], X.shape[1]))
        return np.multiply(X.transpose(0, 2, 1), U[:, None, :], out=out)

    @cached_property
    def factor(self) -> np.ndarray:
        """``H = A^-1 Gamma'`` (K, pmax, N): the sandwich is ``H Omega H'``.

        Solved with the covariance's ``score_bread`` (the scores built batch by
        batch from :attr:`row_residuals`, never all at once), else its
        ``bread`` or ``solve`` of :attr:`scores`: one pass for all ``N`` scores."""
        U = self.row_residuals
        if self._shared is not None:
            return self._shared.factor
        if hasattr(self.gls, "score_bread") and "scores" not in vars(self):
            return self.gls.score_bread(U)
        return self._bread(self.scores)

    def _bread(self, Z: np.ndarray) -> np.ndarray:
        """``A^-1 Z`` as the sandwiches apply it (``gls.bread``, else ``gls.solve``)."""
        return getattr(self.gls, "bread", self.gls.solve)(Z)

    def middle(self, H: np.ndarray) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """``H Omega H'`` as terms ``(s, U, V)`` meaning ``s U V'`` (U, V as H).

        The robust middle is the identity: one term ``(1, H, H)``.
        """
        return [(1.0, H, H)]

    @cached_property
    @single_blas_thread
    def diagonal_blocks(self) -> np.ndarray:
        """Diagonal blocks of ``A^-1 B A^-1`` (K, pmax, pmax), zero padding."""
        out = sum(s * np.einsum("jan,jbn->jab", U, V) for s, U, V in self.middle(self.factor))
        return 0.5 * (out + out.transpose(0, 2, 1))

    @single_blas_thread
    def contrast_cov(self, L: np.ndarray) -> np.ndarray:
        """``(L' H) Omega (L' H)'`` (m, m) for ``L`` (K, pmax, m) in padded layout.

        ``L' H = (A^-1 L)' Gamma'``: with ``H`` not computed yet, ``m`` solves
        and one pass over the scores (a few equations cost a few equations)."""
        done = vars(self).get("factor")
        if done is None and self._shared is not None:
            done = vars(self._shared).get("factor")
        if done is not None:
            Hl = np.einsum("jam,jan->mn", L, done)
        else:
            Hl = np.einsum("jam,jan->mn", self._bread(L), self.scores)
        out = sum(s * (U @ V.T) for s, U, V in self.middle(Hl))
        return 0.5 * (out + out.T)


class Kernel(Robust):
    """Heteroskedasticity- and autocorrelation-consistent (HAC) sandwich
    (``cov_type="kernel"``, alias ``"hac"``).

    ``Cov = A^-1 S A^-1`` with
    ``S = sum_t g_t g_t' + sum_{l >= 1} w_l sum_t (g_t g_{t-l}' + g_{t-l} g_t')``
    (Newey-West with the Bartlett kernel), i.e. ``H Omega H'`` with the Toeplitz
    ``Omega_{st} = w_{|s-t|}``; computed as a convolution of ``H`` along the
    rows, never N x N or P x P.  The rows must be in time order (with missing
    responses the unobserved entries contribute zero scores; a row dropped
    from the fit is skipped, so its neighbours become adjacent).

    Parameters
    ----------
    gls : GLSCovariance
        Built with the residuals ``Rt``.
    config : CovarianceConfig, optional
        ``kernel`` (default ``"bartlett"``) and ``bandwidth`` (default automatic:
        :func:`automatic_bandwidth` of the scores, as linearmodels' system models).

    Notes
    -----
    linearmodels divides ``S`` and ``A`` by ``N`` and the result again by ``N``;
    the scale cancels.  Its ``debiased`` is the per-equation
    ``sqrt(N / (N - p_j))`` factor of the results (``variance_scale = 1``).
    """

    name = "kernel"

    def __init__(self, gls: GLSCovariance, config: CovarianceConfig | None = None) -> None:
        super().__init__(gls, config)
        self.kernel = self.config.kernel or "bartlett"

    @cached_property
    def bandwidth(self) -> float:
        """The bandwidth in use (given, or automatic from the scores:
        :func:`automatic_bandwidth` through :func:`standardized_score_sum`,
        never holding the (P, N) scores)."""
        if self.config.bandwidth is not None:
            return self.config.bandwidth
        _pilot_lags(self.gls.N, self.kernel)       # too few rows: before any work
        x = standardized_score_sum(self.gls.X, self.row_residuals, self.gls.mask)
        return float(series_bandwidth(x, self.kernel))

    @cached_property
    def weights(self) -> np.ndarray:
        """Lag weights ``w_0 = 1, ..., w_L`` (:func:`kernel_weights`)."""
        return kernel_weights(self.kernel, self.bandwidth, self.gls.N)

    @property
    def cov_config(self) -> dict:
        """``kernel``, ``bandwidth`` (the one used) and ``automatic_bandwidth``."""
        return {"kernel": self.kernel, "bandwidth": self.bandwidth,
                "automatic_bandwidth": self.config.bandwidth is None}

    def middle(self, H: np.ndarray) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """One term ``(1, H, H Omega)``."""
        return [(1.0, H, toeplitz_apply(H, self.weights))]

    @cached_property
    @single_blas_thread
    def diagonal_blocks(self) -> np.ndarray:
        """Diagonal blocks of ``H Omega H'`` (K, pmax, pmax), zero padding.

        Up to :data:`LAG_LOOP_MAX` lags ``sum_l w_l (C_l + C_l')`` with the lag
        products ``C_l = sum_t H_t H_(t-l)'`` (``C_0`` counted once): no copy of
        ``H``; beyond, through :func:`toeplitz_apply`."""
        w = self.weights
        H = self.factor
        N = H.shape[-1]
        if len(w) - 1 > LAG_LOOP_MAX:
            return super().diagonal_blocks
        out = np.einsum("jan,jbn->jab", H, H)
        for lag in range(1, min(len(w) - 1, N - 1) + 1):
            C = np.einsum("jan,jbn->jab", H[..., lag:], H[..., :-lag])
            out += w[lag] * (C + C.transpose(0, 2, 1))
        return 0.5 * (out + out.transpose(0, 2, 1))


class Clustered(Robust):
    """Cluster-robust sandwich, one- or two-way (``cov_type="clustered"``).

    One-way: ``S = sum_g (sum_{t in g} g_t)(sum_{t in g} g_t)'``, computed from
    ``H`` summed within clusters (``O(P N)``, then ``O(K p^2 G)``).  Two-way
    (Cameron, Gelbach and Miller): ``S_1 + S_2 - S_12`` with ``S_12`` over the
    intersections of the two clusterings.  ``group_debias`` multiplies each
    term by ``G / (G - 1) (N - 1) / N`` with its own ``G``.  Without clusters
    every row is its own cluster: the robust covariance (as linearmodels).

    Parameters
    ----------
    gls : GLSCovariance
        Built with the residuals ``Rt``.
    config : CovarianceConfig, optional
        ``clusters`` (N, c) codes and ``group_debias``.

    Notes
    -----
    linearmodels' ``debiased`` for this estimator is the per-equation
    ``sqrt(N / (N - p_j))`` factor of the results (``variance_scale = 1``), not
    Stata's ``G / (G - 1)``; use ``group_debias`` for the latter's group part.
    """

    name = "clustered"

    def __init__(self, gls: GLSCovariance, config: CovarianceConfig | None = None) -> None:
        super().__init__(gls, config)
        cl = self.config.clusters
        if cl is not None and cl.shape[0] != gls.N:
            raise ValueError(f"clusters have {cl.shape[0]} rows but the fit used N = {gls.N}")

    @cached_property
    def groupings(self) -> list[tuple[float, np.ndarray, int]]:
        """``(sign x debias scale, codes (N,), G)`` for each term of the middle."""
        cl, N = self.config.clusters, self.gls.N
        if cl is None:
            return []
        terms = [(1.0, cl[:, c], _n_groups(cl[:, c])) for c in range(cl.shape[1])]
        if cl.shape[1] == 2:
            both = _intersection(cl)
            terms.append((-1.0, both, _n_groups(both)))
        if self.config.group_debias:
            terms = [(s * G / (G - 1) * (N - 1) / N, codes, G) for s, codes, G in terms]
        return terms

    @property
    def nclusters(self) -> list[int]:
        """Number of groups of each clusters column (empty without clusters)."""
        cl = self.config.clusters
        return [] if cl is None else [_n_groups(cl[:, c]) for c in range(cl.shape[1])]

    @property
    def cov_config(self) -> dict:
        """``clusters`` (codes), ``group_debias`` and ``nclusters``."""
        return {"clusters": self.config.clusters, "group_debias": self.config.group_debias,
                "nclusters": self.nclusters}

    def middle(self, H: np.ndarray) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """One term ``(s, Hc, Hc)`` per clustering, ``Hc`` the sums of ``H`` within groups."""
        if not self.groupings:
            return super().middle(H)
        out = []
        for s, codes, G in self.groupings:
            order = np.argsort(codes, kind="stable")
            starts = np.searchsorted(codes[order], np.arange(G))
            if np.array_equal(order, np.arange(len(order))):      # rows already grouped
                Hc = np.add.reduceat(H, starts, axis=-1)
            else:                    # gathered a chunk at a time: no copy of all of H
                Hc = np.empty(H.shape[:-1] + (G,))
                step = max(1, _CHUNK_BYTES // (8 * H[:1].size))
                for a in range(0, H.shape[0], step):
                    Hc[a:a + step] = np.add.reduceat(H[a:a + step][..., order], starts,
                                                     axis=-1)
            out.append((s, Hc, Hc))
        return out


#: cov_type -> estimator class
COV_ESTIMATORS: dict[str, type] = {"unadjusted": ModelBased, "robust": Robust,
                                   "kernel": Kernel, "clustered": Clustered}
#: accepted spellings -> cov_type
COV_ALIASES = {"unadjusted": "unadjusted", "nonrobust": "unadjusted", "classic": "unadjusted",
               "homoskedastic": "unadjusted", "robust": "robust",
               "heteroskedastic": "robust", "hc0": "robust", "kernel": "kernel",
               "hac": "kernel", "clustered": "clustered", "cluster": "clustered"}


def normalise_cov_type(cov_type: str) -> str:
    """The canonical ``cov_type`` for any accepted spelling.

    Parameters
    ----------
    cov_type : str
        A key of :data:`COV_ESTIMATORS` or of :data:`COV_ALIASES` (any case).

    Returns
    -------
    str

    Raises
    ------
    ValueError
        For an unknown spelling.
    """
    key = str(cov_type).lower()
    if key in COV_ESTIMATORS:
        return key
    if key not in COV_ALIASES:
        raise ValueError(f"cov_type must be one of {sorted(set(COV_ESTIMATORS))} (or an "
                         f"alias: {sorted(COV_ALIASES)}), got {cov_type!r}")
    return COV_ALIASES[key]
