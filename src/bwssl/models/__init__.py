"""bwssl.models."""
