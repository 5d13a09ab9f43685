"""Executable specification of the public boundary of alsgls.

Each test pins one defect of the issue "solver options re-listed and not
validated; import cycle that is also a runtime loop; warnings pointing into
the package; message rewriting that corrupts numbers; unchecked prediction
inputs; repeated validation; replicated shared designs":

1. solver options are validated once, up front, with errors naming the option;
2. ``max_iter`` is the one name of the iteration limit (``max_sweeps`` is a
   deprecated alias that is still honoured);
3. options are honoured on every path (missing responses, weights);
4. warnings point at the caller's line;
5. warnings re-emitted by ``SUR`` keep their numbers intact;
6. ``GLSFit.predict`` checks the number and shape of the designs;
7. ``SURResults.predict`` checks finiteness and formula data;
8. the package has no import cycle;
9. data are validated once per public call;
10. a shared 2-D design is never replicated K times;
11. inputs are never modified.

Data are small and seeded so that the module runs in a few seconds.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

import alsgls
from alsgls import (
    SUR,
    ConvergenceWarning,
    IdentificationWarning,
    MissingDataWarning,
    als_gls,
    als_gls_missing,
    em_gls,
    fit_missing,
    select_rank,
    simulate_sur,
)

SRC = Path(alsgls.__file__).resolve().parent
HERE = os.path.realpath(__file__)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def _system(N=80, K=6, p=2, k=1, seed=0):
    """A small seeded SUR system: (list of K designs (N, p), Y (N, K))."""
    Xs, Y, _ = simulate_sur(N=N, K=K, p=p, k=k, seed=seed)
    return [np.array(x) for x in Xs], np.array(Y)


def _with_nan(Y, seed=1, frac=0.1):
    """Y with a seeded ``frac`` of its entries missing (no row left empty)."""
    Y = np.array(Y, dtype=float)
    mask = np.random.default_rng(seed).random(Y.shape) < frac
    mask[:, 0] = False
    Y[mask] = np.nan
    return Y


def _record(fn, *args, **kwargs):
    """Call ``fn`` recording every warning; return ``(result, warnings list)``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, caught


def _of(caught, category):
    return [w for w in caught if issubclass(w.category, category)]


def _estimator():
    return alsgls.ALSGLS  # imports scikit-learn lazily


# --------------------------------------------------------------------------
# 1. solver options are validated, errors name the option
# --------------------------------------------------------------------------

def _call(entry, **opts):
    """Run the public entry point ``entry`` on small data with solver options ``opts``."""
    Xs, Y = _system()
    if entry == "als_gls":
        return als_gls(Xs, Y, 1, **opts)
    if entry == "em_gls":
        return em_gls(Xs, Y, 1, **opts)
    if entry == "fit_missing":
        return fit_missing(Xs, _with_nan(Y), 1, **opts)
    if entry == "SUR.fit":
        return SUR.from_arrays(Xs, Y, rank=1).fit(**opts)
    if entry == "ALSGLS":
        return _estimator()(rank=1, **opts).fit(Xs, Y)
    if entry == "select_rank":
        return select_rank(Xs, Y, method="bic", max_rank=1, **opts)
    raise AssertionError(entry)


TOL_ENTRIES = ["als_gls", "em_gls", "fit_missing", "SUR.fit", "ALSGLS", "select_rank"]
MAX_ITER_ENTRIES = ["als_gls", "em_gls", "fit_missing", "SUR.fit", "ALSGLS"]


@pytest.mark.parametrize("entry", TOL_ENTRIES)
@pytest.mark.parametrize("tol", [0, -1, np.inf, np.nan], ids=["0", "-1", "inf", "nan"])
def test_tol_out_of_range_is_a_value_error_naming_tol(entry, tol):
    """Pins: tol=0/-1 crashed with 'CG breakdown', tol=inf 'converged' after one
    sweep, tol=nan ran on; every entry point must reject them, naming ``tol``."""
    # em_gls/fit_missing get a valid iteration cap so that, before the fix, a
    # tolerance that is never met costs 50 iterations rather than thousands
    extra = {"max_iter": 50} if entry in ("em_gls", "fit_missing") else {}
    with pytest.raises(ValueError, match="tol"):
        _call(entry, tol=tol, **extra)


