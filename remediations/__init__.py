"""Remediation actions. One module per action family; reached through ``agent.registry``."""
