"""The tiny trial configurations the trainables tests train, seconds each on a CPU: ``toy`` is ring8
with the MLP at width 1/4, ``images`` the embedded Fashion-MNIST subset with dcgan32 at width 1/16
and the offline ``domain`` FID extractor. Keyword arguments replace any key; the result is
validated (``trainables.config.validate_trial``), as a study's trial is."""

from __future__ import annotations

from typing import Any

from trainables.config import validate_trial

TOY: dict[str, Any] = dict(dataset="ring8", arch="mlp", width=0.25, loss="ns", regularizer="sn",
                           iterations=20, stats_every=5, eval_every=10, fid_samples=200,
                           batch_size=32, lr_d=1e-3, lr_g=1e-3, device="cpu")
IMAGES: dict[str, Any] = dict(dataset="fashion_mnist_mini", arch="dcgan32", width=0.0625,
                              loss="ns", regularizer="sn", iterations=6, stats_every=3,
                              eval_every=3, fid_samples=40, fid_extractor="domain", batch_size=16,
                              device="cpu")


def toy(**kw: Any) -> dict[str, Any]:
    """The ring8 trial with ``kw`` replacing its keys."""
    return validate_trial({**TOY, **kw})


def images(**kw: Any) -> dict[str, Any]:
    """The Fashion-MNIST-subset trial with ``kw`` replacing its keys."""
    return validate_trial({**IMAGES, **kw})