@pytest.mark.parametrize("entry", TOL_ENTRIES)
@pytest.mark.parametrize("tol", [None, "1e-8"], ids=["None", "str"])
def test_tol_of_wrong_type_is_a_type_error_naming_tol(entry, tol):
    """Pins: tol=None / tol='1e-8' surfaced as numpy arithmetic errors deep in
    the solver instead of a TypeError naming ``tol``."""
    with pytest.raises(TypeError, match="tol"):
        _call(entry, tol=tol)


@pytest.mark.parametrize("entry", MAX_ITER_ENTRIES)
@pytest.mark.parametrize("max_iter", [0, -1])
def test_max_iter_out_of_range_is_a_value_error_naming_it(entry, max_iter):
    """Pins: a non-positive iteration limit was not rejected (and ``max_iter``
    was not accepted everywhere)."""
    with pytest.raises(ValueError, match="max_iter"):
        _call(entry, max_iter=max_iter)


@pytest.mark.parametrize("entry", MAX_ITER_ENTRIES)
@pytest.mark.parametrize("max_iter", [2.5, True], ids=["float", "bool"])
def test_max_iter_of_wrong_type_is_a_type_error_naming_it(entry, max_iter):
    """Pins: max_iter=2.5 or True was used as a number (range(2.5) errors or
    True silently meaning 1)."""
    with pytest.raises(TypeError, match="max_iter") as info:
        _call(entry, max_iter=max_iter)
    # "unexpected keyword argument 'max_iter'" is not a validation of its value
    assert "unexpected keyword" not in str(info.value), str(info.value)


def test_eig_maxiter_zero_is_a_value_error():
    """Pins: eig_maxiter=0 raised UnboundLocalError from the subspace iteration,
    which runs once min(K, N) > 64."""
    Xs, Y, _ = simulate_sur(N=100, K=100, p=1, k=1, seed=3)
    with pytest.raises(ValueError, match="eig_maxiter"):
        als_gls(Xs, Y, 1, eig_maxiter=0)


def test_cg_maxiter_zero_is_a_value_error():
    """Pins: cg_maxiter=0 was not validated (the beta-step silently made no step)."""
    Xs, Y = _system()
    with pytest.raises(ValueError, match="cg_maxiter"):
        als_gls(Xs, Y, 1, cg_maxiter=0)


@pytest.mark.parametrize("d_floor", [-1e-3, 0.0, 1.0])
def test_d_floor_outside_open_unit_interval_is_a_value_error(d_floor):
    """Pins: d_floor=-1e-3 produced an error blaming D (log of a negative
    floor); d_floor must lie in (0, 1) and the error must name it."""
    Xs, Y = _system()
    with pytest.raises(ValueError, match="d_floor"):
        als_gls(Xs, Y, 1, d_floor=d_floor)


def test_blas_threads_zero_is_a_value_error():
    """Pins: blas_threads=0 was handed to threadpoolctl unchecked."""
    Xs, Y = _system()
    with pytest.raises(ValueError, match="blas_threads"):
        als_gls(Xs, Y, 1, blas_threads=0)


def test_random_state_of_wrong_type_is_a_type_error():
    """Pins: random_state='a' failed inside numpy.random.default_rng with a
    message that does not name the option."""
    Xs, Y = _system()
    with pytest.raises(TypeError, match="random_state"):
        als_gls(Xs, Y, 1, random_state="a")


def test_alsgls_fit_intercept_must_be_bool():
    """Pins: ALSGLS(fit_intercept='no') was taken as True (truthy string)."""
    Xs, Y = _system()
    with pytest.raises((TypeError, ValueError), match="fit_intercept"):
        _estimator()(rank=1, fit_intercept="no").fit(Xs[0], Y)


