"""A fault test of your own fleet, in a few lines: the ``chaos`` fixture comes with the package.

    pytest examples/chaos/test_my_fleet.py

Each test runs the fleet live under a plan (a dict of the TOML plan's keys, or a plan file) and gets the
report back: ``report.ok`` when every invariant holds, ``report.failed`` names the ones that did not,
``report.invariants`` has each measured value. See docs/reliability.md.
"""

from pathlib import Path

HERE = Path(__file__).parent


def test_kills_and_venue_faults_lose_nothing(chaos):
    report = chaos(
        HERE / "small_fleet.toml",
        {
            "seed": 1,
            "duration_s": 8,
            "baseline": False,
            "agents": {"kill_fraction": 0.25, "kill_every_s": 3},  # a quarter of the agents, every 3 s
            "execution": {"kill_at_s": [4]},
            "venue": {"timeout_rate": 0.05, "reject_rate": 0.05, "partial_fill_rate": 0.3},
        },
    )
    assert report.ok, report.failed
    assert report.faults["kill_agent"] >= 2


def test_the_example_plan(chaos):
    report = chaos(HERE / "small_fleet.toml", HERE / "small_plan.toml")
    assert report.ok, report.failed
