"""The papers' published numbers, transcribed as tidy CSV (one row per cell, ``source`` names the table).

| file | source |
|---|---|
| lipschitz_table2.csv | Lipschitz paper Table 2: FID vs k_SN, 5 losses × MNIST/CIFAR10/CelebA, α = 1 |
| lipschitz_table5a.csv | Table 5a: FID vs α at k_SN = 50 (NS, LS, LS#, COS, EXP) |
| lipschitz_table5b.csv | Table 5b: FID vs α at k_SN = 1 |
| lipschitz_degenerate.csv | the degenerate-loss table (Sec. 4.3 / App. E.3): α = 1e-25, k_SN = 50 |
| lipschitz_fig1b.csv | Fig. 1b: Ω (= Ω∪ over training) and Ψ (Eq. 9) vs k_SN, NS and LS on CelebA |
| gran_tables.csv | GraN-GAN Tables 2 and 3: IS, FID, KID (KID stored ×1, the paper prints ×1000) |
| alr_table1.csv | ALR Table 1: IS and FID on CIFAR-10 (mean ± sd where given) |

Columns use the trial frame's names (``dataset``, ``loss``, ``regularizer``, ``k_sn``, ``alpha``, ``fid``,
``fid_extractor`` = inception, …) plus ``method`` (the paper's row label), ``table``, ``paper`` and
``notes``. Derived for the Lipschitz paper: ``n_d_layers`` (4 SN layers at 32 px, 5 at 64 px,
Appendix B), ``lipschitz_k`` = k_SN^n, ``omega_bound`` = K·2·√(m·n·c) (Theorem 1). The paper does not
state the number of FID samples (``fid_samples`` empty). "–" cells of GraN-GAN ("did not reach
FID < 70") have an empty ``fid`` and ``fid_censor`` = 70.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent

TABLES: dict[str, str] = {
    "lipschitz_table2": "Lipschitz paper Table 2",
    "lipschitz_table5a": "Lipschitz paper Table 5a",
    "lipschitz_table5b": "Lipschitz paper Table 5b",
    "lipschitz_degenerate": "Lipschitz paper degenerate-loss table",
    "lipschitz_fig1b": "Lipschitz paper Fig. 1b",
    "gran_tables": "GraN-GAN Tables 2-3",
    "alr_table1": "ALR Table 1",
}


def path(name: str) -> Path:
    if name not in TABLES:
        raise KeyError(f"unknown reference table {name!r}; known: {', '.join(TABLES)}")
    return HERE / f"{name}.csv"


def load(*names: str) -> pd.DataFrame:
    """The named tables (all when none is named) as one trial-style frame (origin = published)."""
    from analysis.load import concat, frame_from_csv

    names = names or tuple(TABLES)
    return concat(frame_from_csv(path(n), origin="published") for n in names)
