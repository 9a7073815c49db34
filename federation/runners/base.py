"""The handle every isolation tier presents to the supervisor.

A runner hosts one or more agents (the ``actor`` tier: exactly one, in its own Ray actor). All methods
are asynchronous and return Ray object references, so the supervisor drives every runner in parallel.
"""

from __future__ import annotations

from typing import Any, Protocol

from agents.model import Fill


class Runner(Protocol):
    names: tuple[str, ...]
    """The agents this runner hosts."""
    isolation: str

    def start(self) -> Any:
        """ObjectRef -> ``list[HookError]`` (errors of ``on_start``; empty when all started)."""

    def process(self, block: Any, fills: dict[str, list[Fill]]) -> Any:
        """ObjectRef -> ``list[AgentBlockResult]``, one per hosted agent. ``block`` is an ObjectRef."""

    def stop(self, fills: dict[str, list[Fill]]) -> Any:
        """Deliver the last ``fills``, call ``on_stop``; ObjectRef -> ``list[HookError]``."""

    def kill(self) -> None:
        """Release the runner's processes now."""
