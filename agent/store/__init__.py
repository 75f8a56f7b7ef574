"""Floor 5: what survives a restart (results and state, journal, incidents, outbox, flags).
"""
