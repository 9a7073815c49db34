"""Sandboxed isolation tier (local subprocess with rlimits, or E2B).

Not built yet: this version runs agents in the ``actor`` tier only. The tier will slot in behind
:class:`federation.runners.Runner`, the handle every tier presents to the supervisor.
"""
