"""Figures, targets and the one table: median of the repetitions, min-max beside it.

A figure is a list of per-repetition values. A target is judged on the median;
a ratio target compares figures of the same repetition (alertd against the
ceiling or Alertmanager measured in that repetition) before taking the median.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: list[float]) -> float | None:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(clean) if clean else None


@dataclass
class Row:
    scenario: str
    figure: str
    values: list[float | None]
    fmt: Callable[[float], str]
    target: str = ""
    met: bool | None = None  # None: no target, or not judged (skipped / missing)
    note: str = ""

    def cells(self) -> list[str]:
        vals = [v for v in self.values if v is not None]
        if not vals:
            mid, spread = "-", ""
        else:
            mid = self.fmt(statistics.median(vals))
            spread = f"{self.fmt(min(vals))}-{self.fmt(max(vals))}" if len(vals) > 1 else ""
        verdict = "" if self.met is None else ("met" if self.met else "MISSED")
        if self.target and self.met is None:
            verdict = "n/a"
        return [self.scenario, self.figure, mid, spread, self.target, verdict, self.note]


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}/s"


def fmt_ratio(v: float) -> str:
    return f"{v:.3f}"


def fmt_ms(v: float) -> str:
    return f"{v * 1000:.1f} ms" if v < 10 else f"{v:.0f} s"


def fmt_s(v: float) -> str:
    return f"{v:.2f} s" if v < 100 else f"{v:.0f} s"


def fmt_mib(v: float) -> str:
    return f"{v / (1024 * 1024):.1f} MiB"


def fmt_int(v: float) -> str:
    return f"{v:,.0f}"


def fmt_us(v: float) -> str:
    return f"{v:.1f} us"


def fmt_busy(v: float) -> str:
    return f"{v:.0%}"


def fmt_pct(v: float) -> str:
    return f"{v:+.1f}%"


def table(rows: list[Row]) -> str:
    headers = ["scenario", "figure", "median", "min-max", "target", "verdict", "note"]
    cells = [r.cells() for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    out = [line, "-" * len(line)]
    last = None
    for c in cells:
        shown = list(c)
        if c[0] == last:
            shown[0] = ""
        last = c[0]
        out.append("  ".join(s.ljust(w) for s, w in zip(shown, widths, strict=True)).rstrip())
    return "\n".join(out)


def ratios(a: list[float | None], b: list[float | None]) -> list[float | None]:
    """a[i] / b[i] per repetition; None where either is missing."""
    out: list[float | None] = []
    for x, y in zip(a, b, strict=False):
        out.append(None if x is None or y is None or y == 0 else x / y)
    return out


def judge(values: list[float | None], ok: Callable[[float], bool]) -> bool | None:
    m = median([v for v in values if v is not None])
    return None if m is None else ok(m)
