"""Bad input gets a clear error naming the argument and the equation."""


import numpy as np
import pytest

from alsgls import IdentificationWarning, als_gls, em_gls, simulate_sur


@pytest.fixture
def sys3():
    Xs, Y, _ = simulate_sur(N=40, K=3, p=2, k=1, seed=0)
    return Xs, Y


@pytest.mark.parametrize("solver", [als_gls, em_gls])
def test_nan_and_inf(sys3, solver):
    Xs, Y = sys3
    Yb = Y.copy()
    Yb[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"Y contains NaN or inf \(first at index \(3, 1\)\)"):
        solver(Xs, Yb, 1)
    Yb[3, 1] = np.nan  # a missing response: em_gls refuses, als_gls only when told to
    with pytest.raises(ValueError, match="NaN"):
        if solver is als_gls:
            solver(Xs, Yb, 1, missing="raise")
        else:
            solver(Xs, Yb, 1)
    Xb = [x.copy() for x in Xs]
    Xb[2][0, 0] = np.inf
    with pytest.raises(ValueError, match=r"Xs\[2\] contains NaN or inf"):
        solver(Xb, Y, 1)


def test_shapes(sys3):
    Xs, Y = sys3
    with pytest.raises(ValueError, match="Xs has 2 equations but Y has K=3"):
        als_gls(Xs[:2], Y, 1)
    with pytest.raises(ValueError, match=r"Xs\[1\] has 39 rows but Y has 40"):
        als_gls([Xs[0], Xs[1][:-1], Xs[2]], Y, 1)
    with pytest.raises(ValueError, match="Y must be 2-D"):
        als_gls(Xs, Y[:, 0], 1)
    with pytest.raises(ValueError, match="Y must be 2-D"):
        als_gls(Xs, Y[None], 1)
    with pytest.raises(ValueError, match=r"Xs\[0\] must be 2-D"):
        als_gls([Xs[0][:, 0], Xs[1], Xs[2]], Y, 1)
    with pytest.raises(TypeError, match="Xs must be a list"):
        als_gls("abc", Y, 1)
    with pytest.raises(ValueError, match=r"Xs\[1\] has no columns"):
        als_gls([Xs[0], np.zeros((40, 0)), Xs[2]], Y, 1)


def test_dtypes(sys3):
    Xs, Y = sys3
    with pytest.raises(TypeError, match="Y must be numeric"):
        als_gls(Xs, Y.astype(str), 1)
    with pytest.raises(TypeError, match=r"Xs\[1\] must be numeric"):
        als_gls([Xs[0], Xs[1].astype(object), Xs[2]], Y, 1)
    with pytest.raises(TypeError, match="must be real"):
        als_gls(Xs, Y.astype(complex), 1)


@pytest.mark.parametrize("k,exc,msg", [
    (-1, ValueError, "non-negative"),
    (1.5, TypeError, "non-negative integer"),
    ("2", TypeError, "non-negative integer"),
    (True, TypeError, "non-negative integer"),
    (3, ValueError, "smaller than the number of equations K=3"),
])
def test_bad_rank(sys3, k, exc, msg):
    Xs, Y = sys3
    with pytest.raises(exc, match=msg):
        als_gls(Xs, Y, k)


def test_ledermann_warns_not_refuses(sys3):
    Xs, Y = sys3
    with pytest.warns(IdentificationWarning, match="Ledermann"):
        fit = als_gls(Xs, Y, 2)
    assert fit.converged


def test_too_few_rows():
    Xs, Y, _ = simulate_sur(N=5, K=6, p=3, k=1, seed=0)
    with pytest.raises(ValueError, match=r"N=5 rows is too few.*N > k \+ max p_j = 2 \+ 3"):
        als_gls(Xs, Y, 2)


def test_rank_deficient_design_names_equation_and_column(sys3):
    Xs, Y = sys3
    bad = np.column_stack([Xs[1], 2.0 * Xs[1][:, 0] - Xs[1][:, 1]])
    with pytest.raises(ValueError, match=r"Xs\[1\] is rank deficient.*column \d.*drop"):
        als_gls([Xs[0], bad, Xs[2]], Y, 1)
    zero = np.column_stack([Xs[2], np.zeros(40)])
    with pytest.raises(ValueError, match=r"Xs\[2\] column 2 is identically zero"):
        em_gls([Xs[0], Xs[1], zero], Y, 1)


def test_column_rescaling_is_harmless():
    Xs, Y, _ = simulate_sur(N=100, K=6, p=2, k=1, seed=3)
    scaled = [x * np.array([1e6, 1e-4]) for x in Xs]
    a = als_gls(Xs, Y, 1, tol=1e-14)
    b = als_gls(scaled, Y, 1, tol=1e-14)
    # the preconditioned iteration is scale-invariant in exact arithmetic;
    # 1e10 spread in column scales costs a few digits of round-off: rtol 1e-6
    np.testing.assert_allclose(b.B[0].ravel() * [1e6, 1e-4], a.B[0].ravel(), rtol=1e-6)


def test_zero_residual_variance(sys3):
    Xs, Y = sys3
    Yb = Y.copy()
    Yb[:, 2] = Xs[2] @ np.array([1.0, -2.0])
    with pytest.raises(ValueError, match="equation 2 has zero residual variance"):
        als_gls(Xs, Yb, 1)


@pytest.mark.filterwarnings("ignore::alsgls.HeywoodWarning")
def test_single_equation_and_pandas(sys3):
    pd = pytest.importorskip("pandas")
    Xs, Y = sys3
    fit = als_gls([pd.DataFrame(x) for x in Xs], pd.DataFrame(Y), 1)
    ref = als_gls(Xs, Y, 1)
    np.testing.assert_allclose(fit.D, ref.D)
    one = als_gls(Xs[:1], Y[:, :1], 0)
    assert one.F.shape == (1, 0)
