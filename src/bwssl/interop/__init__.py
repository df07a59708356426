"""bwssl.interop."""
