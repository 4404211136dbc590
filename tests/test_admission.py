"""The admission controller (dataplane.admission) on its own, with an injected clock and
stand-in exchanges: queue order, deadlines, CoDel delay bound, reserved share, OCI shedding,
outlier ejection, retry budget, consumer buckets and the adaptive limit."""

from __future__ import annotations

import math
import random

import pytest

from dataplane.admission import GO, QUEUED, AdmissionSettings, available_admissions, load_admission

IMPL = [load_admission("pure")]


@pytest.fixture(autouse=True, params=available_admissions())
def _impl(request) -> None:
    """Every test on each twin: the pure module and the same file compiled."""
    IMPL[0] = load_admission(request.param)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(12345)  # probe jitter and partial OCI shedding draw from random: same draws


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Ex:
    """What the proxy's exchange offers the controller."""

    def __init__(self, priority: int, due: float = 0.0, consumer: object = None,
                 endpoint: str = "p1", cluster: str = "c", scopes: tuple = ()) -> None:
        self.priority = priority
        self.due = due
        self.consumer = consumer
        self.endpoint = endpoint
        self.cluster = cluster
        self.scopes = scopes
        self.done = False
        self.gate = None
        self.sent_at = -1.0
        self.events: list = []

    def admitted(self) -> None:
        self.events.append("go")

    def refused(self, status: int, cause: str, detail: str) -> None:
        self.events.append((status, cause))
        self.done = True


def controller(clock: Clock, **kw):
    base = dict(initial_limit=2, min_limit=1, max_limit=2, reserved_share=0.0,
                consumer_rate_per_s=0.0, probe_interval_s=1e9)
    base.update(kw)
    return IMPL[0](AdmissionSettings(**base), clock=clock)


def finish(ctl, ex: Ex, status: int = 200, failed: bool = False) -> None:
    ex.done = True
    ctl.release(ex, status, failed)


def test_queue_is_ordered_by_priority_then_deadline() -> None:
    clock = Clock()
    ctl = controller(clock)
    a, b = Ex(16), Ex(16)
    assert ctl.admit(a) == GO and ctl.admit(b) == GO
    late = Ex(20, due=clock.t + 5)
    urgent = Ex(20, due=clock.t + 1)
    top = Ex(2, due=clock.t + 9)
    low = Ex(28)
    for ex in (late, low, urgent, top):
        assert ctl.admit(ex) == QUEUED
    order = []
    running = [a, b]
    while running:
        ex = running.pop(0)
        clock.t += 0.001
        finish(ctl, ex)
        for cand in (late, low, urgent, top):
            if cand.events == ["go"] and cand not in order:
                order.append(cand)
                running.append(cand)
    assert order == [top, urgent, late, low]


def test_default_priority_applies_to_requests_without_one() -> None:
    ctl = controller(Clock(), default_priority=24)
    ex = Ex(-1)
    assert ctl.admit(ex) == GO and ex.priority == 24


def test_deadline_nearer_than_the_response_time_is_refused_at_once() -> None:
    clock = Clock()
    ctl = controller(clock, max_limit=10, initial_limit=10)
    first = Ex(16)
    assert ctl.admit(first) == GO
    clock.t += 0.050  # the producer answers in 50 ms
    finish(ctl, first)
    hopeless = Ex(16, due=clock.t + 0.020)
    verdict = ctl.admit(hopeless)
    assert verdict != GO and verdict != QUEUED
    assert verdict[:2] == (504, "TIMED_OUT_REQUEST")
    assert ctl.admit(Ex(16, due=clock.t + 0.5)) == GO


def test_a_queued_request_whose_deadline_comes_near_is_never_sent() -> None:
    clock = Clock()
    ctl = controller(clock)
    warm = Ex(16)
    ctl.admit(warm)
    clock.t += 0.010
    finish(ctl, warm)  # no-load response time: 10 ms
    busy = [Ex(16), Ex(16)]
    for ex in busy:
        assert ctl.admit(ex) == GO
    waiting = Ex(2, due=clock.t + 0.050)  # top band: waits until its deadline, not less
    assert ctl.admit(waiting) == QUEUED
    clock.t += 0.045  # 5 ms left < 10 ms response time
    ctl._run_sweep()  # the delay bound does not apply to the top band
    assert waiting.events == []
    finish(ctl, busy[0])  # a place frees up: too late for it, it is answered, not sent
    assert waiting.events == [(504, "TIMED_OUT_REQUEST")]
    assert ctl.gates["p1"].in_flight == 1 and ctl.gates["p1"].queued == 0