def test_select_rank_n_folds_must_be_an_integer():
    """Pins: select_rank(method='cv', n_folds=2.5) ran instead of refusing."""
    Xs, Y = _system()
    with pytest.raises((TypeError, ValueError), match="n_folds"):
        select_rank(Xs, Y, method="cv", n_folds=2.5, max_rank=1)


def test_alsgls_n_folds_must_be_an_integer():
    """Pins: ALSGLS(rank='cv', n_folds=2.5) ran instead of refusing."""
    Xs, Y = _system()
    with pytest.raises((TypeError, ValueError), match="n_folds"):
        _estimator()(rank="cv", n_folds=2.5, max_rank=1).fit(Xs, Y)


def test_sur_fit_unknown_option_is_a_type_error_naming_it():
    """Pins: SUR.fit forwarded unknown keywords blindly; the error must be a
    TypeError naming the keyword."""
    Xs, Y = _system()
    with pytest.raises(TypeError, match="foo"):
        SUR.from_arrays(Xs, Y, rank=1).fit(foo=1)


# --------------------------------------------------------------------------
# 2. max_iter is the canonical name; max_sweeps is a deprecated alias
# --------------------------------------------------------------------------

@pytest.mark.parametrize("entry", MAX_ITER_ENTRIES)
def test_max_iter_is_accepted_and_honoured_everywhere(entry):
    """Pins: the iteration limit was max_sweeps in als_gls/ALSGLS but max_iter in
    em_gls/fit_missing/SUR.fit; ``max_iter=1`` must stop after one iteration
    with a ConvergenceWarning on every entry point."""
    out, caught = _record(_call, entry, max_iter=1)
    assert _of(caught, ConvergenceWarning), [str(w.message) for w in caught]
    if entry == "SUR.fit":
        assert out.iterations == 1 and out.converged is False
    elif entry == "ALSGLS":
        assert out.n_iter_ == 1 and out.converged_ is False
    else:
        assert out.n_iter == 1 and out.converged is False


def test_als_gls_max_sweeps_is_deprecated_but_honoured():
    """Pins: renaming the option must not break callers: ``max_sweeps`` still
    limits the sweeps and emits a DeprecationWarning."""
    Xs, Y = _system()
    fit, caught = _record(als_gls, Xs, Y, 1, max_sweeps=1)
    assert _of(caught, DeprecationWarning), [str(w.message) for w in caught]
    assert fit.n_iter == 1
    assert fit.converged is False


def test_alsgls_max_sweeps_is_deprecated_but_honoured():
    """Pins: ALSGLS(max_sweeps=...) keeps working (DeprecationWarning at
    construction or fit) and limits the final fit."""
    Xs, Y = _system()

    def run():
        return _estimator()(rank=1, max_sweeps=1).fit(Xs, Y)

    est, caught = _record(run)
    assert _of(caught, DeprecationWarning), [str(w.message) for w in caught]
    assert est.n_iter_ == 1
    assert est.converged_ is False


# --------------------------------------------------------------------------
# 3. options are honoured on every path
# --------------------------------------------------------------------------

def test_als_gls_with_missing_responses_honours_max_iter():
    """Pins: als_gls -> als_gls_missing -> fit_missing dropped the iteration
    limit (max_sweeps=1 gave n_iter=16, converged=True, no warning)."""
    Xs, Y = _system()
    fit, caught = _record(als_gls, Xs, _with_nan(Y), 1, max_iter=1)
    assert fit.n_iter == 1
    assert fit.converged is False
    assert _of(caught, ConvergenceWarning)


def test_sur_fit_with_missing_responses_honours_max_iter():
    """Pins: the missing-data path of SUR.fit must honour max_iter."""
    Xs, Y = _system()
    res, caught = _record(SUR.from_arrays(Xs, _with_nan(Y), rank=1).fit, max_iter=1)
    assert res.iterations == 1
    assert res.converged is False
    assert _of(caught, ConvergenceWarning)


def test_weighted_als_gls_honours_max_iter():
    """Pins: the weighted complete-data path (sqrt(w) row scaling) must honour
    max_iter too."""
    Xs, Y = _system()
    w = np.random.default_rng(2).uniform(0.5, 2.0, Y.shape[0])
    fit, caught = _record(als_gls, Xs, Y, 1, weights=w, max_iter=1)
    assert fit.n_iter == 1
    assert fit.converged is False
    assert _of(caught, ConvergenceWarning)


