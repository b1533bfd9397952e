"""Per-trial figures logged as MLflow artifacts (matplotlib, Agg backend: no display needed).

:func:`omega_interval_figure` — the Lipschitz paper's Fig. 1a for one trial: the domain Ω of the
loss over training, i.e. the interval [min f, max f] of the discriminator outputs on the real batch
and on the generated batch at every measured step, with the running union Ω∪. A second panel puts
the width of Ω∪ beside Theorem 1's bound K·2√(m·n·c) (Eq. 7), which it must stay under.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib

from trainables.names import OMEGA_UNION_MAX, OMEGA_UNION_MIN

matplotlib.use("Agg", force=False)


def omega_interval_figure(history: Mapping[str, Sequence[tuple[int, float]]], *,
                          title: str = "", bound: float | None = None):
    """A figure from metric histories ``{key: [(step, value), …]}`` with the keys
    ``omega_{real,fake}_{min,max}`` (and optionally ``omega_union_{min,max}``)."""
    import matplotlib.pyplot as plt

    def series(key):
        pts = sorted(history.get(key, ()))
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, (ax, ax_w) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1.3]})
    for side, color in (("real", "tab:blue"), ("fake", "tab:red")):
        s_lo, lo = series(f"omega_{side}_min")
        s_hi, hi = series(f"omega_{side}_max")
        if s_lo and s_lo == s_hi:
            ax.fill_between(s_lo, lo, hi, color=color, alpha=0.3, step=None,
                            label=f"Ω {side}: [min f, max f]")
            ax.plot(s_lo, lo, color=color, lw=0.8)
            ax.plot(s_hi, hi, color=color, lw=0.8)
    s_ulo, ulo = series(OMEGA_UNION_MIN)
    s_uhi, uhi = series(OMEGA_UNION_MAX)
    if s_ulo and s_ulo == s_uhi:
        ax.plot(s_ulo, ulo, "k--", lw=1, label="Ω∪ (running union)")
        ax.plot(s_uhi, uhi, "k--", lw=1)
        width = [h - lo_ for lo_, h in zip(ulo, uhi)]
        ax_w.plot(s_ulo, width, "k-", lw=1.2, label="|Ω∪|")
    if bound is not None and math.isfinite(bound) and s_ulo:
        ax_w.axhline(bound, color="tab:green", lw=1.2, label=f"Thm 1 bound {bound:.3g}")
    ax.set_ylabel("discriminator output f(x)")
    ax.set_title(title or "Domain Ω of the loss over training (Lipschitz paper Fig. 1a)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    ax_w.set_xlabel("iteration")
    ax_w.set_ylabel("width of Ω")
    if ax_w.lines:
        ymax = max(max(line.get_ydata()) for line in ax_w.lines)
        if ymax > 0 and bound is not None and math.isfinite(bound) and bound > 100 * max(
                max(width) if s_ulo else 0, 1e-12):
            ax_w.set_yscale("log")
        ax_w.legend(loc="best", fontsize=8)
    ax_w.grid(alpha=0.3)
    fig.tight_layout()
    return fig
