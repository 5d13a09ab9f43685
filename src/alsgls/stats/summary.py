"""Plain-text, HTML and LaTeX rendering of SUR results tables.

A :class:`Summary` holds a system header (key/value pairs), one coefficient
table per shown equation and notes; a :class:`ColumnTable` is a grid of
formatted cells with named columns (equations or models side by side).
Neither computes statistics: they render what the results hand them.
:func:`tidy_table` turns named columns into a DataFrame (or a structured
ndarray without pandas).  :func:`summary_frame` and :func:`params_table`
assemble the tidy frame and the equations-as-columns table of a
:class:`~alsgls.SURResults` from its attributes (``SURResults.summary_frame``
and ``SURResults.params_table`` call them).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .. import _labels

__all__ = ["Summary", "EquationTable", "ColumnTable", "format_number", "stars_for",
           "tidy_table", "latex_escape", "summary_frame", "params_table", "normalise_stat",
           "method_text", "STAT_NAMES"]

#: p-value thresholds of the significance stars (``*``, ``**``, ``***``)
STAR_LEVELS = (0.1, 0.05, 0.01)

_TEX = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#",
        "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}", "|": r"$|$", "<": r"$<$", ">": r"$>$"}
_TEX_RE = re.compile("|".join(re.escape(c) for c in _TEX))


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (one pass)."""
    return _TEX_RE.sub(lambda m: _TEX[m.group(0)], str(text))


def format_number(x: float) -> str:
    """Four decimals, or four significant digits for tiny or huge values; ``""`` for NaN."""
    x = float(x)
    if np.isnan(x):
        return ""
    return f"{x:.4g}" if abs(x) < 1e-3 or abs(x) >= 1e5 else f"{x:.4f}"


def stars_for(pvalue: float) -> str:
    """``"***"``, ``"**"``, ``"*"`` below 0.01, 0.05, 0.1 (:data:`STAR_LEVELS`), else ``""``."""
    return "*" * sum(float(pvalue) < level for level in STAR_LEVELS)


def tidy_table(columns: Mapping[str, Any]) -> Any:
    """Named columns of equal length as a DataFrame with a default index, or a
    structured ndarray with the same field names when pandas is not installed
    (text columns become unicode fields, numbers float64)."""
    pd = _labels._pandas()
    if pd is not None:
        return pd.DataFrame({k: (list(v) if not isinstance(v, np.ndarray) else v)
                             for k, v in columns.items()})
    arrays = {k: np.asarray(v) for k, v in columns.items()}
    n = len(next(iter(arrays.values()))) if arrays else 0
    dtype = [(k, f"U{max([1] + [len(str(x)) for x in a])}") if a.dtype.kind in "OUS"
             else (k, np.float64) for k, a in arrays.items()]
    out = np.zeros(n, dtype=dtype)
    for k, a in arrays.items():
        out[k] = a
    return out

_COLS = ("coef", "std err", "stat", "P>|stat|", "lower", "upper")


@dataclass(frozen=True)
class EquationTable:
    """Coefficient table of one equation: rows ``(name, coef, se, stat, p, lo, hi)``.

    ``nobs`` (the equation's observed rows) is shown when given (unbalanced systems).
    """

    label: str
    dependent: str
    rsquared: float
    rows: list
    stat_name: str = "z"
    ci_level: float = 0.95
    nobs: int | None = None

    @property
    def nobs_text(self) -> str:
        return "" if self.nobs is None else f"    N: {self.nobs}"


