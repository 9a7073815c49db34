"""``federation bench``: speed and memory measured as commands, each against an in-process baseline.

- :func:`~federation.bench.fleet.bench_fleet`: start-up, memory, idle CPU, decisions per second and live
  tick latency of a whole fleet, with the same agents run in one plain Python loop in the same process
  as the baseline (``ratio``).
- :func:`~federation.bench.execution.bench_execution`: orders per second through risk, the simulated
  venue and the SQLite ledger, and the risk checks' latency (portfolio and, with every check on, agent).
- :func:`~federation.bench.budget.bench_budget`: reservations per second through the budget authority
  with many concurrent agents, against the same accounting in-process, and a check that no cap is passed.

Results are JSON-ready dicts; ``docs/benchmarks.md`` records what they measured on our machine.
"""
