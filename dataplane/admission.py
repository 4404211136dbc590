# cython: wraparound=True, boundscheck=True
"""Admission control for forwarded requests: what keeps an overloaded producer (and the
gateway itself) useful instead of buried.

The data plane knows no 3GPP: a request arrives here as an exchange with a ``priority`` (0 the
most important; what ``3gpp-Sbi-Message-Priority`` says, or the operator's default), an
absolute ``deadline`` (monotonic seconds), a ``consumer`` key and the endpoint the router
chose.  Per endpoint (one producer address) an ``EndpointGate`` holds:

* **an adaptive concurrency limit** (a gradient on measured latency, as Envoy's adaptive
  concurrency filter and Netflix's gradient limiter): every ``window_s`` the mean response
  time of the window is compared with the producer's no-load response time (at least
  ``rtt_floor_s``): ``gradient = (1 + tolerance) * rtt_noload / rtt_mean``.  Below 1 the
  limit moves halfway to ``limit * gradient + sqrt(..)`` (at most halving per window): a
  producer that queues gets fewer requests at once.  At 1 it grows: by half while requests
  wait at the SCP, by ``sqrt(limit) / 2`` while at least half of it is used, not at all
  otherwise; up to ``max_limit``.  The no-load time is the minimum
  response time of the requests sent since the last *probe*: every ``probe_interval_s`` the
  gate lets at most 30% of its limit through until ``probe_samples`` answers came, so the
  baseline cannot drift up under a standing overload (what Envoy's min-RTT calculation
  does with a fixed low concurrency).
* **a bounded wait queue**, ordered by priority then deadline (one list per priority, kept
  sorted by deadline, and a bitmask of the non-empty ones: the best and the worst entry are
  found in O(1)).  Its overload signal is queue *delay*, as in CoDel: while the queue has
  been empty within the last ``queue_interval_s`` a request may wait up to that interval;
  once it has stayed non-empty longer (a standing queue), a request of the normal band waits
  at most ``queue_wait_share`` of its own budget (at least ``queue_target_s``, at most
  ``queue_max_wait_s``: 50 ms for a 500 ms Max-Rsp-Time) and is then shed with a fast 503.
  A standing queue that already holds what the producer drains in that time takes a
  newcomer only in place of a worse entry; otherwise the newcomer is refused at once (the
  same refusal, without the wait).  The top band (priority <= ``top_band``: MPS, emergency) waits until its
  deadline, goes first, and may use the ``reserved_share`` of the limit that the rest may not.
* **deadlines**: a request whose deadline is nearer than the producer's no-load response
  time is answered 504 at once and never forwarded (the time left is what the next hop gets:
  the proxy re-stamps it when it sends).
* **overload control from the producer** (``shed(fraction, until)``, which the 3GPP adapter
  calls for a ``3gpp-Sbi-Oci``): that share of the traffic toward the endpoint or its scope
  is refused, lowest priority first, computed from the priorities the gate saw lately; the
  top band is never shed for it.
* **outlier detection**: ``consecutive_failures`` in a row (connect failure, reset, 5xx,
  timeout) eject the endpoint for ``base_ejection_s`` x 2^(ejections so far), at most
  ``max_ejection_s``, with at most ``max_ejected_share`` of a cluster's endpoints out at once.

* **a per-consumer in-flight cap**: while the gate's limit is at least 4 and another consumer
  holds or waits at the gate (contended; a consumer alone may use every slot), one consumer
  key holds at most ``max(1, floor(limit * consumer_max_share))`` of its slots; a request over
  that is refused at once (429, reason ``consumer_cap``).  And while a consumer that came
  first holds more than its cap, a full gate still sends for the others (up to that excess
  beyond the limit), so one client that opened many streams and never finishes them (a
  request body that never ends) cannot make the others wait.  The top band is exempt (its
  requests are counted in what the consumer holds, never refused by the cap).  The refusals
  do not make the limit grow: they are one consumer's excess, not demand the producer fails
  to serve (growing for them would only hand the hog more slots).

The controller also holds a **retry budget** (reselections and retries at most
``retry_budget_share`` of the requests in flight, at least ``retry_min``) and **per-consumer
token buckets** (``consumer_rate_per_s``/``consumer_burst``; the top band is exempt), and
watches the event loop's own lag: when the gateway itself falls behind
(``self_lag_target_s``), the normal band is shed at once and ``self_overloaded`` tells the
3GPP layer to advertise it (its own OCI).

The proxy calls ``admit(ex)`` once per forwarded request and ``release(ex, status, error)``
once: when the exchange ends, or earlier when the client cannot take the response as fast
as the producer sends it (a client that does not read holds no slot); further calls are
no-ops.  ``admit`` answers ``GO`` (send it now), ``QUEUED`` (the controller will
call ``ex.admitted()`` or ``ex.refused(status, cause, detail)`` later) or a refusal
``(status, cause, detail)`` to answer at once.  ``ex`` has the attributes ``priority``,
``due`` (the absolute deadline, 0: none), ``consumer``, ``endpoint``, ``cluster``, ``scopes``, ``done`` and
two the controller owns: ``gate`` and ``sent_at``.

Nothing here runs per frame; per request it is a few attribute reads and integer updates
unless the endpoint is limited.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger("nfmesh.admission")

GO = 0
QUEUED = 1
PRIORITIES = 32  # 0..31, TS 29.500 message priorities; the data plane treats them as ranks

# refusal causes (TS 29.500 table 5.2.7.2-1)
CONGESTION = (503, "NF_CONGESTION")
TIMED_OUT = (504, "TIMED_OUT_REQUEST")
TOO_MANY = (429, "TOO_MANY_REQUESTS")
CAP_DETAIL = ("this consumer already holds its share of the producer's capacity at the SCP "
              "(requests in flight)")



@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """The knobs; the defaults protect a producer with no tuning (see the module doc)."""

    enabled: bool = True
    default_priority: int = 24  # for requests that carry none
    top_band: int = 7  # priorities 0..top_band: shed last, may use the reserved share
    reserved_share: float = 0.1
    initial_limit: int = 16
    min_limit: int = 2
    max_limit: int = 1000
    window_s: float = 0.05
    tolerance: float = 0.5  # response times within 1.5x the no-load time count as no queue
    # the no-load time is taken as at least this: below a few ms, the gateway's own batching
    # and event-loop turns dominate a response time, and a gradient on them would throttle a
    # producer that keeps up
    rtt_floor_s: float = 0.005
    probe_interval_s: float = 5.0
    probe_samples: int = 16
    queue_max: int = 1024
    queue_target_s: float = 0.05
    queue_interval_s: float = 0.1
    # ... the wait a standing queue allows grows with the request's own budget: this share of
    # it, at least queue_target_s and at most queue_max_wait_s (a request with 30 s to live
    # may wait longer than one with 500 ms)
    queue_wait_share: float = 0.1
    queue_max_wait_s: float = 1.0
    consecutive_failures: int = 5
    base_ejection_s: float = 2.0
    max_ejection_s: float = 60.0
    max_ejected_share: float = 0.5
    retry_budget_share: float = 0.2
    retry_min: int = 3
    consumer_rate_per_s: float = 0.0  # per consumer key and worker; 0: no bucket
    fair_share: bool = True  # under overload, no consumer holds more than its share of a queue
    consumer_max_share: float = 0.75  # of a gate's in-flight slots, per consumer (limit >= 4)
    consumer_burst: float = 2000.0
    self_lag_target_s: float = 0.05  # event-loop lag above this: the gateway is overloaded


class EndpointGate:
    """Admission state of one producer endpoint (see the module doc)."""

    def __init__(self, controller: AdmissionController, key: object, cluster: str) -> None:
        s = controller.settings
        now = controller.clock()
        self.controller = controller
        self.key = key
        self.cluster = cluster
        self.limit = float(s.initial_limit)
        self.cap_top = self.cap_normal = 0.0  # what allowed() answers, kept current
        self.margin = 0.0  # rtt_noload when known: a deadline nearer than this is hopeless
        self.in_flight = 0
        # per priority: entries [deadline, seq, enqueued_at, ex, wait cap] sorted by (deadline,
        # seq), the
        # next to go first; bit p of mask set while levels[p] holds entries (maybe dead ones)
        self.levels: list[list] = [[] for _ in range(PRIORITIES)]
        self.mask = 0
        self.queued = 0  # live entries
        self.by_consumer: dict = {}  # live entries per consumer key
        self.held: dict = {}  # requests in flight per consumer key (those with one)
        self.done_n = 0  # answers in the current window
        self.drain_rate = 0.0  # answers per second (smoothed)
        self.last_empty = now
        self.overloaded = False
        self.rtt_noload = math.inf
        self.rtt_sum = 0.0
        self.rtt_n = 0
        self.window_end = now + s.window_s
        self.probe_at = now + s.probe_interval_s * (0.5 + random.random())
        self.probing = False
        self.probe_start = now
        self.probe_n = 0
        self.max_in_flight = 0
        self.failures = 0
        self.ejections = 0
        self.ejected_until = 0.0
        self.shed_fraction = 0.0
        self.shed_until = 0.0
        self.shed_threshold = PRIORITIES  # priorities above this are shed (OCI)
        self.shed_partial = 0.0  # ... and this share of the threshold priority
        self.shed_at = 0.0
        self.prio_counts = [0] * PRIORITIES
        self.shed_counts: dict[tuple[str, int], int] = {}  # (reason, priority) -> count
        self.queue_delay_sum = 0.0
        self.queue_delay_n = 0
        self.forwarded = 0
        self.ejected_total = 0

    # ---- the limit ---------------------------------------------------------------------------
    def allowed(self, priority: int) -> float:
        """How many may be in flight for a request of ``priority``."""
        return self.cap_top if priority <= self.controller.top_band else self.cap_normal

    def caps(self) -> None:
        """Recompute what ``allowed`` answers (after the limit or the probe changed)."""
        s = self.controller.settings
        if self.probing:
            self.cap_top = self.cap_normal = max(float(s.min_limit), self.limit * 0.3)
        else:
            self.cap_top = self.limit
            self.cap_normal = max(1.0, self.limit * (1.0 - s.reserved_share))

    def sample(self, rtt: float, sent_at: float, now: float) -> None:
        """One answered request's response time."""
        self.done_n += 1
        if rtt < self.rtt_noload and (not self.probing or sent_at >= self.probe_start):
            self.rtt_noload = self.margin = rtt
        self.rtt_sum += rtt
        self.rtt_n += 1
        if self.probing and sent_at >= self.probe_start:
            self.probe_n += 1
            if self.probe_n >= self.controller.settings.probe_samples:
                self.probing = False
                self.caps()
                self.window_end = now  # a fresh window from here
                self.rtt_sum = 0.0
                self.rtt_n = 0
        if now >= self.window_end:
            self._update(now)

    def _update(self, now: float) -> None:
        s = self.controller.settings
        self.window_end = now + s.window_s
        if self.rtt_n and log.isEnabledFor(logging.DEBUG):
            log.debug("producer %s: limit %.1f, in flight %d (max %d), queued %d, response time "
                      "%.2f ms (no-load %.2f ms) over %d answers%s", self.key, self.limit,
                      self.in_flight, self.max_in_flight, self.queued,
                      self.rtt_sum / self.rtt_n * 1000, self.rtt_noload * 1000, self.rtt_n,
                      ", probing" if self.probing else "")
        if self.rtt_n and not self.probing:
            mean = self.rtt_sum / self.rtt_n
            noload = self.rtt_noload if self.rtt_noload > s.rtt_floor_s else s.rtt_floor_s
            gradient = (1.0 + s.tolerance) * noload / mean if mean > 0 else 1.0
            gradient = 1.0 if gradient > 1.0 else (0.5 if gradient < 0.5 else gradient)
            if gradient >= 1.0:
                if self.queued:  # requests wait and the producer keeps up: grow fast
                    limit = self.limit * 1.5
                elif self.max_in_flight >= self.limit * 0.5:
                    limit = self.limit + 0.5 * math.sqrt(self.limit)
                else:
                    limit = self.limit  # not used: no reason to grow
            else:
                target = self.limit * gradient
                limit = 0.5 * self.limit + 0.5 * (target + math.sqrt(target))
            self.limit = min(float(s.max_limit), max(float(s.min_limit), limit))
            self.caps()
        self.rtt_sum = 0.0
        self.rtt_n = 0
        self.max_in_flight = self.in_flight
        self.drain_rate = 0.7 * self.drain_rate + 0.3 * (self.done_n / s.window_s)
        self.done_n = 0
        counts = self.prio_counts  # decayed: the priority mix follows the traffic (OCI)
        for p in range(PRIORITIES):
            if counts[p]:
                counts[p] *= 0.75
        if now >= self.probe_at and not self.probing:
            self.probing = True
            self.probe_start = now
            self.probe_n = 0
            self.rtt_noload = math.inf  # (margin keeps the last one meanwhile)
            self.probe_at = now + s.probe_interval_s * (0.75 + 0.5 * random.random())
            self.caps()

    # ---- overload control from the producer (OCI) ----------------------------------------------
    def shed(self, fraction: float, until: float) -> None:
        """Refuse ``fraction`` of the traffic toward this endpoint until ``until`` (monotonic),
        lowest priority first; 0 ends it."""
        was = self.shed_fraction > 0 and self.shed_until > self.controller.clock()
        self.shed_fraction = max(0.0, min(1.0, fraction))
        self.shed_until = until if fraction > 0 else 0.0
        self.shed_at = 0.0  # recompute the threshold on the next request
        now_on = self.shed_fraction > 0
        if now_on != was:
            log.warning("producer %s %s overload control (OCI reduction %d%%)", self.key,
                        "entered" if now_on else "left", round(self.shed_fraction * 100))

    def _shed_threshold(self, now: float) -> None:
        """Find the priority above which requests are refused so that about ``shed_fraction``
        of the recent traffic is (the top band never)."""
        self.shed_at = now + 0.1
        counts = self.prio_counts
        total = sum(counts)
        top = self.controller.settings.top_band
        self.shed_threshold = PRIORITIES
        self.shed_partial = 0.0
        if total <= 0:
            return
        want = self.shed_fraction * total
        acc = 0.0
        for p in range(PRIORITIES - 1, top, -1):
            c = counts[p]
            if acc + c >= want:
                self.shed_threshold = p
                self.shed_partial = (want - acc) / c if c else 0.0
                break
            acc += c
        else:
            self.shed_threshold = top
            self.shed_partial = 0.0

    def oci_refuses(self, priority: int, now: float) -> bool:
        if self.shed_until <= now:
            if self.shed_fraction > 0:
                self.shed(0.0, 0.0)
            return False
        if now >= self.shed_at:
            self._shed_threshold(now)
        if priority > self.shed_threshold:
            return True
        if priority == self.shed_threshold and self.shed_partial > 0:
            return random.random() < self.shed_partial
        return False

    # ---- outliers -----------------------------------------------------------------------------
    def unqueue(self, ex) -> None:
        """``ex`` left the queue (sent, refused or gone)."""
        self.queued -= 1
        consumer = ex.consumer
        if consumer is not None:
            n = self.by_consumer.get(consumer, 0) - 1
            if n > 0:
                self.by_consumer[consumer] = n
            else:
                self.by_consumer.pop(consumer, None)

    def consumer_cap(self, share: float) -> int:
        """The most in-flight slots one consumer may hold (the limit is at least 4)."""
        cap = int(self.limit * share)
        return cap if cap > 1 else 1

    def over_cap(self, consumer: object, share: float) -> bool:
        """``consumer`` holds its cap of in-flight slots while another consumer holds or waits
        here (contended); a consumer alone at a gate is never capped (work-conserving)."""
        held = self.held
        if held.get(consumer, 0) < self.consumer_cap(share):
            return False
        by = self.by_consumer
        return len(held) > 1 or len(by) > (1 if consumer in by else 0)

    def borrowable(self, consumer: object, share: float) -> bool:
        """A full gate may still send for ``consumer`` (under its cap) while a consumer that
        came first holds more than its cap: at most that excess beyond the limit, so a hog
        that took every slot before the others came cannot make them wait for it."""
        held = self.held
        cap = self.consumer_cap(share)
        if held.get(consumer, 0) >= cap or not held:
            return False
        over = max(held.values()) - cap
        return over > 0 and self.in_flight < self.cap_normal + over

    def give_back(self, consumer: object) -> None:
        """One of ``consumer``'s in-flight requests ended (or moved away)."""
        n = self.held.get(consumer, 0) - 1
        if n > 0:
            self.held[consumer] = n
        else:
            self.held.pop(consumer, None)

    def count(self, reason: str, priority: int) -> None:
        key = (reason, priority)
        self.shed_counts[key] = self.shed_counts.get(key, 0) + 1


