"""bwssl.objectives."""
