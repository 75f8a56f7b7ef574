"""Floor 7, the composition roots: the daemon's wiring and loop, its HTTP face and metrics.
"""
