"""Video data: datasets, clip transforms and token masks."""
