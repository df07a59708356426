"""bwssl: blockwise (gradient-isolated) self-supervised learning for vision backbones.

Public entry points: :func:`load_model`, :func:`bwssl.config.load_config`,
:func:`bwssl.train.trainer.train`; the analyses live in :mod:`bwssl.analysis`.
"""

from bwssl.models.blockwise import load_model

__version__ = "0.1.0"
__all__ = ["__version__", "load_model"]
