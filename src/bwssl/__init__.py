"""bwssl: blockwise self-supervised learning for vision backbones."""
