"""P5: manifold geometry (MFTMA) of representations."""
