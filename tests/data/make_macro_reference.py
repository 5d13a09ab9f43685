"""Reference for the recursive macro system (``macro_system.py``): linearmodels'
iterated GLS (the unrestricted SUR MLE) -> ``macro_reference.json``.

Run from the repository root in an environment with linearmodels (see README.md
here): ``python tests/data/make_macro_reference.py``.
"""

import importlib.metadata as md
import json
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from macro_system import equations  # noqa: E402


def main() -> None:
    from linearmodels.system import SUR

    eqs = equations()
    res = SUR({k: {"dependent": y, "exog": X} for k, (y, X) in eqs.items()}).fit(
        method="gls", iterate=True, iter_limit=100000, tol=1e-15, cov_type="unadjusted")
    R = res.resids.to_numpy()
    N, K = R.shape
    S = R.T @ R / N
    llf = -N / 2 * (K * np.log(2 * np.pi) + np.linalg.slogdet(S)[1] + K)
    out = {
        "description": "linearmodels SUR iterated GLS (iterate=True, tol=1e-15) on the "
                       "recursive macro system of macro_system.py; llf profiled at the "
                       "final residuals (Sigma = R'R/N)",
        "nobs": N, "llf": llf,
        "params": dict(zip(res.params.index, res.params.to_numpy().tolist())),
        "std_errors": dict(zip(res.std_errors.index, res.std_errors.to_numpy().tolist())),
        "sigma_min_eigenvalue": float(np.linalg.eigvalsh(S).min()),
        "versions": {"python": platform.python_version(),
                     **{p: md.version(p) for p in ("linearmodels", "statsmodels", "numpy",
                                                   "pandas", "scipy")}},
    }
    path = Path(__file__).resolve().parent / "macro_reference.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}: llf {llf:.10f}")


if __name__ == "__main__":
    main()
