"""bwssl.train."""
