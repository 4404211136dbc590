"""``UpstreamPools.get_ready`` without a clock read per request: the idle sweep still never
closes a connection before ``idle_for`` of real idleness, and closes it at most one sweep
period later than the per-request timestamps did.

Time is a controllable clock (``upstream_pool.time`` replaced): idle timing cannot be tested
in a few seconds of real time without timed assertions.  The connections are real (an
in-process HTTP/2 origin) except in the property test, which replays long random timelines on
stand-in connections (``available``/``open_streams`` flipped at will, which a real peer
cannot do on cue)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane import upstream_pool
from dataplane.engine import H2Settings
from dataplane.routing import Endpoint
from dataplane.upstream_pool import UpstreamPools, _EndpointPool
from tests.conftest import start_origin
from tests.waiting import wait_until


class _Clock:
    """Stands for the ``time`` module inside ``dataplane.upstream_pool``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(upstream_pool, "time", c)
    return c


# ---- real connections -------------------------------------------------------------------------

@pytest.fixture
async def origin_pools(backend, clock):
    """An in-process origin and pools with the sweeper off (the tests sweep by hand)."""
    origin = await start_origin(backend)
    pools = UpstreamPools(backend, H2Settings(), connect_timeout=1.0, idle_timeout=0)
    yield origin, pools
    pools.close()
    await origin.stop()


async def test_get_ready_hands_the_first_free_connection_and_idles_it_out(origin_pools, clock):
    origin, pools = origin_pools
    conn = await pools.acquire(origin.endpoint)  # connected at t=1000
    assert pools.get_ready(origin.endpoint) is conn
    assert pools.get_ready(Endpoint("127.0.0.1", 1)) is None  # no pool for it
    clock.now += 59.0
    assert pools.get_ready(origin.endpoint) is conn  # last use: t=1059
    clock.now += 59.0
    assert pools.close_idle(60.0) == 0  # 59 s idle; this sweep stamps it at t=1118
    clock.now += 59.5
    assert pools.close_idle(60.0) == 0  # counted from that stamp (late, never early)
    clock.now += 0.5
    assert pools.close_idle(60.0) == 1  # 60 s after the sweep that saw it used
    assert pools.get_ready(origin.endpoint) is None
    await wait_until(lambda: conn.closed)
    assert pools.connections(origin.endpoint) == []


async def test_a_connection_in_use_is_never_idle(origin_pools, clock):
    origin, pools = origin_pools
    conn = await pools.acquire(origin.endpoint)
    for _ in range(10):  # a request every 30 s, sweeps in between
        clock.now += 30.0
        assert pools.get_ready(origin.endpoint) is conn
        clock.now += 15.0
        assert pools.close_idle(60.0) == 0
    assert not conn.closed and pools.connections(origin.endpoint) == [conn]


async def test_closed_hot_connection_is_forgotten(origin_pools):
    origin, pools = origin_pools
    conn = await pools.acquire(origin.endpoint)
    assert pools.get_ready(origin.endpoint) is conn
    pool = pools._pools[origin.endpoint]
    assert pool.hot is conn
    conn.close()
    await wait_until(lambda: pool.hot is None)
    assert id(conn) not in pool.last_used
    conn2 = await pools.acquire(origin.endpoint)  # a new connection
    assert conn2 is not conn and pools.get_ready(origin.endpoint) is conn2


# ---- the idle bound on random timelines --------------------------------------------------------

class _Conn:
    """Stands for a ClientConnection whose room for streams the test sets."""

    def __init__(self) -> None:
        self.available = True
        self.closed = False
        self.open_streams = 0

    def close(self) -> None:
        self.closed = True
        self.available = False


def test_get_ready_order_queue_and_cache_edges() -> None:
    pools = UpstreamPools("h2", H2Settings(), idle_timeout=0)
    a, b = Endpoint("127.0.0.1", 8081), Endpoint("127.0.0.1", 8082)
    pa = pools._pools[a] = _EndpointPool()
    pb = pools._pools[b] = _EndpointPool()
    c1, c2, c3 = _Conn(), _Conn(), _Conn()
    pa.conns.extend([c1, c2])
    pb.conns.append(c3)
    assert pools.get_ready(None) is None  # no pool, and the empty cache matches nothing
    assert pools.get_ready(a) is c1
    c1.available = False
    assert pools.get_ready(a) is c2 and pa.hot is c2  # the first one with room
    assert pools.get_ready(b) is c3  # the last-endpoint cache follows the argument
    assert pools.get_ready(Endpoint("127.0.0.1", 8081)) is c2  # equal endpoint, another object
    c2.available = False
    assert pools.get_ready(a) is None
    c1.available = True
    pa.reserved[id(c1)] = 1  # a queued request holds a stream: newcomers do not overtake
    assert pools.get_ready(a) is None
    pa.reserved.clear()
    pa.waiters.append(object())
    assert pools.get_ready(a) is None
    pa.waiters.clear()
    assert pools.get_ready(a) is c1
    pa.conns.clear()
    assert pools.get_ready(a) is None
    pools.close()
    assert pools.get_ready(a) is None and pools.get_ready(b) is None


IDLE, PERIOD = 60.0, 15.0  # the sweeper's period for idle_timeout=60 is 60 / 4