def test_standing_queue_bounds_the_wait_of_the_normal_band_only() -> None:
    clock = Clock()
    ctl = controller(clock, queue_target_s=0.01, queue_interval_s=0.1, queue_max_wait_s=0.01)
    busy = [Ex(16), Ex(16)]
    for ex in busy:
        ctl.admit(ex)
    normal = Ex(16)
    top = Ex(3)
    assert ctl.admit(normal) == QUEUED and ctl.admit(top) == QUEUED
    clock.t += 0.05  # 50 ms: no standing queue yet (interval 100 ms): both wait
    ctl._run_sweep()
    assert normal.events == [] and top.events == []
    clock.t += 0.06  # the queue has stood 110 ms: the normal one has waited > 10 ms
    ctl._run_sweep()
    assert normal.events == [(503, "NF_CONGESTION")]
    assert top.events == []
    finish(ctl, busy[0])
    assert top.events == ["go"]


def test_a_standing_queue_lets_a_longer_budget_wait_longer() -> None:
    clock = Clock()
    ctl = controller(clock, queue_target_s=0.05, queue_interval_s=0.1, queue_wait_share=0.1,
                     queue_max_wait_s=1.0)
    busy = [Ex(16), Ex(16)]
    for ex in busy:
        ctl.admit(ex)
    short = Ex(16, due=clock.t + 0.5)  # 500 ms to live: may wait 50 ms once the queue stands
    long = Ex(16, due=clock.t + 30.0)  # 30 s: 1 s at most
    none = Ex(16)  # no deadline: 1 s
    for ex in (short, long, none):
        assert ctl.admit(ex) == QUEUED
    clock.t += 0.2  # the queue has stood 200 ms
    ctl._run_sweep()
    assert short.events == [(503, "NF_CONGESTION")]
    assert long.events == [] and none.events == []
    clock.t += 0.85
    ctl._run_sweep()
    assert long.events == [(503, "NF_CONGESTION")] and none.events == [(503, "NF_CONGESTION")]


def test_top_band_uses_the_reserved_share() -> None:
    clock = Clock()
    ctl = controller(clock, initial_limit=10, max_limit=10, reserved_share=0.2)
    normal = [Ex(16) for _ in range(8)]
    assert all(ctl.admit(ex) == GO for ex in normal)
    assert ctl.admit(Ex(16)) == QUEUED  # 8 of 10 are the normal band's
    assert ctl.admit(Ex(5)) == GO  # the top band goes past the queue into the reserve
    assert ctl.admit(Ex(5)) == GO
    assert ctl.admit(Ex(5)) == QUEUED  # the limit itself holds for everyone


def test_standing_queue_refuses_newcomers_at_once_unless_they_outrank_it() -> None:
    clock = Clock()
    ctl = controller(clock, queue_target_s=0.01, queue_interval_s=0.1, queue_max_wait_s=0.01)
    ctl.queue_floor = 2
    for _ in range(2):
        ctl.admit(Ex(16))
    queued = [Ex(20), Ex(20)]
    for ex in queued:
        assert ctl.admit(ex) == QUEUED
    clock.t += 0.001
    ctl._run_sweep()
    gate = ctl.gates["p1"]
    gate.overloaded = True  # as the sweep finds a queue that stood past the interval
    late = ctl.admit(Ex(24))
    assert late[:2] == (503, "NF_CONGESTION")  # refused at once, no wait
    assert ctl.admit(Ex(16)) == QUEUED  # outranks a queued 20: takes its place
    assert queued[1].events == [(503, "NF_CONGESTION")] and queued[0].events == []
    assert ctl.admit(Ex(3)) == QUEUED  # the top band is never refused for the delay bound
    assert gate.queued == 3


