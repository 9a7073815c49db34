"""Events out: signals, orders, fills and audit events published to Redis streams, off the hot path.

External consumers (dashboards, other services) read what the federation does from capped Redis
streams. Publishing never slows or stops trading: ``publish_*`` only append to an in-memory queue
(about 2 µs per batch), and one background thread sends the entries in pipelined ``XADD`` batches. While
Redis is unreachable the run carries on; the publisher keeps up to ``buffer`` entries (dropping the
oldest beyond that, counted), retries with capped exponential backoff, and sends what it kept, in order,
once Redis is back. Outages are logged, reported by :meth:`RedisEventPublisher.report` and handed to the
owner as :class:`OutageNotice` (:meth:`RedisEventPublisher.take_notices`) so they can go to the ledger.

Use::

    publisher = open_publisher(config.events, run_id, "execution")   # None when [events] url is unset
    publisher.publish_batch(batch)          # after each ledger write
    publisher.publish_signals("mom-1", ("SPY", "QQQ"), batch.ts, result.weights, result.confidences)
    report = publisher.close()              # end of run: drain (bounded), stop the thread

Streams (``prefix`` from ``[events]``, default ``federation``), one per kind so a consumer reads only
what it needs; each is capped near ``maxlen`` entries (``XADD ... MAXLEN ~``):

``{prefix}:signals``
    One entry per agent per bar on which the agent gave at least one signal.
``{prefix}:orders``
    One entry per order state: an order appears again when its status changes (submitted, then filled,
    partially_filled, expired, ...); ``client_order_id`` ties them together.
``{prefix}:fills``
    One entry per fill at the venue or internal cross, with the agents' shares (``allocations``).
``{prefix}:events``
    Audit events: risk denials, trading states, circuit breakers, budget actions, agent errors, data
    issues, allocations, run lifecycle, and the publisher's own ``events_out`` outage notices.

Every value is a string. Money and quantities are exact decimal strings in fixed-point notation
(``"0.00000001"``, never floats or exponents); times are integer nanoseconds since the epoch, UTC;
JSON values are compact JSON. Fields of every entry:

- ``kind``: ``signal``, ``order``, ``fill``, ``allocation`` or, on the events stream, the event's kind
  (``risk_denial``, ``budget``, ``trading_state``, ``events_out``, ...).
- ``ts``: the record's time (ns).
- ``run_id``: the run; ``source``: the publishing process (``supervisor`` or ``execution``).
- ``publisher``: an id of the publisher instance (hex); ``n``: its entry counter (1, 2, 3, ... in publish
  order across all its streams). ``(publisher, n)`` is unique: a consumer that merges streams can restore
  the publish order, and gaps in ``n`` show entries dropped while Redis was down.

Signal entries: ``agent``; ``weights``: JSON object symbol -> weight (the desired exposure as a fraction
of the agent's capital; only the symbols it signalled on that bar); ``confidences``: JSON object symbol ->
confidence in [0, 1], same symbols.

Order entries: ``client_order_id``, ``seq`` (the execution's order sequence), ``symbol``, ``side``
(``buy``/``sell``), ``order_type`` (``market``/``limit``), ``quantity``, ``limit_price`` (limit orders
only), ``status``, ``filled_quantity``, ``reason_code`` and ``reason`` (when set: why it was denied or
expired), ``allocations``: JSON list of ``[agent, quantity]`` (decimal strings, signed like the side).

Fill entries: ``fill_id``, ``client_order_id``, ``symbol``, ``quantity`` (signed: + bought, - sold),
``price``, ``fee``, ``liquidity`` (``taker``/``maker``/``internal``), ``allocations``: JSON list of
``{"agent", "quantity", "price", "fee"}`` (decimal strings): what each agent's sub-account booked. An
allocation whose fill was published in an earlier batch is an entry of its own with ``kind`` =
``allocation`` and the fields ``fill_id``, ``agent``, ``symbol``, ``quantity``, ``price``, ``fee``.

Event entries: ``code`` (the reason code, e.g. ``max_position``, ``redis_down``), ``message`` (for
people), ``agent`` (when the event concerns one), ``detail``: JSON object (decimal amounts as strings).

Delivery: entries of one publisher arrive in publish order, each once. If a connection breaks while a
pipeline is in flight, the publisher looks up (after reconnecting) which of its entries Redis already
holds and sends only the rest. What Redis itself loses (a restart without persistence, trimming) is the
server's business. ``docs/events.md`` has consumer examples.
"""

from federation.events_out.config import EventStreamConfig
from federation.events_out.publisher import OutageNotice, PublisherReport, RedisEventPublisher, open_publisher
from federation.events_out.wire import decode_allocation, decode_event, decode_fill, decode_order

__all__ = [
    "EventStreamConfig",
    "OutageNotice",
    "PublisherReport",
    "RedisEventPublisher",
    "decode_allocation",
    "decode_event",
    "decode_fill",
    "decode_order",
    "open_publisher",
]
