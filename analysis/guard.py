"""The learning guard: did a hypothesis's reference runs learn? See ``analysis.verdict``
for how verdicts use it.

Per stratum (origin, dataset, architecture, feature extractor) the reference runs — the
configurations a hypothesis names (:class:`Reference`), or, where the stratum has none, its best
configuration — learned when their median quality (``analysis.scale``) is ≥ ``q_broken``; Inception
rows without a scale use the paper's rule (median FID < ``fid_cap``); otherwise learning is unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.outcome import config_key
from analysis.frames import config_label, guard_key, ids, prep, stratum_name
from analysis.scale import FID_CAP_INCEPTION, Q_LEARNED, TOY_MODES, describe_scale, fmt
from trainables.names import DATASET, DIVERGED, FID


@dataclass(frozen=True)
class Reference:
    """The reference configurations of a quality hypothesis: ``select`` marks them on a
    :func:`prep` frame; None = no named configuration (the best one of each stratum is used)."""
    text: str
    select: Callable[[pd.DataFrame], pd.Series] | None = None


@dataclass
class GuardResult:
    info: dict[tuple, dict]            # stratum → status, text, ref run ids, named
    kept: list[tuple]
    dropped: list[tuple]

    def strata_of(self, frame: pd.DataFrame, run_ids: Iterable[str]) -> list[tuple]:
        rid = set(map(str, run_ids))
        if not rid or frame.empty:
            return []
        keys = guard_key(frame)[frame["run_id"].astype(str).isin(rid)]
        return [k for k in dict.fromkeys(keys) if k in self.info]

    def status(self, keys: list[tuple]) -> str:
        st = {self.info[k]["status"] for k in keys}
        if st == {"did not learn"}:
            return "reference runs did not learn"
        if st == {"unknown"}:
            return "learning unknown (no FID scale)"
        return "reference runs did not learn / learning unknown" if st else ""

    def text(self, keys: list[tuple]) -> str:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return ""
        return " ".join(self.info[k]["text"] + "." for k in keys)


def _q_eff(df: pd.DataFrame) -> pd.Series:
    q = df["quality"].astype(float).copy()
    q[df[DIVERGED].astype(bool)] = -np.inf
    return q


def _best_config(g: pd.DataFrame) -> pd.DataFrame:
    keys = config_key(g).map(repr)
    q = _q_eff(g)
    score = {}
    for k, idx in keys.groupby(keys).groups.items():
        qk = q[idx].dropna()
        if len(qk):
            score[k] = (1, float(qk.median()))
        else:
            f = g.loc[idx, "fid_eff"].astype(float).dropna()
            score[k] = (0, -float(f.median()) if len(f) else -np.inf)
    best = max(score, key=score.get)
    return g[keys == best]


def learning_guard(frame: pd.DataFrame, ref: Reference, fid_cap: float = FID_CAP_INCEPTION,
                   q_broken: float = Q_LEARNED) -> GuardResult:
    """Per stratum: did the reference runs learn? (module docstring)."""
    df = prep(frame, fid_cap, q_broken)
    info: dict[tuple, dict] = {}
    if df.empty:
        return GuardResult(info, [], [])
    gk = guard_key(frame)
    df["_gk"] = gk[df.index].map(repr)
    for _, g in df.groupby("_gk", sort=False):
        key = gk[g.index[0]]
        sel = g[ref.select(g).astype(bool)] if ref.select is not None else g.iloc[0:0]
        named = len(sel) > 0
        if not named:
            sel = _best_config(g)
        label = config_label(sel)
        who = (f"reference runs ({ref.text}; {len(sel)} runs)" if named else
               f"no reference runs ({ref.text}) in this stratum, so its best configuration "
               f"({label}, {len(sel)} runs) stands in")
        q = _q_eff(sel)
        known = q.notna()
        ext = str(key[3])
        if known.any():
            learned = float(q[known].median()) >= q_broken
            desc = describe_scale(sel, q_broken)
        elif ext == "inception" and sel["fid_eff"].notna().any() and not (sel[DATASET].isin(list(TOY_MODES))).any():
            learned = float(sel["fid_eff"].astype(float).median()) < fid_cap
            raw = pd.to_numeric(sel[FID], errors="coerce") if FID in sel else pd.Series(dtype=float)
            raw = raw[np.isfinite(raw)]
            div = int(sel[DIVERGED].astype(bool).sum())
            desc = (f"median FID {fmt(raw.median() if len(raw) else np.nan, '.4g')}"
                    + (f", {div} of {len(sel)} diverged" if div else "")
                    + f" (Inception, no floor/untrained logged: the paper's rule, FID < {fid_cap:g} "
                      f"= learned; n = {len(sel)})")
        else:
            learned = None
            what = ("modes_covered / hq_share not logged" if sel[DATASET].isin(list(TOY_MODES)).any()
                    else "fid_floor / fid_init not logged (runs made before the FID scale) and the "
                         f"extractor is '{ext}', where the paper's FID-{fid_cap:g} rule does not apply")
            desc = f"learning cannot be judged: {what}"
        status = {True: "learned", False: "did not learn", None: "unknown"}[learned]
        if learned:
            text = f"{stratum_name(key)}: {who} learned: {desc}"
        elif learned is False:
            text = (f"reference runs did not learn: {desc} — {stratum_name(key)}, "
                    + (f"reference {ref.text}" if named else f"best configuration {label}"))
        else:
            text = f"{stratum_name(key)}: {desc}"
        info[key] = dict(status=status, text=text, run_ids=ids(sel), named=named)
    kept = [k for k, i in info.items() if i["status"] == "learned"]
    return GuardResult(info, kept, [k for k in info if k not in kept])


def quality_behind(frame: pd.DataFrame, run_ids: Iterable[str], fid_cap: float = FID_CAP_INCEPTION,
                   q_broken: float = Q_LEARNED) -> tuple[str, str]:
    """The sample quality of the runs behind a domain verdict, per stratum: (text, short status)."""
    rid = set(map(str, run_ids))
    if not rid:
        return "", ""
    sub = frame[frame["run_id"].astype(str).isin(rid)]
    df = prep(sub, fid_cap, q_broken)
    if df.empty:
        return "", ""
    gk = guard_key(sub)
    df["_gk"] = gk[df.index].map(repr)
    parts = []
    for _, g in df.groupby("_gk", sort=False):
        key = gk[g.index[0]]
        n = len(g)
        if g["learned"].notna().any():
            parts.append(f"{stratum_name(key)}: {int(g['learned'].fillna(False).sum())} of {n} runs "
                         f"learned; {describe_scale(g, q_broken)}")
        else:
            parts.append(f"{stratum_name(key)}: sample quality unknown for its {n} runs (no FID scale)")
    known = df["learned"].notna()
    short = (f"{int(df['learned'].fillna(False).sum())} of {int(known.sum())} runs learned"
             + (f", {int((~known).sum())} unknown" if (~known).any() else "")) if known.any() \
        else "sample quality unknown"
    return ("Sample quality of the runs behind this verdict (Ω/Ψ are properties of D, so no "
            "learning guard): " + "; ".join(parts) + "."), short