def test_full_queue_displaces_the_lowest_priority() -> None:
    clock = Clock()
    ctl = controller(clock, queue_max=2)
    for _ in range(2):
        ctl.admit(Ex(16))
    low, normal = Ex(28), Ex(16)
    assert ctl.admit(low) == QUEUED and ctl.admit(normal) == QUEUED
    high = Ex(2)
    assert ctl.admit(high) == QUEUED
    assert low.events == [(503, "NF_CONGESTION")]
    refused = ctl.admit(Ex(30))
    assert refused[:2] == (503, "NF_CONGESTION")


def test_client_gone_while_queued_frees_its_place() -> None:
    clock = Clock()
    ctl = controller(clock)
    busy = [Ex(16), Ex(16)]
    for ex in busy:
        ctl.admit(ex)
    gone, next_one = Ex(16), Ex(16)
    ctl.admit(gone)
    ctl.admit(next_one)
    finish(ctl, gone, status=0)  # the client reset it while it waited
    assert ctl.gates["p1"].queued == 1
    finish(ctl, busy[0])
    assert gone.events == [] and next_one.events == ["go"]


def mix(ctl, clock: Clock, n: int, shares: dict[int, float],
        endpoint: str = "p1", scopes: tuple = ()) -> dict[int, int]:
    """Send n requests with the priority mix; count the ones let through per priority."""
    passed = {p: 0 for p in shares}
    seq = [p for p, share in shares.items() for _ in range(round(share * 100))]
    for i in range(n):
        p = seq[i % len(seq)]
        ex = Ex(p, endpoint=endpoint, scopes=scopes)
        clock.t += 0.0005
        if ctl.admit(ex) == GO:
            passed[p] += 1
            finish(ctl, ex)
    return passed


MIX = {2: 0.1, 16: 0.6, 28: 0.3}


def test_oci_sheds_its_share_lowest_priority_first() -> None:
    clock = Clock()
    ctl = controller(clock, initial_limit=1000, max_limit=1000)
    mix(ctl, clock, 2000, MIX)  # the gate learns the mix
    gate = ctl.gates["p1"]
    gate.shed(0.5, clock.t + 10)
    passed = mix(ctl, clock, 4000, MIX)
    total = sum(passed.values())
    assert 0.4 <= total / 4000 <= 0.6
    assert passed[2] == 400  # the top band untouched
    assert passed[28] == 0  # lowest first
    assert 0 < passed[16] < 2400
    clock.t += 20  # validity over
    assert sum(mix(ctl, clock, 1000, MIX).values()) == 1000


def test_oci_on_a_scope_applies_to_every_endpoint_in_it() -> None:
    clock = Clock()
    ctl = controller(clock, initial_limit=1000, max_limit=1000)
    mix(ctl, clock, 1000, MIX, endpoint="p2", scopes=("nfset:set1",))
    ctl.shed_scope("nfset:set1", 0.35, clock.t + 5)
    passed = mix(ctl, clock, 2000, MIX, endpoint="p2", scopes=("nfset:set1",))
    assert passed[28] == 0 and passed[2] == 200
    other = mix(ctl, clock, 1000, MIX, endpoint="p3", scopes=("nfset:set2",))
    assert sum(other.values()) == 1000


def test_outlier_ejection_backs_off_and_caps_the_cluster_share() -> None:
    clock = Clock()
    ctl = controller(clock, initial_limit=100, max_limit=100, consecutive_failures=3,
                     base_ejection_s=2.0, max_ejected_share=0.5)
    for ep in ("a", "b", "c", "d"):
        ctl.gate(ep, "c")

    def fail(ep: str, n: int) -> None:
        for _ in range(n):
            ex = Ex(16, endpoint=ep)
            assert ctl.admit(ex) == GO
            finish(ctl, ex, status=503, failed=True)

    fail("a", 2)
    assert not ctl.ejected("a")
    fail("a", 1)
    assert ctl.ejected("a")
    fail("b", 3)
    assert ctl.ejected("b")
    fail("c", 3)
    assert not ctl.ejected("c")  # two of four out already: the cap holds
    clock.t += 2.1
    assert not ctl.ejected("a")  # back after 2 s
    fail("a", 3)
    assert ctl.ejected("a")
    clock.t += 2.1
    assert ctl.ejected("a")  # second time: 4 s
    clock.t += 2.0
    assert not ctl.ejected("a")