# --------------------------------------------------------------------------
# 4. warnings point at the caller's line
# --------------------------------------------------------------------------

def _warn_case(case):
    Xs, Y = _system()
    if case == "als_gls":
        return als_gls(Xs, Y, 1, max_iter=1)
    if case == "als_gls-nan":
        return als_gls(Xs, _with_nan(Y), 1, max_iter=1)
    if case == "em_gls":
        return em_gls(Xs, Y, 1, max_iter=1)
    if case == "SUR.fit":
        return SUR.from_arrays(Xs, Y, rank=1).fit(max_iter=1)
    if case == "dropped-row":
        Y = Y.copy()
        Y[3, :] = np.nan
        return als_gls(Xs, Y, 1)
    if case == "ledermann":
        Xs, Y = _system(K=4, k=1)
        return als_gls(Xs, Y, 2)
    raise AssertionError(case)


@pytest.mark.parametrize("case, category", [
    ("als_gls", ConvergenceWarning),
    ("als_gls-nan", ConvergenceWarning),
    ("em_gls", ConvergenceWarning),
    ("SUR.fit", ConvergenceWarning),
    ("dropped-row", MissingDataWarning),
    ("ledermann", IdentificationWarning),
])
def test_warnings_point_at_the_callers_file(case, category):
    """Pins: warnings on the missing-data and validation paths carried a
    stacklevel computed for another call depth and pointed into the package.

    The call is made from ``_warn_case`` in this module, so every warning must
    name this file."""
    _, caught = _record(_warn_case, case)
    found = _of(caught, category)
    assert found, f"no {category.__name__}; got {[(w.category.__name__, str(w.message)) for w in caught]}"
    where = [(os.path.realpath(w.filename), w.lineno) for w in found]
    assert all(f == HERE for f, _ in where), f"{category.__name__} attributed to {where}"


# --------------------------------------------------------------------------
# 5. SUR keeps warning messages intact
# --------------------------------------------------------------------------

def test_sur_convergence_warning_keeps_its_numbers():
    """Pins: SUR rewrote messages with the regex ``equation (\\d+)`` to put in
    labels, turning 'equation 2.81e-02' into "equation 'eq2'.81e-02"."""
    Xs, Y = _system()
    _, caught = _record(SUR.from_arrays(Xs, Y, rank=1).fit, max_iter=1)
    msgs = [str(w.message) for w in _of(caught, ConvergenceWarning)]
    assert msgs, "no ConvergenceWarning"
    for m in msgs:
        assert re.search(r"\d\.\d\de[+-]\d\d", m), f"number corrupted or missing: {m!r}"
        assert not re.search(r"equation '[^']*'\.\d", m), f"label spliced into a number: {m!r}"
        assert not re.search(r"'eq\d+'\.\d", m), f"label spliced into a number: {m!r}"


# --------------------------------------------------------------------------
# 6. GLSFit.predict checks its input
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_fit():
    Xs, Y = _system()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Xs, als_gls(Xs, Y, 1)


@pytest.mark.parametrize("delta", [-1, 1], ids=["K-1", "K+1"])
def test_glsfit_predict_checks_the_number_of_designs(small_fit, delta):
    """Pins: GLSFit.predict zipped designs with coefficients and silently
    returned K-1 columns for K-1 designs (and ignored an extra design)."""
    Xs, fit = small_fit
    K = len(Xs)
    bad = Xs[:-1] if delta < 0 else Xs + [Xs[0]]
    with pytest.raises(ValueError) as info:
        fit.predict(bad)
    msg = str(info.value)
    assert "equation" in msg.lower() and str(K) in msg, msg


