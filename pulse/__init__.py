"""Pulse: real-time behavioural personalization on Bytewax, River and Redis.

The code lives in three packages that read top to bottom like the dataflow:

* :mod:`pulse.flows` wires the Bytewax graphs and holds the ``pulse`` command line,
* :mod:`pulse.operators` holds the pure stream steps (no I/O),
* :mod:`pulse.state` holds per-key state, the model holders and the Redis store.
"""

__version__ = "0.1.0"
