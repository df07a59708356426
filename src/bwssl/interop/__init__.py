"""Interoperability with other frameworks: Hugging Face transformers VideoMAE import and export,
torchvision ResNet state dicts.

- :func:`from_hf_videomae` (path, num_blocks): a local HF VideoMAE checkpoint folder as a
  bwssl model whose block outputs equal HF's hidden states at the block boundaries.
- :func:`export_hf` (run dir, checkpoint or model, out dir): a bwssl encoder (and its
  last-block decoder) as an HF VideoMAE checkpoint folder; also ``bwssl export-hf``.
- :func:`hf_videomae_config`: the bwssl config an HF checkpoint maps to.
- :func:`load_torchvision_resnet`, :func:`export_torchvision_resnet`: a torchvision ResNet
  state dict into the ResNet backbone and back (torchvision itself is not needed).

transformers is an optional extra (``pip install 'bwssl[hf]'``); it is imported on use.
"""

from bwssl.interop.hf import export_hf, from_hf_videomae, hf_videomae_config
from bwssl.interop.torchvision_resnet import export_torchvision_resnet, load_torchvision_resnet

__all__ = [
    "export_hf",
    "export_torchvision_resnet",
    "from_hf_videomae",
    "hf_videomae_config",
    "load_torchvision_resnet",
]