@dataclass(frozen=True)
class Summary:
    """A rendered-on-demand summary.

    Attributes
    ----------
    title : str
    header : list of (str, str)
    tables : list of EquationTable
    notes : list of str
    """

    title: str
    header: list
    tables: list
    notes: list = field(default_factory=list)

    def _colnames(self, t: EquationTable) -> list[str]:
        lo = (1 - t.ci_level) / 2
        return ["", "coef", "std err", t.stat_name, f"P>|{t.stat_name}|",
                f"[{lo:.3g}", f"{1 - lo:.3g}]"]

    @staticmethod
    def _fmt(x: float) -> str:
        return f"{x:.4g}" if abs(x) < 1e-3 or abs(x) >= 1e5 else f"{x:.4f}"

    def as_text(self) -> str:
        """Fixed-width text."""
        width = 78
        lines = [self.title.center(width), "=" * width]
        half = (len(self.header) + 1) // 2
        left, right = self.header[:half], self.header[half:]
        for i in range(half):
            a = f"{left[i][0] + ':':<20}{left[i][1]:>18}"
            b = f"{right[i][0] + ':':<20}{right[i][1]:>18}" if i < len(right) else ""
            lines.append(f"{a}  {b}".rstrip())
        for t in self.tables:
            lines += ["", f"Equation: {t.label}    Dependent: {t.dependent}    "
                      f"R-squared: {t.rsquared:.4f}{t.nobs_text}".center(width), "-" * width]
            names = self._colnames(t)
            nw = max([len(r[0]) for r in t.rows] + [8])
            lines.append(f"{names[0]:<{nw}}" + "".join(f"{c:>11}" for c in names[1:]))
            lines.append("-" * width)
            for r in t.rows:
                lines.append(f"{r[0]:<{nw}}" + "".join(f"{self._fmt(v):>11}" for v in r[1:]))
        lines.append("=" * width)
        lines += self.notes
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.as_text()

    def __repr__(self) -> str:
        return self.as_text()

    def as_html(self) -> str:
        """HTML tables (one header table, one per equation)."""
        e = html.escape
        out = [f"<table class='simpletable'><caption>{e(self.title)}</caption>"]
        for k, v in self.header:
            out.append(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>")
        out.append("</table>")
        for t in self.tables:
            out.append(f"<table class='simpletable'><caption>Equation: {e(t.label)} "
                       f"(dependent: {e(t.dependent)}, R-squared {t.rsquared:.4f}"
                       f"{e(t.nobs_text.replace('    ', ', '))})</caption>")
            out.append("<tr>" + "".join(f"<th>{e(c)}</th>" for c in self._colnames(t)) + "</tr>")
            for r in t.rows:
                out.append(f"<tr><th>{e(r[0])}</th>"
                           + "".join(f"<td>{self._fmt(v)}</td>" for v in r[1:]) + "</tr>")
            out.append("</table>")
        out += [f"<p>{e(n)}</p>" for n in self.notes]
        return "\n".join(out)

    def _repr_html_(self) -> str:
        return self.as_html()

    def as_latex(self) -> str:
        """LaTeX ``tabular`` environments."""
        tex = latex_escape
        out = [r"\begin{center}", r"\begin{tabular}{lr}", r"\hline",
               rf"\multicolumn{{2}}{{c}}{{{tex(self.title)}}} \\", r"\hline"]
        out += [rf"{tex(k)} & {tex(str(v))} \\" for k, v in self.header]
        out += [r"\hline", r"\end{tabular}"]
        for t in self.tables:
            out += [r"\begin{tabular}{lrrrrrr}", r"\hline",
                    rf"\multicolumn{{7}}{{c}}{{Equation: {tex(t.label)}}} \\",
                    " & ".join(tex(c) for c in self._colnames(t)) + r" \\", r"\hline"]
            out += [tex(r[0]) + " & " + " & ".join(self._fmt(v) for v in r[1:]) + r" \\"
                    for r in t.rows]
            out += [r"\hline", r"\end{tabular}"]
        out += [tex(n) + r" \\" for n in self.notes]
        out.append(r"\end{center}")
        return "\n".join(out)


@dataclass(frozen=True)
class ColumnTable:
    """Formatted cells side by side: a stub of row labels and one column per
    equation (``SURResults.params_table``) or per model (``alsgls.compare``).

    Attributes
    ----------
    title : str
    columns : list of str
        Column headers.
    sections : list of list of (str, list of str)
        Row groups, separated by rules; a row is ``(label, cells)`` with one
        formatted cell per column.
    notes : list of str
        Lines printed under the table.
    """

    title: str
    columns: list
    sections: list
    notes: list = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.columns)
        for section in self.sections:
            for label, cells in section:
                if len(cells) != n:
                    raise ValueError(f"row {label!r} has {len(cells)} cells for {n} columns")

    @property
    def rows(self) -> list:
        """Every ``(label, cells)`` row, sections concatenated."""
        return [row for section in self.sections for row in section]

    def as_text(self) -> str:
        """Fixed-width text, columns right-aligned."""
        rows = self.rows
        stub = max([len(r[0]) for r in rows] + [1])
        widths = [max([len(str(c))] + [len(r[1][i]) for r in rows] + [8])
                  for i, c in enumerate(self.columns)]
        width = max(stub + sum(w + 2 for w in widths), len(self.title))

        def line(label: str, cells: list) -> str:
            return (f"{label:<{stub}}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths))
                    ).rstrip()

        out = [self.title.center(width).rstrip(), "=" * width,
               line("", [str(c) for c in self.columns])]
        for section in self.sections:
            out.append("-" * width)
            out += [line(label, cells) for label, cells in section]
        out.append("=" * width)
        out += self.notes
        return "\n".join(out)

    def __str__(self) -> str:
        return self.as_text()

    def __repr__(self) -> str:
        return self.as_text()

    def as_html(self) -> str:
        """One HTML table: a header row, one ``tbody`` per section, notes in ``tfoot``."""
        e = html.escape
        out = [f"<table class='simpletable'><caption>{e(self.title)}</caption>",
               "<thead><tr><th></th>" + "".join(f"<th>{e(str(c))}</th>" for c in self.columns)
               + "</tr></thead>"]
        for section in self.sections:
            out.append("<tbody>")
            out += [f"<tr><th>{e(label)}</th>" + "".join(f"<td>{e(c)}</td>" for c in cells)
                    + "</tr>" for label, cells in section]
            out.append("</tbody>")
        if self.notes:
            span = len(self.columns) + 1
            out.append("<tfoot>" + "".join(f"<tr><td colspan='{span}'>{e(n)}</td></tr>"
                                           for n in self.notes) + "</tfoot>")
        out.append("</table>")
        return "\n".join(out)

    def _repr_html_(self) -> str:
        return self.as_html()

    def as_latex(self) -> str:
        """A ``tabular`` (the title as a comment above it; notes in its last rows)."""
        tex = latex_escape
        n = len(self.columns)
        out = [f"% {self.title}", rf"\begin{{tabular}}{{l{'c' * n}}}", r"\hline",
               " & " + " & ".join(tex(str(c)) for c in self.columns) + r" \\"]
        for section in self.sections:
            out.append(r"\hline")
            out += [tex(label) + " & " + " & ".join(tex(c) for c in cells) + r" \\"
                    for label, cells in section]
        out.append(r"\hline")
        out += [rf"\multicolumn{{{n + 1}}}{{l}}{{\footnotesize {tex(note)}}} \\"
                for note in self.notes]
        out.append(r"\end{tabular}")
        return "\n".join(out)