def test_success_resets_the_failure_count() -> None:
    clock = Clock()
    ctl = controller(clock, initial_limit=100, max_limit=100, consecutive_failures=3)
    for failed in (True, True, False, True, True):
        ex = Ex(16)
        ctl.admit(ex)
        finish(ctl, ex, status=503 if failed else 200, failed=failed)
    assert not ctl.ejected("p1")


def test_retry_budget_is_a_share_of_requests_in_flight() -> None:
    clock = Clock()
    ctl = controller(clock, initial_limit=1000, max_limit=1000, retry_budget_share=0.2,
                     retry_min=3)
    assert [ctl.retry_allowed() for _ in range(4)] == [True, True, True, False]
    for _ in range(30):
        ctl.admit(Ex(16))
    assert ctl.retry_allowed() and ctl.retry_allowed() and ctl.retry_allowed()
    assert not ctl.retry_allowed()  # 6 = 20% of 30
    ctl.retry_done()
    assert ctl.retry_allowed()
    assert ctl.retries_refused == 2


def test_consumer_buckets_limit_one_consumer_not_the_others() -> None:
    clock = Clock()
    ctl = controller(clock, initial_limit=1000, max_limit=1000, consumer_rate_per_s=100.0,
                     consumer_burst=10.0)

    def send(consumer: str, prio: int = 16):
        ex = Ex(prio, consumer=consumer)
        v = ctl.admit(ex)
        if v == GO:
            finish(ctl, ex)
        return v

    assert all(send("AMF-1") == GO for _ in range(10))
    assert send("AMF-1")[:2] == (429, "TOO_MANY_REQUESTS")
    assert send("AMF-1", prio=1) == GO  # the top band is exempt
    assert send("AMF-2") == GO  # another consumer has its own bucket
    clock.t += 0.0501  # 5 tokens back
    assert [send("AMF-1") == GO for _ in range(6)] == [True] * 5 + [False]


def test_under_overload_a_flooding_consumer_gets_only_its_share_of_the_queue() -> None:
    clock = Clock()
    ctl = controller(clock, queue_target_s=1.0, queue_interval_s=2.0)
    for _ in range(2):
        ctl.admit(Ex(16, consumer="AMF-2"))  # the producer is busy
    gate = ctl.gates["p1"]
    assert ctl.admit(Ex(16, consumer="AMF-2")) == QUEUED
    assert ctl.admit(Ex(16, consumer="AMF-3")) == QUEUED
    gate.overloaded = True  # the queue has stood
    verdicts = [ctl.admit(Ex(16, consumer="AMF-1")) for _ in range(10)]
    assert verdicts[:2] == [QUEUED, QUEUED]
    assert all(v[:2] == (429, "TOO_MANY_REQUESTS") for v in verdicts[2:])
    assert ctl.admit(Ex(16, consumer="AMF-3")) == QUEUED  # the others still get in
    assert ctl.admit(Ex(2, consumer="AMF-1")) == QUEUED  # the top band is never refused for it
    assert gate.by_consumer == {"AMF-2": 1, "AMF-3": 2, "AMF-1": 3}


class Producer:
    """A producer of concurrency c and service time s: response time grows with the excess."""

    def __init__(self, c: int, s: float) -> None:
        self.c, self.s = c, s

    def rtt(self, in_flight: int) -> float:
        return self.s * max(1.0, in_flight / self.c)


def drive(ctl, clock: Clock, producer: Producer, seconds: float,
          endpoint: str = "p1") -> list[float]:
    """Keep the gate full (an overload) for ``seconds``; the limits seen each 10 ms."""
    gate = ctl.gate(endpoint, "c")
    running: list[tuple[float, Ex]] = []
    limits = []
    end = clock.t + seconds
    next_mark = clock.t
    while clock.t < end:
        while True:
            ex = Ex(16, endpoint=endpoint)
            if ctl.admit(ex) != GO:
                ex.done = True
                ctl.release(ex, 0, False)
                break
            running.append((clock.t + producer.rtt(gate.in_flight), ex))
        running.sort(key=lambda r: r[0])
        t, ex = running.pop(0)
        clock.t = max(clock.t, t)
        finish(ctl, ex)
        if clock.t >= next_mark:
            limits.append(gate.limit)
            next_mark = clock.t + 0.01
    for t, ex in sorted(running, key=lambda r: r[0]):
        clock.t = max(clock.t, t)
        finish(ctl, ex)
    return limits


