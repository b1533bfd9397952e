"""Evaluating one trial: FID/KID on a fixed z (or the 2-D toys' metrics), sample grids, and the FID
scale every image run carries.

FID (Heusel et al. 2017) is computed by :mod:`trainables.metrics.fid` (clean-fid protocol) on
``fid_samples`` generated images against the reference split, always from the same seeded z, so
successive evaluations differ only by G.

**The FID scale** (docs/design.md "The FID scale of every run"): an FID means nothing without
what real data and an untrained generator score at the same N, extractor, split and resolution.

* ``fid_floor`` — FID of N real training images against the reference split (:func:`fid.fid_floor`:
  a fixed subset, cached with the reference features). Logged once, at step 0.
* ``fid_init`` — the untrained generator's FID on the evaluations' own z stream, i.e. exactly what
  ``evaluate()`` returns before the first step. Logged once, at step 0; kept in the trial state, so
  a resumed trial neither recomputes nor re-logs it.
* ``fid_quality`` = log(fid_init / fid) / log(fid_init / fid_floor), with every ``fid``:
  0 = the untrained generator, 1 = real data. The raw value is logged, never clipped: < 0 is worse
  than the untrained G, > 1 closer to the reference than N real training images (sampling noise
  or memorization). NaN where it is undefined (fid non-finite or ≤ 0, fid_init ≤ fid_floor).
* ``fid_floor_final``, ``fid_init_final``, ``fid_quality_final`` — the same for ``fid_final``, at
  the final evaluation's own N and z (FID is biased by N: a scale is never mixed across N). When
  the final evaluation reuses the last regular one they equal ``fid_floor``/``fid_init``; otherwise
  the floor is taken at ``fid_final_samples`` and the untrained G (rebuilt from the seed,
  :meth:`GANTrial.initial_generator`) is evaluated on the final z. Logged with the final metrics.

Nothing here is extractor-specific (domain or Inception alike). The 2-D toys get no scale: they are
judged by ``modes_covered`` / ``hq_share`` and their combination ``toy_quality`` (Srivastava et
al.'s mixture-of-Gaussians measures, as in Roth et al. App. 7.3; :mod:`trainables.metrics.toy_quality`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torchvision.utils import make_grid

from trainables.data import datasets as data_lib
from trainables import names, streams
from trainables.metrics.lipschitz_bound import certified_lipschitz
from trainables.nets.models import eval_mode
from trainables.streams import EVAL_Z, FINAL_Z, GRID_Z
from trainables.metrics.toy_quality import TOY_QUALITY, TOY_QUALITY_WORST, toy_quality

#: Cap on the reference set used for FID statistics (the paper-scale convention is 50k).
FID_REF_MAX = 50_000


def resolved_extractor(cfg: dict[str, Any]) -> str:
    """The feature extractor an image trial's FID uses: ``fid_extractor`` with ``auto`` resolved
    against the size of the reference split (``fid.resolve_extractor``); the MLflow param
    ``fid_extractor`` records this name."""
    from trainables.metrics import fid as fid_lib

    n_ref = data_lib.reference_size(cfg[names.DATASET], cfg[names.DATA_ROOT],
                                    cfg[names.FID_REF_SPLIT])
    return fid_lib.resolve_extractor(cfg[names.FID_EXTRACTOR], n_ref)


#: Evaluation metrics that the final evaluation logs as ``<key>_final``.
_FINAL_KEYS = (names.FID, names.KID, names.MODES_COVERED, names.HQ_SHARE, TOY_QUALITY)
#: Samples in the fixed-z grid logged at every evaluation.
GRID_SAMPLES = 64
#: How many of the final evaluation's samples are handed to ``Callbacks.on_final``.
FINAL_KEEP = 1000


def fid_quality(fid: float, fid_init: float, fid_floor: float) -> float:
    """log(fid_init / fid) / log(fid_init / fid_floor), unclipped; NaN where undefined."""
    vals = (fid, fid_init, fid_floor)
    if not all(math.isfinite(v) and v > 0 for v in vals) or fid_init <= fid_floor:
        return math.nan
    return math.log(fid_init / fid) / math.log(fid_init / fid_floor)


class Evaluator:
    """The evaluation side of one trial: extractor, reference features, floors (built lazily, once;
    never drawing from the training RNGs)."""

    def __init__(self, cfg: dict[str, Any], device: torch.device,
                 train_data: data_lib.ImageSet | None):
        self.cfg, self.device, self.train_data = cfg, device, train_data
        self.toy = cfg[names.DATASET] in data_lib.TOY_DATASETS
        self._extractor = None
        self._ref_feats: np.ndarray | None = None
        self._ref_stats: tuple[np.ndarray, np.ndarray] | None = None
        self._ref_n = 0
        self._floors: dict[int, float | None] = {}

    def z_stream(self, offset: int) -> torch.Generator:
        return streams.stream(self.cfg[names.SEED], offset, self.device)

    @torch.no_grad()
    def generate(self, G: torch.nn.Module, n: int, gen: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.cfg[names.Z_DIM], device=self.device, generator=gen)
        return G(z).float()

    def sample_grid(self, G: torch.nn.Module) -> torch.Tensor:
        """A fixed-z grid of 64 samples (same z at every evaluation), 3×H×W in [0, 1]."""
        with eval_mode(G):
            x = self.generate(G, GRID_SAMPLES, self.z_stream(GRID_Z)).cpu()
        if self.toy:
            from trainables.data.toys import toy_plane_coords  # 3-D toys: seen in the mixture's plane

            ds = self.cfg[names.DATASET]
            modes = data_lib.toy_modes(ds)
            return _scatter_grid(toy_plane_coords(ds, x), toy_plane_coords(ds, modes))
        return make_grid(x, nrow=8, normalize=True, value_range=(-1, 1), padding=2)

    def evaluate(self, G: torch.nn.Module, final: bool = False, keep_images: int = 0,
                 fid_inf: bool | None = None) -> dict[str, Any]:
        """FID/KID of ``G`` on ``fid_samples`` (or the toy metrics); ``final=True``: on
        ``fid_final_samples`` from the final z stream, keys ``fid_final``, ``kid_final``,
        ``fid_final_samples`` (+ ``fid_inf``, unless ``fid_inf=False``). ``keep_images`` > 0 also
        returns that many samples as uint8 under ``"images"``."""
        cfg = self.cfg
        n = cfg[names.FID_SAMPLES]
        if final:
            n = cfg.get(names.FID_FINAL_SAMPLES) or cfg[names.FID_SAMPLES]
        gen = self.z_stream(FINAL_Z if final else EVAL_Z)
        with eval_mode(G):
            if self.toy:
                res, images = self._evaluate_toy(G, gen, n), None
            else:
                inf = final and bool(cfg.get(names.FID_INF)) if fid_inf is None else fid_inf
                res, images = self._evaluate_images(G, gen, n, inf, keep_images)
        if final:
            res = {(names.FID_FINAL_SAMPLES if k == names.FID_SAMPLES else
                    f"{k}_final" if k in _FINAL_KEYS else k): v
                   for k, v in res.items()}
            res[names.FID_FINAL_SAMPLES] = float(n)
        if keep_images:
            res["images"] = images
        return res

    def _setup(self) -> None:
        """Extractor and reference features, once. Under ``fork_rng``: building an extractor
        initializes modules from the global RNG, which training (GP, ALR) draws from."""
        from trainables.metrics import fid as fid_lib

        if self._extractor is not None:
            return
        cfg = self.cfg
        with torch.random.fork_rng(devices=[]):
            name = resolved_extractor(cfg)
            extractor = fid_lib.get_extractor(name, self.device)
        ref = data_lib.load_images(cfg[names.DATASET], cfg[names.DATA_ROOT], cfg[names.RESOLUTION],
                                   cfg[names.FID_REF_SPLIT], cfg[names.DOWNLOAD])
        self._ref_n = min(len(ref), FID_REF_MAX)
        self._ref_feats = fid_lib.reference_features(
            dataset_key(cfg), cfg[names.FID_REF_SPLIT], cfg[names.RESOLUTION], name, self._ref_n,
            lambda: ref.batch(torch.arange(self._ref_n)), extractor=extractor,
        )
        self._ref_stats = fid_lib.feature_stats(self._ref_feats, self.device)
        self._extractor = extractor

    def _evaluate_images(self, G, gen: torch.Generator, n: int, fid_inf: bool, keep_images: int):
        from trainables.metrics import fid as fid_lib

        self._setup()
        res = fid_lib.evaluate(lambda b: self.generate(G, b, gen), n, self._ref_feats,
                               self._extractor, batch_size=min(250, n), device=self.device,
                               ref_stats=self._ref_stats, fid_inf=fid_inf,
                               keep_images=keep_images)
        out = {names.FID: float(res[names.FID]), names.KID: float(res[names.KID]),
               names.FID_REF_SAMPLES: float(self._ref_n)}
        if names.FID_INF in res:
            out[names.FID_INF] = float(res[names.FID_INF])
        return out, res.get("images")

    def _evaluate_toy(self, G, gen: torch.Generator, n: int) -> dict[str, float]:
        """2-D toys: data-space Fréchet distance, modes covered, share of high-quality samples
        (within 3σ of a mode) and their combination ``toy_quality`` (``trainables.metrics.toy_quality``:
        the objective a toy search optimises), on ``n`` samples."""
        from trainables.metrics.fid import fid_from_stats

        x = self.generate(G, n, gen).cpu().double()
        if not torch.isfinite(x).all():
            return {names.FID: math.nan, names.MODES_COVERED: 0.0, names.HQ_SHARE: 0.0,
                    TOY_QUALITY: TOY_QUALITY_WORST}
        ref = data_lib.sample_toy(self.cfg[names.DATASET], n,
                                  torch.Generator().manual_seed(12345)).double()
        fd = fid_from_stats(x.mean(0).numpy(), np.cov(x.numpy(), rowvar=False),
                            ref.mean(0).numpy(), np.cov(ref.numpy(), rowvar=False))
        modes = data_lib.toy_modes(self.cfg[names.DATASET]).double()
        dist = torch.cdist(x, modes)
        near, which = dist.min(dim=1)
        hq = near <= 3 * data_lib.toy_std(self.cfg[names.DATASET])
        covered, share = torch.unique(which[hq]).numel(), float(hq.double().mean())
        return {names.FID: float(fd), names.MODES_COVERED: float(covered), names.HQ_SHARE: share,
                TOY_QUALITY: float(toy_quality(covered, len(modes), share))}

    def floor(self, n: int) -> float | None:
        """``fid_floor`` at N = ``n`` (see :func:`trainables.metrics.fid.fid_floor`); None, with a warning,
        when the training split has fewer than ``n`` images (a floor at another N would not be
        comparable)."""
        from trainables.metrics import fid as fid_lib

        if n in self._floors:
            return self._floors[n]
        self._setup()
        cfg, data = self.cfg, self.train_data
        value = None
        if len(data) < n:
            warnings.warn(f"no fid_floor at N={n}: the training split of "
                          f"{cfg[names.DATASET]!r} has only {len(data)} images; no fid_quality "
                          "at this N", RuntimeWarning,
                          stacklevel=2)
        else:
            value = fid_lib.fid_floor(
                dataset_key(cfg), "train", cfg[names.RESOLUTION], self._extractor.name, n,
                len(data),
                data.batch, cfg[names.FID_REF_SPLIT], self._ref_stats, self._ref_n,
                extractor=self._extractor, device=self.device)
        self._floors[n] = value
        return value


def initial_scale(trial) -> dict[str, float]:
    """``fid_init`` (the untrained G on the evaluations' z, see the module docstring) and
    ``fid_floor`` of an image trial. At step 0 G itself is the untrained one; a trial resumed from
    a state that predates the scale evaluates the G rebuilt from its seed instead."""
    G = trial.G if trial.step == 0 else trial.initial_generator()
    scale = {names.FID_INIT: trial.evaluator.evaluate(G)[names.FID]}
    floor = trial.evaluator.floor(trial.cfg[names.FID_SAMPLES])
    if floor is not None:
        scale[names.FID_FLOOR] = floor
    return scale


def with_quality(res: dict[str, Any], scale: dict[str, float], suffix: str = "") -> dict[str, Any]:
    """Adds ``fid_quality{suffix}`` to ``res`` when the scale has a floor and an init."""
    if names.FID_FLOOR in scale and names.FID_INIT in scale:
        res[f"{names.FID_QUALITY}{suffix}"] = fid_quality(
            res[f"{names.FID}{suffix}"], scale[names.FID_INIT], scale[names.FID_FLOOR])
    return res


def final_evaluation(trial, ev: dict[str, Any]) -> dict[str, Any]:
    """The end-of-training evaluation, with its own FID scale (``*_final``) for image trials, and
    for SN trials ``lipschitz_certified``: D's certified Lipschitz bound at the end (the product
    of its layers' operator norms, ``trainables.metrics.lipschitz_bound``: an iterative SVD per layer,
    once per trial rather than at every stats step).
    When it would repeat the last regular one (same N, no FID∞) only the samples are drawn again;
    the numbers, and the scale, are the last evaluation's."""
    cfg = trial.cfg
    n_final = cfg.get(names.FID_FINAL_SAMPLES) or cfg[names.FID_SAMPLES]
    keep = 0 if trial.toy else min(FINAL_KEEP, n_final)
    fresh = n_final != cfg[names.FID_SAMPLES] or bool(cfg.get(names.FID_INF))
    if fresh:
        out = trial.evaluate(final=True, keep_images=keep)
    else:
        out = {f"{k}_final": v for k, v in ev.items()
               if k in _FINAL_KEYS}
        out[names.FID_FINAL_SAMPLES] = float(n_final)
        if keep:  # the first `keep` samples of the evaluation just made (same z, same chunks)
            gen, chunk, parts, done = trial.evaluator.z_stream(EVAL_Z), min(250, n_final), [], 0
            with eval_mode(trial.G):
                while done < keep:
                    parts.append(trial.evaluator.generate(trial.G, chunk, gen)[: keep - done])
                    done += parts[-1].shape[0]
            x = torch.cat(parts)
            out["images"] = data_lib.to_uint8(x).cpu()
    if cfg.get(names.REGULARIZER) == "sn":   # Theorem 1's K, certified (trainables.metrics.lipschitz_bound)
        out[names.LIPSCHITZ_CERTIFIED] = certified_lipschitz(trial.D, trial.sample_shape)
    if trial.toy or not trial.fid_scale or not math.isfinite(out.get(names.FID_FINAL, math.nan)):
        return out  # a non-finite fid_final ends the trial as diverged: no scale to read it by
    if fresh:
        init = trial.evaluator.evaluate(trial.initial_generator(), final=True, fid_inf=False)
        scale = {names.FID_INIT: init[names.FID_FINAL]}
        floor = trial.evaluator.floor(n_final)
        if floor is not None:
            scale[names.FID_FLOOR] = floor
    else:
        scale = dict(trial.fid_scale)
    out.update({f"{k}_final": v for k, v in scale.items()})
    return with_quality(out, scale, "_final")


def dataset_key(cfg: dict[str, Any]) -> str:
    """A readable cache key for the reference statistics of this trial's dataset."""
    name = cfg[names.DATASET]
    if name.startswith("folder:"):
        import hashlib
        import os

        path = os.path.abspath(name[len("folder:"):])
        return "folder-" + hashlib.sha1(path.encode()).hexdigest()[:10]
    return name


def _scatter_grid(x: torch.Tensor, modes: torch.Tensor) -> torch.Tensor:
    """A 3×256×256 picture of 2-D samples (black) and the modes (red), for the toys."""
    size, lim = 256, float(modes.abs().max()) * 1.5 + 1e-6
    img = torch.ones(3, size, size)
    def to_px(p):
        return ((p / lim + 1) / 2 * (size - 1)).round().long().clamp(0, size - 1)
    for p, color in ((x, (0.0, 0.0, 0.0)), (modes, (1.0, 0.0, 0.0))):
        px = to_px(p.float())
        for c in range(3):
            img[c, size - 1 - px[:, 1], px[:, 0]] = color[c]
    return img