@pytest.mark.parametrize("cols", [1, 3])
def test_glsfit_predict_names_the_equation_with_wrong_columns(small_fit, cols):
    """Pins: a design with the wrong number of columns failed in matmul with a
    message that does not say which equation."""
    Xs, fit = small_fit
    bad = list(Xs)
    bad[3] = np.random.default_rng(0).standard_normal((5, cols))
    bad = [x if j == 3 else x[:5] for j, x in enumerate(bad)]
    with pytest.raises(ValueError, match=r"\[3\]|equation 3\b"):
        fit.predict(bad)


# --------------------------------------------------------------------------
# 7. SURResults.predict checks its input
# --------------------------------------------------------------------------

LABELS = ["alpha", "beta", "gamma", "delta"]


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_sur_predict_rejects_non_finite_exog_naming_the_equation(bad):
    """Pins: prediction had no finiteness check; NaN/inf propagated into the
    predicted means and standard errors."""
    Xs, Y = _system(K=4)
    res = SUR.from_arrays(Xs, Y, rank=1, labels=LABELS).fit()
    new = {lab: np.array(x[:10]) for lab, x in zip(LABELS, Xs)}
    new["gamma"][4, 1] = bad
    with pytest.raises(ValueError, match="gamma"):
        res.predict(exog=new)