steps = st.lists(st.one_of(
    st.tuples(st.just("request"), st.floats(0.0, 40.0)),  # advance, then get_ready
    st.tuples(st.just("full"), st.integers(0, 2)),  # connection i at its stream limit
    st.tuples(st.just("free"), st.integers(0, 2)),
    st.tuples(st.just("busy"), st.integers(0, 2)),  # connection i has an open stream
    st.tuples(st.just("quiet"), st.integers(0, 2)),
    st.tuples(st.just("wait"), st.floats(0.0, 200.0)),  # advance with no request
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_idle_close_is_never_early_and_at_most_a_period_late(events) -> None:
    clock = _Clock(0.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(upstream_pool, "time", clock)
        _replay_timeline(clock, events)


def _replay_timeline(clock: _Clock, events) -> None:
    pools = UpstreamPools("h2", H2Settings(), idle_timeout=0)
    ep = Endpoint("127.0.0.1", 8081)
    pool = pools._pools[ep] = _EndpointPool()
    conns = [_Conn() for _ in range(3)]
    pool.conns.extend(conns)
    real_last = {id(c): 0.0 for c in conns}  # when each was really handed out last
    for c in conns:
        pool.last_used[id(c)] = 0.0  # as _connect stamps
    next_sweep = PERIOD

    def advance(dt: float) -> None:
        nonlocal next_sweep
        target = clock.now + dt
        while next_sweep <= target:  # the sweeper's ticks on the way
            clock.now = next_sweep
            sweep()
            next_sweep += PERIOD
        clock.now = target

    def sweep() -> None:
        before = [c for c in pool.conns]
        pools.close_idle(IDLE)
        for c in before:
            idle = clock.now - real_last[id(c)]
            if c.closed:  # never before IDLE of real idleness (or already closed by peer)
                assert c.open_streams == 0 and idle >= IDLE, (idle, clock.now)
            elif c.open_streams == 0:  # at most one period later than per-request stamps
                assert idle < IDLE + PERIOD, (idle, clock.now)

    for kind, arg in events:
        if kind == "request":
            advance(arg)
            conn = pools.get_ready(ep)
            free = [c for c in pool.conns if c.available]
            assert conn is (free[0] if free else None)
            if conn is not None:
                real_last[id(conn)] = clock.now
        elif kind == "wait":
            advance(arg)
        elif conns[arg].closed:
            continue
        elif kind == "full":
            conns[arg].available = False
        elif kind == "free":
            conns[arg].available = True
        elif kind == "busy":
            conns[arg].open_streams = 1
        else:
            conns[arg].open_streams = 0
    advance(IDLE + 2 * PERIOD)
    for c in conns:
        if c.open_streams == 0:
            assert c.closed
    pools.close()


# ---- the compiled proxy's shortcut ----------------------------------------------------------

ready_steps = st.lists(st.one_of(
    st.tuples(st.just("ask"), st.integers(0, 2)),  # get_ready for endpoint i (2: no pool)
    st.tuples(st.just("room"), st.integers(0, 2), st.booleans()),  # connection i has room?
    st.tuples(st.just("queue"), st.booleans()),  # a request waits for a stream
    st.tuples(st.just("reserve"), st.booleans()),  # a stream handed to a queued request
    st.tuples(st.just("drop_first"), st.just(0)),  # the first connection leaves the pool
), max_size=50)


@settings(max_examples=400, deadline=None)
@given(ready_steps)
def test_compiled_ready_connection_answers_as_get_ready(events) -> None:
    """``_proxy_fast.ready_connection`` (the compiled proxy's per-request pool lookup) hands
    out the same connection as ``get_ready`` and leaves the pool in the same state."""
    fast = pytest.importorskip("dataplane._proxy_fast")
    clock = _Clock(0.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(upstream_pool, "time", clock)
        worlds = []
        for _ in range(2):
            pools = UpstreamPools("h2", H2Settings(), idle_timeout=0)
            eps = [Endpoint("127.0.0.1", 8081), Endpoint("127.0.0.1", 8082),
                   Endpoint("127.0.0.1", 8083)]
            conns = [_Conn() for _ in range(3)]
            pool = pools._pools[eps[0]] = _EndpointPool()
            pool.conns.extend(conns[:2])
            pools._pools[eps[1]] = _EndpointPool()
            pools._pools[eps[1]].conns.append(conns[2])
            worlds.append((pools, eps, conns, pool))
        for step, (op, *args) in enumerate(events):
            clock.now = float(step)
            answers = []
            for w, (pools, eps, conns, pool) in enumerate(worlds):
                if op == "ask":
                    get = pools.get_ready if w == 0 else \
                        (lambda ep, pools=pools: fast.ready_connection(pools, ep))
                    got = get(eps[args[0]])
                    answers.append(None if got is None else conns.index(got))
                elif op == "room":
                    conns[args[0]].available = args[1]
                elif op == "queue":
                    pool.waiters.clear()
                    if args[0]:
                        pool.waiters.append(object())
                elif op == "reserve":
                    pool.reserved.clear()
                    if args[0]:
                        pool.reserved[id(conns[1])] = 1
                elif op == "drop_first" and pool.conns:
                    pool.conns.pop(0)
            if op == "ask":
                assert answers[0] == answers[1], (events[: step + 1], answers)
            states = []
            for pools, eps, conns, pool in worlds:
                index = {id(c): i for i, c in enumerate(conns)}
                states.append((
                    None if pool.hot is None else conns.index(pool.hot),
                    sorted((index[k], v) for k, v in pool.last_used.items()),
                    eps.index(pools._last_endpoint) if pools._last_endpoint in eps else None,
                ))
            assert states[0] == states[1], (events[: step + 1], states)
