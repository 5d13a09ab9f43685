"""Plain-text, HTML and LaTeX rendering of a SUR results summary.

A :class:`Summary` holds a system header (key/value pairs), one coefficient
table per shown equation and notes; it never computes statistics itself.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

__all__ = ["Summary", "EquationTable"]

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
        def tex(s: str) -> str:
            for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"),
                         ("&", r"\&"), ("#", r"\#"), ("$", r"\$"), ("|", r"$|$")):
                s = s.replace(a, b)
            return s

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