def test_adaptive_limit_settles_near_the_producers_concurrency() -> None:
    clock = Clock()
    ctl = controller(clock, initial_limit=50, min_limit=2, max_limit=1000,
                     probe_interval_s=1.0)
    limits = drive(ctl, clock, Producer(8, 0.004), 6.0)
    settled = limits[len(limits) // 2:]
    assert 8 <= min(settled) and max(settled) <= 20, (min(settled), max(settled))
    assert ctl.gates["p1"].rtt_noload == pytest.approx(0.004, rel=0.01)


def test_limit_follows_a_producer_that_gets_more_capacity() -> None:
    clock = Clock()
    ctl = controller(clock, initial_limit=16, min_limit=2, max_limit=1000, probe_interval_s=1.0)
    drive(ctl, clock, Producer(8, 0.004), 2.0)
    limits = drive(ctl, clock, Producer(64, 0.004), 4.0)
    assert limits[-1] >= 64


def test_timeouts_bring_the_limit_down() -> None:
    clock = Clock()
    ctl = controller(clock, initial_limit=40, min_limit=2, max_limit=100)
    warm = Ex(16)
    ctl.admit(warm)
    clock.t += 0.005
    finish(ctl, warm)  # no-load 5 ms
    for _ in range(20):  # then every answer is our 504 after 500 ms: the producer hangs
        batch = [Ex(16) for _ in range(10)]
        for ex in batch:
            ctl.admit(ex)
        clock.t += 0.5
        for ex in batch:
            finish(ctl, ex, status=504, failed=True)
    assert ctl.gates["p1"].limit <= 4


def test_limit_does_not_grow_when_unused() -> None:
    clock = Clock()
    ctl = controller(clock, initial_limit=16, min_limit=2, max_limit=1000)
    for _ in range(2000):  # one request at a time, never near the limit
        ex = Ex(16)
        ctl.admit(ex)
        clock.t += 0.004
        finish(ctl, ex)
    assert ctl.gates["p1"].limit == 16


def test_reload_keeps_learned_state_within_new_bounds() -> None:
    clock = Clock()
    ctl = controller(clock, initial_limit=50, max_limit=100)
    ctl.gate("p1").limit = 80.0
    ctl.configure(AdmissionSettings(max_limit=40))
    assert ctl.gates["p1"].limit == 40
    assert ctl.gates["p1"].rtt_noload == math.inf


def test_one_consumer_holds_at_most_its_share_of_the_slots() -> None:
    """limit 16, max share 0.75, another consumer present: the hog's 13th request is refused at
    once (429, counted as consumer_cap) while slots are free; the other is still admitted."""
    clock = Clock()
    ctl = controller(clock, initial_limit=16, max_limit=16)
    assert ctl.admit(Ex(20, consumer="other")) == GO
    hog = [Ex(20, consumer="hog") for _ in range(12)]
    assert [ctl.admit(ex) for ex in hog] == [GO] * 12
    refused = ctl.admit(Ex(20, consumer="hog"))
    assert refused[:2] == (429, "TOO_MANY_REQUESTS") and "share" in refused[2]
    gate = ctl.gate("p1")
    assert gate.in_flight == 13 and gate.held == {"hog": 12, "other": 1}
    assert gate.shed_counts == {("consumer_cap", 20): 1}
    other = [Ex(20, consumer="other") for _ in range(3)]
    assert [ctl.admit(ex) for ex in other] == [GO] * 3
    assert ctl.admit(Ex(20)) == QUEUED  # full: no consumer key, no cap, it waits
    assert ctl.admit(Ex(3, consumer="hog")) == QUEUED  # the top band is never capped


def test_a_consumer_alone_is_not_capped_and_one_that_came_first_cannot_starve_others() -> None:
    """Work-conserving: alone, a consumer may use every slot.  When another comes to the full
    gate, it is sent anyway (up to the first one's excess over its cap), and the first one's
    next request is refused while the gate is contended."""
    clock = Clock()
    ctl = controller(clock, initial_limit=16, max_limit=16)
    hog = [Ex(20, consumer="hog") for _ in range(16)]
    assert [ctl.admit(ex) for ex in hog] == [GO] * 16  # alone: all 16, no 429
    gate = ctl.gate("p1")
    assert gate.shed_counts == {}
    late = [Ex(20, consumer="late") for _ in range(5)]
    # the hog is 4 over its cap of 12: the late one gets 4 slots beyond the limit, then waits
    assert [ctl.admit(ex) for ex in late] == [GO] * 4 + [QUEUED]
    assert gate.in_flight == 20 and gate.held == {"hog": 16, "late": 4}
    assert ctl.admit(Ex(20, consumer="hog"))[0] == 429  # contended now: over its cap
    assert gate.shed_counts == {("consumer_cap", 20): 1}
    for ex in hog[:6]:  # the hog finishes some: back under its cap, nothing over to borrow
        finish(ctl, ex)
    assert gate.held["hog"] == 10 and not gate.borrowable("late", 0.75)


def test_a_consumer_gets_its_slots_back_on_release_and_move() -> None:
    clock = Clock()
    ctl = controller(clock, initial_limit=8, max_limit=8, consumer_max_share=0.5)
    assert ctl.admit(Ex(20, consumer="d", endpoint="p1")) == GO  # the gate is contended
    mine = [Ex(20, consumer="c", endpoint="p1") for _ in range(4)]
    assert [ctl.admit(ex) for ex in mine] == [GO] * 4
    assert ctl.admit(Ex(20, consumer="c"))[0] == 429
    finish(ctl, mine[0])
    assert ctl.gate("p1").held == {"c": 3, "d": 1}
    assert ctl.admit(Ex(20, consumer="c")) == GO  # the slot it gave back is its again
    ctl.move(mine[1], "p2")  # a reselection: its slot at p1 is given back, one at p2 taken
    assert ctl.gate("p1").held == {"c": 3, "d": 1} and ctl.gate("p2").held == {"c": 1}
    finish(ctl, mine[1])
    assert ctl.gate("p2").held == {} and ctl.gate("p2").in_flight == 0


def test_no_cap_below_a_limit_of_four() -> None:
    clock = Clock()
    ctl = controller(clock, initial_limit=3, max_limit=3, min_limit=1)
    assert [ctl.admit(Ex(20, consumer="c")) for _ in range(3)] == [GO] * 3
    assert ctl.admit(Ex(20, consumer="c")) == QUEUED
    assert ctl.gate("p1").shed_counts == {}


def test_a_queued_request_over_its_consumers_cap_is_refused_when_it_comes_up() -> None:
    """Queued while the gate was full (nobody over a cap, so nothing to borrow) and its
    consumer under its cap; by the time a slot frees, the consumer filled its cap with a
    top-band request: refused then, not sent."""
    clock = Clock()
    ctl = controller(clock, initial_limit=4, max_limit=4, consumer_max_share=0.5)
    first = [Ex(20, consumer="a"), Ex(20, consumer="b"), Ex(20, consumer="b"),
             Ex(20, consumer="c")]
    assert [ctl.admit(ex) for ex in first] == [GO] * 4
    gate = ctl.gate("p1")
    assert gate.held == {"a": 1, "b": 2, "c": 1}
    assert ctl.admit(Ex(20, consumer="b"))[0] == 429  # b at its cap of 2, contended
    normal, top = Ex(20, consumer="a"), Ex(2, consumer="a")
    assert ctl.admit(normal) == QUEUED and ctl.admit(top) == QUEUED  # a under its cap: waits
    finish(ctl, first[1])
    assert top.events == ["go"] and gate.held == {"a": 2, "b": 1, "c": 1}  # top band counts
    finish(ctl, first[3])
    assert normal.events == [(429, "TOO_MANY_REQUESTS")]
    assert gate.held == {"a": 2, "b": 1} and gate.in_flight == 3
    assert gate.shed_counts == {("consumer_cap", 20): 2}
