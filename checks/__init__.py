"""Probe types. One module per type; the engine reaches them only through ``agent.registry``."""
