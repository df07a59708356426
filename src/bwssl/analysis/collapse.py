"""How far a block's clip representations have collapsed onto one point.

A representation that has collapsed maps every clip to (nearly) the same
vector: its probe and retrieval numbers drop to chance, but so do those of a
representation that is merely uninformative. The spread of the pooled
features across clips tells the two apart, and costs nothing once the
features are extracted.

:func:`feature_std` of pooled features z (M clips, D dims):

- ``normalize=True`` (the headline, target ``""`` of the ``feature_std``
  metric): every clip's vector is first divided by its L2 norm, u_i = z_i /
  ||z_i||; then the standard deviation across clips (population, ddof=0) of
  each dimension of u, averaged over the D dimensions and multiplied by
  sqrt(D). Identical vectors for all clips give 0; vectors spread evenly over
  the sphere (e.g. isotropic Gaussian z) give about 1, whatever D is. The
  value does not change when the features are rescaled, so a block whose
  outputs merely grew or shrank is not mistaken for a collapsed one, and
  blocks of different widths compare. Pooled ViT features share a large
  mean direction, so healthy blocks sit well below 1: read the value against
  another regime's at the same block, not against 1.
- ``normalize=False`` (target ``raw``): the same average of per-dimension
  standard deviations on z itself, in the features' own units.
"""

from __future__ import annotations

import torch

from bwssl.analysis.arrays import Array, as_float_tensor

_EPS = 1e-12


def feature_std(z: Array, normalize: bool = True) -> float:
    """The spread across clips of pooled features ``z`` (M, D), defined in the module
    docstring: 0 for identical rows; about 1 for rows spread evenly on the sphere when
    ``normalize``; NaN when a feature is not finite."""
    x = as_float_tensor(z)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"expected features of shape (clips, dims), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        return float("nan")  # a diverged encoder: no spread to measure
    if normalize:
        x = x / x.norm(dim=1, keepdim=True).clamp_min(_EPS)
    spread = x.std(dim=0, correction=0).mean()
    if normalize:
        spread = spread * x.shape[1] ** 0.5
    return float(spread)