# -- the tables of SURResults ---------------------------------------------------
#: accepted spellings of the second line of a coefficient table -> canonical name
STAT_NAMES = {"std_err": "std_err", "std_errors": "std_err", "bse": "std_err", "se": "std_err",
              "t": "t", "tstats": "t", "tvalues": "t", "z": "t",
              "p_value": "p_value", "pvalues": "p_value", "pvalue": "p_value"}
_STAT_NOTES = {"std_err": "Standard errors in parentheses.",
               "t": "{stat} statistics in parentheses.", "p_value": "P-values in parentheses."}


def normalise_stat(stat: Any) -> str | None:
    """The canonical precision statistic: ``"std_err"``, ``"t"``, ``"p_value"`` or None.

    Raises
    ------
    ValueError
        For another value (the message lists the choices).
    """
    if stat is None:
        return None
    key = str(stat).lower().replace("-", "_").replace(" ", "_")
    if key not in STAT_NAMES:
        raise ValueError(f"stat must be one of {sorted(set(STAT_NAMES.values()))} (or "
                         f"{sorted(set(STAT_NAMES) - set(STAT_NAMES.values()))}) or None, "
                         f"got {stat!r}")
    return STAT_NAMES[key]


def method_text(res: Any) -> str:
    """The estimator in words (``res.method`` when the results have it)."""
    m = getattr(res, "method", None)
    return {"ml": "ML", "twostep": "Two-step FGLS", "ols": "OLS", None: "ML"}.get(m, str(m))


