"""``EventTap``: publishes what a run writes to its ledger to Redis streams as well.

Set as a :class:`~federation.ledger.BufferedLedger`'s ``tap``, it sees every batch before the buffer
takes it: it first adds the publisher's ``redis_down`` / ``redis_up`` notices to the batch as
``events_out`` events (so the ledger records every outage of the event streams), then hands the batch to
the publisher (a queue append, microseconds).
"""

from __future__ import annotations

from federation.events_out.publisher import PublisherReport, RedisEventPublisher
from federation.ledger import BufferedLedger, LedgerBatch


class EventTap:
    def __init__(self, publisher: RedisEventPublisher) -> None:
        self.publisher = publisher

    def __call__(self, batch: LedgerBatch) -> None:
        notices = self.publisher.take_notices()
        if notices:
            batch.events.extend(n.to_event() for n in notices)
        if batch:
            self.publisher.publish_batch(batch)

    def close(self, ledger: BufferedLedger, run_id: str, timeout_s: float = 5.0) -> PublisherReport:
        """Stop the publisher (sending what it can within ``timeout_s``) and record its last notices."""
        ledger.tap = None
        report = self.publisher.close(timeout_s)
        notices = self.publisher.take_notices()
        if notices:
            ledger.write(run_id, LedgerBatch(events=[n.to_event() for n in notices]))
        return report
