"""``BudgetGate``: the supervisor's side of budgets: what to charge after a step, whom to call in the next.

When any agent has a budget, the run starts a :mod:`budget authority <federation.budget_authority>`
actor, and agents reserve there themselves; with ``[budgets] authority = "redis"`` the authority is
Redis instead (:mod:`federation.budget_redis`): agents reserve there directly, from whatever node they
run on, and the gate runs the supervisor's side of it in this process. Without budgets the same
accounting runs in this process: usage is still metered (compute, fees, and what agents settle, reported
back by their runners) for the cost report, and nothing is ever refused.

Per step the gate sends one ``step`` call (charges of the step just done, and the time of the next) and
reads its answer before the next step: suspended and stopped agents are not called (their fills wait,
their bars are dropped), throttled agents are called on one step in ``throttle_factor`` (their bars
wait and arrive together), an agent whose compute estimate does not fit is not called in that step, and
agents that must be flattened are named once.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import ray

from agents.budget import BudgetBackend, to_units_e8
from federation.budget_authority import (
    AgentBudgetStatus,
    BudgetReport,
    BudgetService,
    RayBudgetBackend,
    StepReport,
    start_budget_authority,
)
from federation.config import BudgetSettings
from federation.ledger import CostRow, EventRecord
from federation.money import from_e8
from federation.runners.host import AgentBlockResult
from policies.budget import BudgetEvent, BudgetLimit, BudgetState


def cost_row(row: dict[str, Any]) -> CostRow:
    """A row of :meth:`policies.budget.BudgetBook.report` with exact Decimal amounts."""

    def dec(key: str) -> Decimal | None:
        value = row[key]
        return None if value is None else from_e8(value)

    return CostRow(
        agent=row["agent"],
        kind=row["kind"],
        usage=from_e8(row["usage_e8"]),
        cost=from_e8(row["cost_e8"]),
        budget=dec("budget_e8"),
        period=row["period"],
        peak_period_usage=dec("peak_period_usage_e8"),
        remaining=dec("remaining_e8"),
        reservations=row["reservations"],
        refusals=row["refusals"],
        actions=dict(row["actions"]),
        state=row["state"],
    )


def budget_event_record(event: BudgetEvent) -> EventRecord:
    """A budget event as a ledger event (``kind = "budget"``; amounts exact, as decimal strings)."""
    return EventRecord(
        event.ts,
        "budget",
        event.code,
        event.message,
        event.agent or None,  # no agent: about the authority itself (Redis unavailable)
        {
            "budget": event.kind,
            "amount": str(from_e8(event.amount_e8)),
            "limit": str(from_e8(event.limit_e8)),
            **event.detail,
        },
    )


class BudgetGate:
    """One per run; see the module documentation."""

    def __init__(
        self,
        budgets: dict[str, list[BudgetLimit]],
        settings: BudgetSettings,
        *,
        start_ns: int,
        scheduling_strategy: Any = None,
    ) -> None:
        self.enforced = any(budgets.values())
        self.redis = self.enforced and settings.authority == "redis"
        kwargs: dict[str, Any] = {"budgets": budgets, "settings": settings, "start_ns": start_ns}
        actor = self.enforced and not self.redis
        self._actor = start_budget_authority(scheduling_strategy, **kwargs) if actor else None
        self._local = None if actor else BudgetService(**kwargs)
        self.statuses: dict[str, AgentBudgetStatus] = {}
        self.final_states: dict[str, str] = {}
        self.spent: dict[str, Decimal] = {}
        """Money each agent spent over the run (every priced meter and fees, each counted once)."""
        self.held_steps = dict.fromkeys(budgets, 0)
        self._charges: dict[str, dict[str, int]] = {}
        self._pending: Any = None
        self._step = 0
        self._flattened: set[str] = set()

    @property
    def backend(self) -> BudgetBackend | None:
        """What agents reserve through (None: their own unlimited tally)."""
        if self._actor is not None:
            return RayBudgetBackend(self._actor)
        if self.redis:
            assert self._local is not None
            return self._local.agent_backend()
        return None

    # ------------------------------------------------------------------------------------------ steps
    def meter(self, results: Sequence[AgentBlockResult], fees_e8: dict[str, int]) -> None:
        """Add a step's measured compute, agent-reported spending and fees (exact, per agent; rebates
        are not credited) to the next charge."""
        for res in results:
            meters = self._charges.setdefault(res.name, {})
            if res.held:
                self.held_steps[res.name] += 1
            if res.cpu_s > 0:
                meters["compute_s"] = meters.get("compute_s", 0) + to_units_e8(res.cpu_s, "cpu_s")
            for kind, amount in res.spent.items():
                meters[kind] = meters.get(kind, 0) + amount
        for name, fee in fees_e8.items():
            if fee > 0:
                meters = self._charges.setdefault(name, {})
                meters["fees"] = meters.get("fees", 0) + fee

    def submit(self, now: int) -> None:
        """Send the charges so far and the next step's time (answer read by :meth:`collect`)."""
        charges, self._charges = self._charges, {}
        if self._actor is not None:
            self._pending = self._actor.step.remote(charges, now)
        else:
            assert self._local is not None
            self._pending = self._local.step(charges, now)

    def collect(self) -> tuple[list[BudgetEvent], list[str]]:
        """The answer of the last :meth:`submit`: events to record and agents to flatten now."""
        if self._pending is None:
            return [], []
        pending, self._pending = self._pending, None
        report: StepReport = ray.get(pending) if self._actor is not None else pending
        self.statuses = report.statuses
        self._step += 1
        flatten = [a for a, s in self.statuses.items() if s.flatten and a not in self._flattened]
        self._flattened = {a for a, s in self.statuses.items() if s.flatten}
        return report.events, flatten

    def hold(self, names: Sequence[str]) -> dict[str, bool]:
        """Of ``names``, the agents not to call in this step -> whether to keep their bars for later."""
        out: dict[str, bool] = {}
        for name in names:
            status = self.statuses.get(name)
            if status is None:
                continue
            if status.state >= BudgetState.SUSPENDED:
                out[name] = False
            elif status.state is BudgetState.THROTTLED and self._step % status.throttle_factor:
                out[name] = True
            elif not status.compute_granted:
                out[name] = False  # it may not run again for long: its bars are not kept
        return out

    def finish(self) -> tuple[list[BudgetEvent], list[CostRow]]:
        """Charge the last step, close every reservation, and return the events not yet collected
        (the last step's answer included) and the cost rows."""
        events, _ = self.collect()
        charges, self._charges = self._charges, {}
        if self._actor is not None:
            report: BudgetReport = ray.get(self._actor.finish.remote(charges))
        else:
            assert self._local is not None
            report = self._local.finish(charges)
        self.final_states = {row["agent"]: row["state"] for row in report.rows}
        self.spent = {agent: from_e8(units) for agent, units in report.spent_e8.items()}
        return events + report.events, [cost_row(r) for r in report.rows]

    def kill(self) -> None:
        """End the authority: the actor, or this run's keys in Redis (runs are not resumed)."""
        if self._actor is not None:
            ray.kill(self._actor, no_restart=True)
        if self._local is not None:
            self._local.close(delete=True)
