"""bwssl.report."""
