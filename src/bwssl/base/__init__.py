"""The base layer: what every part of bwssl may use, importing nothing of bwssl above config.

- :mod:`bwssl.base.files`: atomic file writes.
- :mod:`bwssl.base.hardware`: device, precision (autocast) and optimizer resolution.
- :mod:`bwssl.base.rundir`: the files of one training run.
"""