class AdmissionController:
    """Per data-plane worker: the gates, the retry budget, consumer buckets, self-overload."""

    def __init__(self, settings: AdmissionSettings | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or AdmissionSettings()
        self.clock = clock
        self._knobs()
        self.gates: dict[object, EndpointGate] = {}
        self.clusters: dict[str, set[EndpointGate]] = {}
        self._last_key: object = None
        self._last_gate: EndpointGate | None = None
        self._seq = itertools.count()
        self.queue_floor = 8  # a standing queue is never cut below this many entries
        # the engine's report_completions (dataplane.engine): while requests wait, finished
        # exchanges are reported at the end of each loop iteration, not at the next quiet
        # moment, so that a freed place is used at once and response times are not inflated
        self.report_completions: Callable[[], object] | None = None
        self._reporting = False
        self._sweep: asyncio.TimerHandle | None = None
        self.scope_sheds: dict[str, tuple[float, float]] = {}  # scope -> (fraction, until)
        self.in_flight = 0
        self.retries_in_flight = 0
        self.retries_refused = 0
        self.buckets: dict[object, list[float]] = {}
        self.lag = 0.0
        self.self_overloaded = False
        self._lag_timer: asyncio.TimerHandle | None = None
        self._lag_expected = 0.0
        self._lag_run = 0  # consecutive ticks on the other side of the target
        self.self_shed = 0

    # ---- configuration ------------------------------------------------------------------------
    def configure(self, settings: AdmissionSettings) -> None:
        """A reload: new knobs, the learned state (limits, queues, ejections) kept."""
        self.settings = settings
        self._knobs()
        for gate in self.gates.values():
            gate.limit = min(float(settings.max_limit), max(float(settings.min_limit), gate.limit))
            gate.caps()

    def _knobs(self) -> None:
        """The settings the request path reads, as plain attributes."""
        s = self.settings
        self.top_band = s.top_band
        self.default_priority = s.default_priority
        self.consumer_rate = s.consumer_rate_per_s
        self.consumer_max_share = s.consumer_max_share

    def gate(self, key: object, cluster: str = "") -> EndpointGate:
        if key is self._last_key:
            return self._last_gate  # type: ignore[return-value]
        gate = self.gates.get(key)
        if gate is None:
            if len(self.gates) >= 4096:
                self._forget_idle()
            gate = self.gates[key] = EndpointGate(self, key, cluster)
            gate.caps()
            self.clusters.setdefault(cluster, set()).add(gate)
        self._last_key = key
        self._last_gate = gate
        return gate

    def _forget_idle(self) -> None:
        for key, gate in list(self.gates.items()):
            if not gate.in_flight and not gate.queued and gate.shed_until <= self.clock():
                del self.gates[key]
                self.clusters.get(gate.cluster, set()).discard(gate)
        self._last_key = self._last_gate = None

    # ---- the request path ----------------------------------------------------------------------
    def admit(self, ex) -> int | tuple[int, str, str]:
        """GO, QUEUED, or a refusal (status, cause, detail); see the module doc."""
        now = self.clock()
        prio = ex.priority
        if prio < 0:
            prio = ex.priority = self.default_priority
        top = prio <= self.top_band
        deadline = ex.due
        key = ex.endpoint
        if key is self._last_key:
            gate = self._last_gate
        else:
            gate = self.gate(key, ex.cluster)
        ex.gate = None
        gate.prio_counts[prio] += 1
        if deadline and deadline - now < gate.margin:
            gate.count("deadline", prio)
            return (TIMED_OUT[0], TIMED_OUT[1],
                    "the request's deadline is nearer than the producer's response time")
        if not top:
            if self.self_overloaded:
                self.self_shed += 1
                gate.count("gateway_overload", prio)
                return (CONGESTION[0], CONGESTION[1], "the SCP is overloaded")
            if self.consumer_rate > 0 and ex.consumer is not None \
                    and not self._take_token(ex.consumer, now):
                gate.count("consumer_rate", prio)
                return (TOO_MANY[0], TOO_MANY[1],
                        "this consumer is over its request rate at the SCP")
            if gate.shed_until:
                if gate.oci_refuses(prio, now):
                    gate.count("oci", prio)
                    return (CONGESTION[0], CONGESTION[1],
                            "the producer asked for less traffic (3gpp-Sbi-Oci)")
            elif ex.scopes and self.scope_sheds and \
                    self._scope_refuses(ex.scopes, gate, prio, now):
                gate.count("oci", prio)
                return (CONGESTION[0], CONGESTION[1],
                        "the producer asked for less traffic (3gpp-Sbi-Oci)")
        consumer = ex.consumer
        capping = consumer is not None and not top and gate.limit >= 4.0
        if capping and gate.held and gate.over_cap(consumer, self.consumer_max_share):
            gate.count("consumer_cap", prio)
            return (TOO_MANY[0], TOO_MANY[1], CAP_DETAIL)
        if (gate.in_flight < (gate.cap_top if top else gate.cap_normal) and (
                top or not gate.queued)) or (
                capping and gate.held and gate.borrowable(consumer, self.consumer_max_share)):
            ex.gate = gate  # _send, inlined
            ex.sent_at = now
            gate.in_flight += 1
            gate.forwarded += 1
            self.in_flight += 1
            if gate.in_flight > gate.max_in_flight:
                gate.max_in_flight = gate.in_flight
            if consumer is not None:
                gate.held[consumer] = gate.held.get(consumer, 0) + 1
            return GO
        s = self.settings
        deadline = deadline or math.inf
        # how long this request may wait once the queue stands: its share of its budget
        cap = (deadline - now) * s.queue_wait_share
        cap = s.queue_target_s if cap < s.queue_target_s else (
            s.queue_max_wait_s if cap > s.queue_max_wait_s else cap)
        if gate.queued:
            if gate.queued >= s.queue_max:
                if not self._displace(gate, prio, deadline):
                    gate.count("queue_full", prio)
                    return (CONGESTION[0], CONGESTION[1], "the producer's queue at the SCP is full")
            elif (not top and gate.overloaded and gate.queued >= max(
                    self.queue_floor, gate.drain_rate * cap)):
                # a standing queue holding what the producer drains within the target: this
                # request would only wait to be refused, unless it outranks a queued one
                if not self._displace(gate, prio, deadline):
                    gate.count("queue_delay", prio)
                    return (CONGESTION[0], CONGESTION[1], "the producer is overloaded: its "
                            "queue at the SCP holds more than it answers within the target")
        else:
            gate.last_empty = now  # a queue forms: its standing time counts from here
        if (consumer is not None and not top and gate.overloaded and s.fair_share
                and len(gate.by_consumer) > 1):
            # under overload each consumer gets its share of the queue: one that floods it
            # is refused first, so it cannot starve the others
            mine = gate.by_consumer.get(consumer, 0)
            if mine >= 2 and mine * len(gate.by_consumer) >= gate.queued:
                gate.count("consumer_share", prio)
                return (TOO_MANY[0], TOO_MANY[1], "this consumer holds more than its share of "
                        "the overloaded producer's queue at the SCP")
        level = gate.levels[prio]
        entry = [deadline, next(self._seq), now, ex, cap]
        if not level or entry >= level[-1]:
            level.append(entry)
        else:
            bisect.insort(level, entry)
        gate.mask |= 1 << prio
        gate.queued += 1
        if consumer is not None:
            gate.by_consumer[consumer] = gate.by_consumer.get(consumer, 0) + 1
        if self.report_completions is not None and not self._reporting:
            self._schedule_report()
        ex.gate = gate
        if self._sweep is None:
            self._arm_sweep()
        return QUEUED

    def _send(self, gate: EndpointGate, ex, now: float) -> None:
        ex.gate = gate
        ex.sent_at = now
        gate.in_flight += 1
        gate.forwarded += 1
        self.in_flight += 1
        if gate.in_flight > gate.max_in_flight:
            gate.max_in_flight = gate.in_flight
        consumer = ex.consumer
        if consumer is not None:
            gate.held[consumer] = gate.held.get(consumer, 0) + 1

    def move(self, ex, endpoint: object) -> None:
        """A reselection sends ``ex`` to ``endpoint`` instead: the first endpoint's slot is
        given back as a failure, the new one's taken (the retry budget bounds these)."""
        self.release(ex, 0, True)
        self._send(self.gate(endpoint, ex.cluster), ex, self.clock())

    def release(self, ex, status: int, failed: bool) -> None:
        """``ex`` ended (``status`` as sent downstream, 0 for none).  ``failed``: the producer
        failed it (connect failure, reset, 5xx, no answer in time)."""
        gate = ex.gate
        if gate is None:
            return
        ex.gate = None
        now = self.clock()
        sent_at = ex.sent_at
        if sent_at < 0:  # still queued: the client went away
            gate.unqueue(ex)  # its entry is dropped when it comes up (ex.gate is None)
            return
        gate.in_flight -= 1
        self.in_flight -= 1
        consumer = ex.consumer
        if consumer is not None:
            gate.give_back(consumer)
        if failed:
            gate.failures += 1
            if gate.failures >= self.settings.consecutive_failures:
                self._eject(gate, now)
            if status == 504:  # no answer in time: at least that long, and the limit must know
                gate.sample(now - sent_at, sent_at, now)
        else:
            gate.failures = 0
            if 0 < status < 500:
                gate.sample(now - sent_at, sent_at, now)
        if gate.queued:
            self._pump(gate, now)

    def _pump(self, gate: EndpointGate, now: float) -> None:
        levels = gate.levels
        while gate.mask:
            prio = (gate.mask & -gate.mask).bit_length() - 1  # the best non-empty level
            level = levels[prio]
            deadline, _seq, enq, ex, _cap = level[0]
            if ex.done or ex.gate is not gate:  # answered or gone while it waited
                del level[0]
                if not level:
                    gate.mask &= ~(1 << prio)
                continue
            if gate.in_flight >= gate.allowed(prio):
                # full: only a request over its consumer's cap (refused below) or one that may
                # borrow past a consumer over its cap leaves the queue now
                consumer = ex.consumer
                if consumer is None or prio <= self.top_band or gate.limit < 4.0 \
                        or not gate.held:
                    return
                share = self.consumer_max_share
                if not gate.over_cap(consumer, share) and not gate.borrowable(consumer, share):
                    return
            del level[0]
            if not level:
                gate.mask &= ~(1 << prio)
            gate.unqueue(ex)
            ex.gate = None
            gate.queue_delay_sum += now - enq
            gate.queue_delay_n += 1
            if deadline != math.inf and deadline - now < gate.margin:
                gate.count("deadline", prio)
                ex.refused(TIMED_OUT[0], TIMED_OUT[1],
                           "the request waited for the producer until its deadline was too near")
                continue
            consumer = ex.consumer
            if consumer is not None and prio > self.top_band and gate.limit >= 4.0 and \
                    gate.over_cap(consumer, self.consumer_max_share):
                gate.count("consumer_cap", prio)  # it came up while its consumer filled its cap
                ex.refused(TOO_MANY[0], TOO_MANY[1], CAP_DETAIL)
                continue
            self._send(gate, ex, now)
            ex.admitted()
        gate.last_empty = now
        if gate.overloaded:
            gate.overloaded = False
            log.info("producer %s left overload (queue drained)", gate.key)

    def _schedule_report(self) -> None:
        try:
            asyncio.get_running_loop().call_soon(self._report)
        except RuntimeError:
            return
        self._reporting = True

    def _report(self) -> None:
        self._reporting = False
        report = self.report_completions
        if report is not None:
            report()
            if any(g.queued for g in self.gates.values()):
                self._schedule_report()

    def _displace(self, gate: EndpointGate, prio: int, deadline: float) -> bool:
        """Refuse the queue's worst live entry when the newcomer (prio, deadline) outranks it."""
        levels = gate.levels
        while gate.mask:
            worst = gate.mask.bit_length() - 1
            level = levels[worst]
            entry = level[-1]
            ex = entry[3]  # [deadline, seq, enqueued_at, ex, wait cap]
            if ex.done or ex.gate is not gate:
                level.pop()
                if not level:
                    gate.mask &= ~(1 << worst)
                continue
            if (worst, entry[0]) <= (prio, deadline):
                return False
            level.pop()
            if not level:
                gate.mask &= ~(1 << worst)
            gate.unqueue(ex)
            ex.gate = None
            gate.count("displaced", worst)
            ex.refused(CONGESTION[0], CONGESTION[1], "displaced from the producer's queue "
                       "at the SCP by a request of higher priority")
            return True
        return False

    # ---- the queue sweep: CoDel-style delay bound ----------------------------------------------
    def _arm_sweep(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._sweep = loop.call_later(self.settings.queue_target_s / 4, self._run_sweep)

    def _run_sweep(self) -> None:
        """Shed the normal-band entries that waited longer than allowed: each level's head
        (its earliest deadlines, which for one budget are its oldest) while they are over.
        Deadlines themselves are the proxy's timers' and ``_pump``'s to check."""
        self._sweep = None
        now = self.clock()
        s = self.settings
        pending = False
        for gate in list(self.gates.values()):
            if not gate.queued:
                continue
            standing = now - gate.last_empty > s.queue_interval_s
            if standing and not gate.overloaded:
                gate.overloaded = True
                log.warning("producer %s entered overload: requests have queued at the SCP for "
                            "%.0f ms (limit %d in flight)", gate.key,
                            (now - gate.last_empty) * 1000, gate.limit)
            interval = s.queue_interval_s
            prio = s.top_band + 1
            mask = gate.mask >> prio
            while mask:
                if mask & 1:
                    level = gate.levels[prio]
                    while level:
                        _deadline, _seq, enq, ex, cap = level[0]
                        if ex.done or ex.gate is not gate:
                            del level[0]
                            continue
                        if now - enq <= (cap if standing or cap > interval else interval):
                            break
                        del level[0]
                        gate.unqueue(ex)
                        ex.gate = None
                        gate.count("queue_delay", prio)
                        ex.refused(CONGESTION[0], CONGESTION[1],
                                   "the producer is overloaded: the request waited at the SCP "
                                   "longer than the queue delay target")
                    if not level:
                        gate.mask &= ~(1 << prio)
                mask >>= 1
                prio += 1
            if gate.queued:
                pending = True
            else:
                gate.last_empty = now
        if pending:
            self._arm_sweep()

    # ---- outliers -----------------------------------------------------------------------------
    def _eject(self, gate: EndpointGate, now: float) -> None:
        s = self.settings
        if gate.ejected_until > now:
            return
        members = self.clusters.get(gate.cluster, ())
        if members:
            out = sum(1 for g in members if g.ejected_until > now)
            if (out + 1) > s.max_ejected_share * len(members):
                return
        span = min(s.max_ejection_s, s.base_ejection_s * (2 ** gate.ejections))
        gate.ejected_until = now + span
        gate.ejections += 1
        gate.ejected_total += 1
        gate.failures = 0
        log.warning("producer %s ejected for %.0f s after %d consecutive failures", gate.key,
                    span, s.consecutive_failures)

    def ejected(self, endpoint: object) -> bool:
        gate = self.gates.get(endpoint)
        return gate is not None and gate.ejected_until > self.clock()

    # ---- the retry budget ---------------------------------------------------------------------
    def retry_allowed(self) -> bool:
        """May one more request be reselected or retried?  Takes from the budget; give it
        back with ``retry_done``."""
        s = self.settings
        budget = max(float(s.retry_min), s.retry_budget_share * self.in_flight)
        if self.retries_in_flight >= budget:
            self.retries_refused += 1
            return False
        self.retries_in_flight += 1
        return True

    def retry_done(self) -> None:
        if self.retries_in_flight > 0:
            self.retries_in_flight -= 1

    # ---- per-consumer token buckets ------------------------------------------------------------
    def _take_token(self, consumer: object, now: float) -> bool:
        s = self.settings
        b = self.buckets.get(consumer)
        if b is None:
            if len(self.buckets) >= 10000:
                self.buckets.clear()
            b = self.buckets[consumer] = [s.consumer_burst, now]
        tokens = b[0] + (now - b[1]) * s.consumer_rate_per_s
        if tokens > s.consumer_burst:
            tokens = s.consumer_burst
        b[1] = now
        if tokens < 1.0:
            b[0] = tokens
            return False
        b[0] = tokens - 1.0
        return True

    # ---- scopes (NF set, service set...) under overload control ---------------------------------
    def shed_scope(self, scope: str, fraction: float, until: float) -> None:
        if fraction <= 0:
            self.scope_sheds.pop(scope, None)
        else:
            self.scope_sheds[scope] = (min(1.0, fraction), until)

    def _scope_refuses(self, scopes: Iterable[str], gate: EndpointGate, prio: int,
                       now: float) -> bool:
        for scope in scopes:
            rule = self.scope_sheds.get(scope)
            if rule is None:
                continue
            fraction, until = rule
            if until <= now:
                del self.scope_sheds[scope]
                continue
            # the gate's priority mix decides, with the scope's fraction
            if gate.shed_fraction != fraction or gate.shed_until != until:
                gate.shed_fraction, gate.shed_until, gate.shed_at = fraction, until, 0.0
            return gate.oci_refuses(prio, now)
        return False

    # ---- the gateway's own overload: event-loop lag --------------------------------------------
    def start_lag_monitor(self, period_s: float = 0.02) -> None:
        loop = asyncio.get_running_loop()
        self._lag_expected = loop.time() + period_s
        self._lag_timer = loop.call_later(period_s, self._lag_tick, period_s)

    def _lag_tick(self, period_s: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        lag = max(0.0, now - self._lag_expected)
        self.lag = 0.7 * self.lag + 0.3 * lag
        target = self.settings.self_lag_target_s
        # a lone stall (start-up, a GC pass) is not overload: 3 late ticks in a row are
        late = lag > target if not self.self_overloaded else lag > target / 2
        self._lag_run = self._lag_run + 1 if late != self.self_overloaded else 0
        over = self.self_overloaded
        if self._lag_run >= 3:
            over = not self.self_overloaded
            self._lag_run = 0
        if over != self.self_overloaded:
            self.self_overloaded = over
            if over:
                log.warning("the gateway is overloaded: event loop %.0f ms late; shedding "
                            "priorities above %d", self.lag * 1000, self.settings.top_band)
            else:
                log.info("the gateway left overload")
        self._lag_expected = now + period_s
        self._lag_timer = loop.call_later(period_s, self._lag_tick, period_s)

    def stop(self) -> None:
        for timer in (self._sweep, self._lag_timer):
            if timer is not None:
                timer.cancel()
        self._sweep = self._lag_timer = None

    # ---- what the metrics and the admin view read -------------------------------------------------
    def snapshot(self) -> list[dict]:
        """Per endpoint: limit, in flight, queued, mean queue delay, shed counts, ejections,
        OCI state (plain data; read at scrape time, not per request)."""
        now = self.clock()
        out = []
        for gate in self.gates.values():
            out.append({
                "endpoint": gate.key, "cluster": gate.cluster, "limit": gate.limit,
                "in_flight": gate.in_flight, "queued": gate.queued,
                "queue_delay_s_sum": gate.queue_delay_sum, "queue_delay_n": gate.queue_delay_n,
                "rtt_noload_s": None if gate.rtt_noload == math.inf else gate.rtt_noload,
                "shed": dict(gate.shed_counts), "ejected": gate.ejected_until > now,
                "ejections": gate.ejected_total, "forwarded": gate.forwarded,
                "oci_reduction": gate.shed_fraction if gate.shed_until > now else 0.0,
                "overloaded": gate.overloaded,
            })
        return out


# ---- implementation choice -----------------------------------------------------------------------
def load_admission(name: str = "auto") -> type:
    """The ``AdmissionController`` class: ``cython`` (``dataplane._admission_fast``: this very
    file compiled with ``admission.pxd``, see setup.py's TWINS), ``pure`` (this module's), or
    ``auto``: the compiled one when built, unless ``NFMESH_ADMISSION`` names one (A/B runs)."""
    from dataplane.twins import load_twin

    return load_twin(name, ("dataplane._admission_fast", "AdmissionController"),
                     AdmissionController, "NFMESH_ADMISSION", "admission")  # type: ignore


def available_admissions() -> list[str]:
    """Names of the admission implementations that import here."""
    from dataplane.twins import available_twins

    return available_twins(load_admission)
