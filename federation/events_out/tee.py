"""``PublishingLedger``: a ledger whose batches are also published to Redis streams.

It wraps a :class:`~federation.ledger.BufferedLedger`: each ``write`` first adds the publisher's
``redis_down`` / ``redis_up`` notices to the batch as ``events_out`` events (so the ledger records
every outage of the event streams), hands the batch to the publisher (a queue append, microseconds) and
then writes it. Every other call goes to the wrapped ledger.
"""

from __future__ import annotations

from typing import Any

from federation.events_out.publisher import PublisherReport, RedisEventPublisher
from federation.ledger import BufferedLedger, LedgerBatch


class PublishingLedger:
    def __init__(self, ledger: BufferedLedger, publisher: RedisEventPublisher) -> None:
        self.ledger = ledger
        self.publisher = publisher

    def write(self, run_id: str, batch: LedgerBatch) -> None:
        notices = self.publisher.take_notices()
        if notices:
            batch.events.extend(n.to_event() for n in notices)
        if batch:
            self.publisher.publish_batch(batch)
        self.ledger.write(run_id, batch)

    def close_publisher(self, run_id: str, timeout_s: float = 5.0) -> PublisherReport:
        """Stop the publisher (sending what it can within ``timeout_s``) and record its last notices."""
        report = self.publisher.close(timeout_s)
        notices = self.publisher.take_notices()
        if notices:
            self.ledger.write(run_id, LedgerBatch(events=[n.to_event() for n in notices]))
        return report

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ledger, name)
