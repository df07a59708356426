"""bwssl.analysis."""