def summary_frame(res: Any, alpha: float = 0.05) -> Any:
    """:meth:`SURResults.summary_frame`: one row per coefficient.

    Columns ``equation, regressor, coef, std_err, t`` (``z`` when not
    debiased) ``, p_value, ci_lower, ci_upper``; a DataFrame with a default
    index, or a structured ndarray with these fields without pandas.
    """
    ci = np.asarray(res.conf_int(alpha))
    labels = res.model.labels
    eq_of = [labels[j] for j in res.problem.layout.eq]
    reg = [n for e in res.model.equations for n in e.exog_names]
    return tidy_table({"equation": eq_of, "regressor": reg,
                       "coef": np.asarray(res.params, dtype=np.float64),
                       "std_err": np.asarray(res.bse, dtype=np.float64),
                       "t" if res.debiased else "z": np.asarray(res.tvalues, dtype=np.float64),
                       "p_value": np.asarray(res.pvalues, dtype=np.float64),
                       "ci_lower": ci[:, 0], "ci_upper": ci[:, 1]})


def coefficient_cells(b: float, se: float, t: float, p: float, stat: str | None,
                      stars: bool) -> tuple[str, str | None]:
    """The two cells of a coefficient: ``"0.1234**"`` and ``"(0.0456)"`` (or None)."""
    top = format_number(b) + (stars_for(p) if stars else "")
    if stat is None:
        return top, None
    second = {"std_err": se, "t": t, "p_value": p}[stat]
    return top, f"({format_number(second)})"


def params_table(res: Any, stat: str | None = "std_err", *, stars: bool = False,
                 equations: Sequence | None = None) -> ColumnTable:
    """:meth:`SURResults.params_table`: equations as columns, regressors as rows."""
    stat = normalise_stat(stat)
    if not isinstance(stars, (bool, np.bool_)):
        raise TypeError(f"stars must be True or False, got {stars!r}")
    eqmap = res.equations
    if equations is None:
        chosen = list(range(len(eqmap)))
    elif isinstance(equations, (str, bytes)) or not isinstance(equations, Sequence):
        raise TypeError(f"equations must be a list of labels or positions, got {equations!r}")
    else:
        chosen = [eqmap._position(e) for e in equations]
    b, se, t, p = (np.asarray(v, dtype=np.float64)
                   for v in (res.params, res.bse, res.tvalues, res.pvalues))
    eqs = [eqmap[j] for j in chosen]
    where = [{n: e._sl.start + i for i, n in enumerate(e.exog_names)} for e in eqs]
    regressors = list(dict.fromkeys(n for e in eqs for n in e.exog_names))
    body = []
    for name in regressors:
        top, second = [], []
        for pos in where:
            if name in pos:
                i = pos[name]
                c1, c2 = coefficient_cells(b[i], se[i], t[i], p[i], stat, stars)
            else:
                c1, c2 = "", ""
            top.append(c1)
            second.append(c2 or "")
        body.append((name, top))
        if stat is not None:
            body.append(("", second))
    fit_rows = [("R-squared", [f"{e.rsquared:.4f}" for e in eqs]),
                ("Adj. R-squared", [f"{e.rsquared_adj:.4f}" for e in eqs]),
                ("N", [str(e.nobs) for e in eqs])]
    notes = _table_notes(stat, stars, "t" if res.debiased else "z")
    notes.append(f"{method_text(res)}, factor rank {res.rank}, cov. estimator {res.cov_type}"
                 + (" (debiased)" if res.debiased else "") + ".")
    return ColumnTable("SUR estimation results", [e.label for e in eqs],
                       [[("Dependent", [e.dependent for e in eqs])], body, fit_rows], notes)


def _table_notes(stat: str | None, stars: bool, stat_name: str) -> list[str]:
    notes = [] if stat is None else [_STAT_NOTES[stat].format(stat=stat_name)]
    if stars:
        notes.append("* p<0.1, ** p<0.05, *** p<0.01")
    return notes
