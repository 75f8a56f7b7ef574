"""Floor 4, every decision, pure: data and ``now`` in, frozen data out.

No I/O library and no clock here (tests/unit/test_layers.py keeps it so); the drivers in
``agent.runtime`` gather the situation, call these functions and carry the answers out.
"""
