"""Training GHNs over an architecture space, ghnorth's GHN file, and evaluating predicted parameters."""
