"""strategy-federation: many trading strategies as isolated Ray actors under one supervisor.

Library entry points: :func:`load_config` and :func:`run_fleet` (the CLI ``federation run`` uses them).
"""

from federation.config import FleetConfig, load_config
from federation.errors import AgentLoadError, ConfigError, DataError, UserInputError

__all__ = [
    "AgentLoadError",
    "ConfigError",
    "DataError",
    "FleetConfig",
    "UserInputError",
    "load_config",
    "run_fleet",
]


def __getattr__(name: str) -> object:
    # run_fleet imports Ray (about a second); load it only when asked for.
    if name == "run_fleet":
        from federation.supervisor import run_fleet

        return run_fleet
    raise AttributeError(name)