def test_sur_predict_data_missing_column_is_a_value_error():
    """Pins: predict(data=df) on a formula model raised formulaic's own
    exception when a column was absent from ``df``."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("formulaic")
    Xs, Y = _system(K=3)
    df = pd.DataFrame({"y0": Y[:, 0], "y1": Y[:, 1], "y2": Y[:, 2],
                       "x0": Xs[0][:, 0], "x1": Xs[1][:, 0], "x2": Xs[2][:, 0]})
    formulas = {"a": "y0 ~ 1 + x0", "b": "y1 ~ 1 + x1", "c": "y2 ~ 1 + x2"}
    res = SUR.from_formula(formulas, df, rank=1).fit()
    with pytest.raises(ValueError, match=r"x1|'b'") as info:
        res.predict(data=df.drop(columns="x1").iloc[:10])
    assert not type(info.value).__module__.startswith("formulaic"), type(info.value)


# --------------------------------------------------------------------------
# 8. no import cycle
# --------------------------------------------------------------------------

def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.AST) -> bool:
    t = node.test if isinstance(node, ast.If) else None
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node, at any depth (functions included), except
    under ``if TYPE_CHECKING:`` (never executed)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = list(ast.iter_child_nodes(node))
        if _is_type_checking(node):
            children = list(node.orelse)
        stack.extend(children)


def _import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
                continue
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                base_name = ".".join(base)
                mod = f"{base_name}.{node.module}" if node.module else base_name
            else:
                mod = node.module or ""
            targets.add(mod)
            for a in node.names:  # ``from pkg import submodule``
                sub = f"{mod}.{a.name}"
                if sub in modules:
                    targets.add(sub)
        edges = set()
        for t in targets:
            # resolve to the deepest module of the package that names it
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                edges.add(t)
        graph[name] = edges
    excluded = {"alsgls", "alsgls._compat"}
    return {m: {t for t in e if t not in excluded}
            for m, e in graph.items() if m not in excluded}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_import_graph_has_no_cycle():
    """Pins: core.als imported core.missing (inside als_gls) while core.missing
    imported core.als: an import cycle that was also a runtime loop
    (als_gls -> als_gls_missing -> als_gls).  Every intra-package import,
    including those inside functions, must form a DAG."""
    graph = _import_graph()
    assert "alsgls.core.als" in graph, sorted(graph)  # the graph was built
    cycles = _cycles(graph)
    detail = [{m: sorted(graph[m] & set(c)) for m in c} for c in cycles]
    assert not cycles, f"import cycles among modules: {detail}"


# --------------------------------------------------------------------------
# 9. data are validated once per public call
# --------------------------------------------------------------------------

@pytest.fixture
def count_check_designs(monkeypatch):
    """Wrap ``alsgls.core.problem.build_problem`` (the one validation of the
    data: coercion, missing-data policy, padding, Gram matrices and their rank
    check) with a counter, wherever it was imported.  (Cross-validation folds
    are ``Problem.take(rows)``: no coercion, only the fold's own Gram check.)"""
    _estimator()  # import the estimator module first so its imports get patched
    from alsgls.core import problem

    original = problem.build_problem
    calls = [0]

    def counting(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    for name, mod in list(sys.modules.items()):
        if (name == "alsgls" or name.startswith("alsgls.")) and \
                getattr(mod, "build_problem", None) is original:
            monkeypatch.setattr(mod, "build_problem", counting)
    return calls


def test_alsgls_cv_validates_once(count_check_designs):
    """Pins: ALSGLS(rank='cv') re-validated the data in every candidate and
    fold fit (27 validations)."""
    Xs, Y = _system(N=120, K=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _estimator()(rank="cv", n_folds=3, max_rank=2).fit(Xs, Y)
    assert count_check_designs[0] == 1, f"build_problem ran {count_check_designs[0]} times"


def test_select_rank_validates_once(count_check_designs):
    """Pins: select_rank validated once itself and again in every candidate fit."""
    Xs, Y = _system(N=120, K=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        select_rank(Xs, Y, method="bic")
    assert count_check_designs[0] == 1, f"build_problem ran {count_check_designs[0]} times"


def test_sur_construction_and_fit_validate_once(count_check_designs):
    """Pins: SUR validated the data at construction and als_gls validated them
    again in fit."""
    Xs, Y = _system()
    SUR.from_arrays(Xs, Y, rank=1).fit()
    assert count_check_designs[0] == 1, f"build_problem ran {count_check_designs[0]} times"


# --------------------------------------------------------------------------
# 10. a shared design is not replicated K times
# --------------------------------------------------------------------------

def test_alsgls_shared_design_is_not_replicated():
    """Pins: ALSGLS turned a shared (N, p) design into a list of K references
    that validation stacked into a (K, N, p + 1) array: K N (p + 1) 8 bytes,
    (p + 1) = 6 times Y itself at N=200, p=5, K=1500 (measured before the fix:
    peak 9.4 x Y.nbytes)."""
    rng = np.random.default_rng(7)
    N, p, K = 200, 5, 1500
    X = rng.standard_normal((N, p))
    F = rng.standard_normal((K, 2))
    Y = (X @ rng.standard_normal((p, K)) + rng.standard_normal((N, 2)) @ F.T
         + rng.standard_normal((N, K)))
    est = _estimator()(rank=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            est.fit(X, Y)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    ratio = peak / Y.nbytes
    assert ratio < 4.0, f"peak traced memory {peak / 2**20:.1f} MiB = {ratio:.2f} x Y.nbytes"


# --------------------------------------------------------------------------
# 11. inputs are never modified
# --------------------------------------------------------------------------

def _unchanged(before, after):
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_als_gls_with_missing_and_weights_leaves_inputs_alone():
    """Pins: inputs must survive the missing-data/weights path unmodified."""
    Xs, Y = _system()
    Y = _with_nan(Y)
    w = np.random.default_rng(3).uniform(0.5, 2.0, Y.shape[0])
    copies = [x.copy() for x in Xs] + [Y.copy(), w.copy()]
    _record(als_gls, Xs, Y, 1, weights=w)
    _unchanged(copies, Xs + [Y, w])


def test_sur_fit_leaves_inputs_alone():
    """Pins: SUR construction/fit (missing responses, weights) must not write
    into the caller's arrays."""
    Xs, Y = _system()
    Y = _with_nan(Y)
    w = np.random.default_rng(4).uniform(0.5, 2.0, Y.shape[0])
    copies = [x.copy() for x in Xs] + [Y.copy(), w.copy()]
    _record(lambda: SUR.from_arrays(Xs, Y, rank=1, weights=w).fit())
    _unchanged(copies, Xs + [Y, w])


@pytest.mark.parametrize("form", ["shared", "system", "shared-missing"])
def test_alsgls_fit_leaves_inputs_alone(form):
    """Pins: ALSGLS.fit (shared design, per-equation designs, missing outputs)
    must not write into X or Y."""
    Xs, Y = _system()
    if form == "shared-missing":
        Y = _with_nan(Y)
    X = Xs[0] if form.startswith("shared") else Xs
    copies = ([X.copy()] if form.startswith("shared") else [x.copy() for x in Xs]) + [Y.copy()]
    est = _estimator()(rank=1, missing="ml" if form == "shared-missing" else "raise")
    _record(est.fit, X, Y)
    _unchanged(copies, ([X] if form.startswith("shared") else Xs) + [Y])


# --------------------------------------------------------------------------
# 12. review fixes: compatibility, folds, shared weighted designs, messages
# --------------------------------------------------------------------------

def test_old_module_paths_work_as_attributes_and_imports():
    """alsgls 0.1's flat modules stay reachable, with a DeprecationWarning
    attributed to the caller; split modules keep their names."""
    with pytest.warns(DeprecationWarning, match="moved") as rec:
        assert alsgls.system.SUR is alsgls.SUR
    assert rec[0].filename == __file__
    with pytest.warns(DeprecationWarning) as rec:
        from alsgls.als import DENSE_EIG_LIMIT
        from alsgls.als import als_gls as old_als_gls
    assert old_als_gls is alsgls.als_gls and DENSE_EIG_LIMIT > 0
    assert all(w.filename == __file__ for w in rec)


def test_fold_that_loses_a_design_column_is_named():
    """A subset (a cross-validation fold) on which a dummy column vanishes is
    refused with the equation and the subset named, not a deep solver error."""
    from alsgls.core.problem import build_problem

    Xs, Y = _system(N=60, K=4)
    Xs[0] = np.column_stack([Xs[0], np.r_[1.0, 1.0, np.zeros(58)]])
    prob = build_problem(Xs, Y)
    with pytest.raises(ValueError, match=r"equation 0 on fold 2 column 2 is identically zero"):
        prob.take(np.arange(10, 60), "fold 2")
    test_fold = prob.take(np.arange(10, 60), check=False)   # evaluated on only: no check
    assert test_fold.N == 50


def test_weighted_shared_design_stays_one_array():
    from alsgls.core.problem import build_problem

    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((100, 3)), rng.standard_normal((100, 50))
    prob = build_problem(X, Y, weights=rng.uniform(0.5, 2.0, 100)).scaled()
    assert prob.shared and prob.X.strides[0] == 0 and prob.w is None


def test_em_gls_refuses_anderson_and_names_its_alternatives():
    Xs, Y = _system()
    with pytest.raises(ValueError, match="accelerate"):
        em_gls(Xs, Y, 1, accelerate="anderson")
    Yn = Y.copy()
    Yn[0, 0] = np.nan
    with pytest.raises(ValueError, match="em_gls needs complete data"):
        em_gls(Xs, Yn, 1)
    with pytest.raises(TypeError, match="accelerate"):
        als_gls(Xs, Y, 1, accelerate=True)      # not an ALS option


def test_impute_and_observed_nll_check_their_arguments():
    from alsgls import impute, observed_nll_per_row

    Xs, Y = _system()
    fit = als_gls(Xs, Y, 1)
    with pytest.raises(TypeError, match="fit must be a GLSFit"):
        impute(None, Xs, Y)
    with pytest.raises(ValueError, match=r"Xs\[1\] has 1 columns but equation 1"):
        impute(fit, [Xs[0], Xs[1][:, :1]] + Xs[2:], Y)
    with pytest.raises(ValueError, match="D must be finite and strictly positive"):
        observed_nll_per_row(Xs, Y, fit.B, fit.F, -fit.D)


def test_an_offset_is_not_an_exact_fit():
    """Y + 1e7 with an intercept in every design is an ordinary system (the old
    check compared the residual variance with mean(y^2), not the variance)."""
    Xs, Y, _ = simulate_sur(N=200, K=5, p=2, k=1, seed=3, intercept=True)
    base = als_gls(Xs, Y, 1)
    shifted = als_gls(Xs, Y + 1e7, 1)
    assert shifted.converged
    np.testing.assert_allclose([b[1:] for b in shifted.B], [b[1:] for b in base.B],
                               rtol=1e-5, atol=1e-6)


def test_glsnormal_operator_equals_the_dense_information():
    from alsgls import GLSNormalOperator
    from alsgls.core.problem import build_problem
    from alsgls.stats.inference import dense_information

    Xs, Y = _system(K=4)
    Xs[2] = Xs[2][:, :1]
    prob = build_problem(Xs, Y)
    fit = als_gls(Xs, Y, 1)
    A = dense_information(prob.X, prob.p, fit.cov)
    for op in (GLSNormalOperator(prob.X, prob.p, fit.cov),
               GLSNormalOperator(prob.X, prob.p, fit.cov, prob.gram)):
        np.testing.assert_allclose(op @ np.eye(A.shape[0]), A, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------
# 13. second review: 0.1 behaviours kept
# --------------------------------------------------------------------------

def test_random_state_accepts_none_and_generators():
    Xs, Y = _system()
    for rs in (None, np.random.default_rng(3), np.random.SeedSequence(4)):
        assert als_gls(Xs, Y, 1, random_state=rs).converged
    assert _estimator()(rank=1, random_state=None).fit(Xs[0], Y).rank_ == 1
    with pytest.raises(TypeError, match="random_state"):
        als_gls(Xs, Y, 1, random_state=np.random.RandomState(0))


def test_als_gls_missing_routes_both_limits_as_in_0_1():
    """0.1 let one call carry both limits: max_sweeps for the balanced fit,
    max_iter for the missing-data fit."""
    Xs, Y = _system()
    with pytest.warns(DeprecationWarning, match="max_sweeps"):
        fit = als_gls_missing(Xs, Y, 1, max_sweeps=300, max_iter=1)
    assert fit.converged and fit.method == "als"
    with pytest.warns(DeprecationWarning), pytest.warns(alsgls.ConvergenceWarning):
        fit = als_gls_missing(Xs, _with_nan(Y), 1, max_sweeps=300, max_iter=1)
    assert fit.n_iter == 1 and fit.method == "em-missing"


def test_split_old_modules_export_their_0_1_names_only():
    import importlib

    with pytest.warns(DeprecationWarning):
        import alsgls.missing as old
    ns: dict = {}
    exec("from alsgls.missing import *", ns)
    assert {"fit_missing", "MissingGLSFit", "MissingDataWarning"} <= set(ns)
    assert "em_gls" not in ns and not hasattr(old, "Problem")
    importlib.reload(old)                       # the alias keeps a spec of its own


def test_dense_em_refuses_anderson_through_sur_too():
    Xs, Y = _system()
    with pytest.raises(ValueError, match="anderson"):
        SUR.from_arrays(Xs, Y, rank=1).fit(solver="em", accelerate="anderson")


def test_take_accepts_masks_and_refuses_empty_subsets():
    from alsgls.core.problem import build_problem

    Xs, Y = _system()
    prob = build_problem(Xs, Y, weights=np.linspace(0.5, 2.0, Y.shape[0]))
    mask = np.arange(Y.shape[0]) % 3 > 0
    a, b = prob.take(mask), prob.take(np.flatnonzero(mask))
    np.testing.assert_array_equal(a.Yt, b.Yt)
    assert np.isclose(a.w.mean(), 1.0)
    with pytest.raises(ValueError, match="non-empty"):
        prob.take(np.zeros(0, dtype=int), check=False)
    with pytest.raises(ValueError, match="complete responses"):
        build_problem(Xs, _with_nan(Y), weights=np.ones(Y.shape[0])).scaled()


def test_a_fit_pickled_before_profile_evaluations_loads():
    import pickle

    Xs, Y = _system()
    fit = als_gls(Xs, Y, 1)
    old_state = {k: v for k, v in vars(fit).items() if k != "profile_evaluations"}
    clone = object.__new__(type(fit))
    clone.__setstate__(old_state)
    assert clone.profile_evaluations.size == 0 and clone.nll == fit.nll
    assert pickle.loads(pickle.dumps(fit)).n_iter == fit.n_iter
