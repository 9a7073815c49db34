"""Fault modes of the simulated exchange (:class:`VenueFaults`) and the errors a venue call can end with.

The venue actor (:mod:`federation.execution.exchange`) draws every fault from one seeded numpy
generator, so the same calls in the same order meet the same faults. A call that meets a fault raises one
of the :class:`VenueFault` errors below; the execution engine's remote client
(:mod:`federation.execution.venue_client`) retries it with the same client order ids.

- **timeout**: the call's answer does not come. Half of them happen *after* the venue applied the call
  (the answer is lost: orders were accepted, a bar was matched), half before (nothing happened). The
  simulated venue answers at once with :class:`VenueTimeout` (what the caller would see at its deadline),
  so a run does not wait out its deadlines.
- **rate limit** ("HTTP 429"): the call is refused before it is applied, with ``retry_after_ms``.
- **disconnect**: ``disconnect(seconds)`` makes every call fail with :class:`VenueDisconnected` for that
  long.
- **reject**: a new order is refused for good (final status ``rejected``, the reason in the answer).
- **partial fill**: a fill is cut to a random 1..lots-1 lots; the rest expires as usual.
- **delayed fill report**: a fill (and its order's final status) is reported 1..``max_delay_calls``
  ``advance`` calls later.
- **duplicate fill report**: a fill is reported twice with the same fill id.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class VenueFaults(BaseModel):
    """What goes wrong at the simulated venue, and how often (every rate is a share in [0, 1])."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="Seed of the venue's fault draws.")
    timeout_rate: float = Field(
        0.0, ge=0, le=1, description="Share of venue calls that time out (half after the venue applied them)."
    )
    reject_rate: float = Field(0.0, ge=0, le=1, description="Share of new orders the venue rejects.")
    rate_limit_rate: float = Field(
        0.0, ge=0, le=1, description="Share of venue calls answered 'rate limited' (HTTP 429)."
    )
    retry_after_ms: float = Field(
        50.0, ge=0, le=60_000, description="Retry-after of a rate-limited call, in milliseconds."
    )
    partial_fill_rate: float = Field(
        0.0, ge=0, le=1, description="Share of fills cut to a random 1..lots-1 lots (the rest expires)."
    )
    delayed_fill_rate: float = Field(
        0.0, ge=0, le=1, description="Share of fill reports delivered 1..max_delay_calls calls later."
    )
    max_delay_calls: int = Field(3, ge=1, le=1000, description="Longest delay of a fill report, in calls.")
    duplicate_fill_rate: float = Field(
        0.0, ge=0, le=1, description="Share of fill reports delivered twice (same fill id)."
    )


class VenueFault(Exception):
    """A venue call failed in a way that a retry with the same client order ids may cure."""

    kind = "fault"


class VenueTimeout(VenueFault):
    """No answer within the deadline; the call may or may not have been applied."""

    kind = "timeout"


class VenueRateLimited(VenueFault):
    """HTTP-429-style refusal: nothing was applied; retry after ``retry_after_s``."""

    kind = "rate_limited"

    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[type[VenueRateLimited], tuple[str, float]]:
        return (type(self), (str(self), self.retry_after_s))


class VenueDisconnected(VenueFault):
    """The venue cannot be reached (a disconnect window); nothing was applied."""

    kind = "disconnected"
