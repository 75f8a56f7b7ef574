"""paramedic's engine: config, scheduling, conditions, state, runbooks and the CLI."""

__version__ = "0.1.0"
