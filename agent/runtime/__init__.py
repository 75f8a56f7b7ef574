"""Floor 6, the drivers: everything that awaits (runner, scheduler, executor, remedy,
incidents, outbox, evidence, Docker events).
"""
