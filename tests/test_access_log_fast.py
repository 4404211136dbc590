"""The compiled access log (``gateway._access_log_fast``: ``gateway/access_log.py`` compiled a
second time, its batches formatted by ``gateway._access_log_batch``) against the same file run
as plain Python, which is the reference.

Differential: randomized batches (methods, latin-1 and other unicode paths, statuses, clusters,
IPv4/IPv6/hostname endpoints or None, durations including ties, negatives, huge and non-finite
values, error codes, peers, interleaved keyword lines) must format to exactly the same text in
both formats, and the same calls to ``record``/``__call__``/``flush`` must write the same bytes.
Behaviour of each implementation: the selector, flush triggers (rows, bytes, timer), a broken or
closed output never raises, and the record form through a real proxied HTTP/2 exchange.

The compiled class is tested only when it is built (``python setup.py build_ext --inplace``);
otherwise those cases skip with that reason and the pure one is checked alone.
"""

from __future__ import annotations

import asyncio
import enum
import io
import json
import math
import os
import random
import sys

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataplane.client import H2Client
from dataplane.routing import Endpoint
from gateway import access_log as pure_mod
from gateway.access_log import available_access_logs, load_access_log
from tests.conftest import StaticRouter, start_origin, start_proxy
from tests.waiting import wait_until

try:
    from gateway import _access_log_fast as fast_mod
except ImportError:  # not built: the pure twin is what the package uses
    fast_mod = None

NOT_BUILT = "gateway._access_log_fast is not built (python setup.py build_ext --inplace)"
needs_fast = pytest.mark.skipif(fast_mod is None, reason=NOT_BUILT)
IMPLS = [
    pytest.param("pure", id="pure"),
    pytest.param("cython", id="cython", marks=needs_fast),
]
FORMATS = ["text", "json"]
Pure = pure_mod.AccessLog


class _Code(enum.IntEnum):
    CANCEL = 8


class _Str(str):
    """A str subclass: formatted by Python, never copied raw."""

    def __str__(self) -> str:
        return "sub:" + str.__str__(self)


# ---- strategies ---------------------------------------------------------------------------------

latin1 = st.text(st.characters(max_codepoint=255), max_size=40)
any_text = st.text(max_size=40)  # all code points but surrogates
texts = st.one_of(latin1, latin1, any_text,
                  st.sampled_from(["GET", "POST", "PUT", "/nudm-sdm/v2/imsi-1/am-data", "udm",
                                   "", "a\"b\\c", "\x00\x1f\x7f", "caf\u00e9", "\u2603"]))
hosts = st.one_of(
    st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str),
    st.sampled_from(["udm.example", "localhost", "::1", "fe80::1%eth0"]))
endpoints = st.builds(Endpoint, hosts, st.integers(0, 65535))
ints = st.one_of(st.integers(0, 999), st.integers(0, 999), st.integers(-2**63, 2**63 - 1),
                 st.integers(-2**80, 2**80), st.booleans(), st.just(_Code.CANCEL))
# durations: mostly what a clock gives, then the cases '%.6f' and the JSON float form find hard
ties = st.integers(0, 2**20).map(lambda k: (2 * k + 1) / 2**7)  # exactly half way at 6 decimals
durations = st.one_of(
    st.floats(0, 10), st.floats(0, 2**33), st.floats(0, 1e-5), ties,
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-10, 0),
    st.sampled_from([0.0, -0.0, 5e-7, 4.9999999999999996e-07, 5.000000000000001e-07,
                     0.0000005, 0.9999995, 2.0**32, 2.0**32 - 2**-20, 5e-324, 1e300]),
    st.integers(-5, 10**6), st.just(None), st.just("0.5"))
peernames = st.one_of(
    st.none(),
    st.tuples(st.ip_addresses(v=4).map(str), st.integers(0, 65535)),
    st.tuples(st.ip_addresses(v=6).map(str), st.integers(0, 65535), st.integers(0, 2**20),
              st.integers(0, 2**32 - 1)),
    st.sampled_from(["unix:/run/x.sock", "caf\u00e9"]))
peer_infos = st.one_of(st.builds(lambda p: {"peername": p}, peernames), st.just({}))
keyword_fields = st.dictionaries(
    st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=8),
    st.one_of(texts, st.integers(), st.floats(allow_nan=False), st.none()), max_size=4)


@st.composite
def batches(draw) -> list:
    """A batch as ``_format`` takes it: record tuples and keyword lines, with endpoints and peer
    dicts drawn from small pools so that rows share them (the per-batch caches)."""
    eps = draw(st.lists(st.one_of(st.none(), endpoints), min_size=1, max_size=3))
    infos = draw(st.lists(peer_infos, min_size=1, max_size=3))
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 9)) == 0:
            rows.append(draw(keyword_fields))  # a dict: turned into the format's keyword line
            continue
        rows.append((
            draw(st.one_of(st.sampled_from(["GET", "POST", "PATCH"]), texts)),
            draw(st.one_of(texts, st.builds(_Str, latin1))),
            draw(ints),
            draw(texts),
            draw(st.sampled_from(eps)),
            draw(durations),
            draw(ints),
            draw(st.sampled_from(infos)),
        ))
    return rows


def _keyword_line(fmt: str, fields: dict) -> str:
    # what __call__ stores (the same code in both classes)
    log = Pure(fmt, out=io.StringIO())
    log._after_add = lambda: 0  # keep it, no flush/timer
    log(**fields)
    return log._rows[0]


def _outcome(log, rows: list):
    try:
        return ("ok", log._format(list(rows)))
    except Exception as exc:  # the same failure in both is agreement too
        return ("raised", type(exc))


# ---- the selector -------------------------------------------------------------------------------

def test_selector_and_environment(monkeypatch) -> None:
    monkeypatch.delenv("NFMESH_ACCESS_LOG", raising=False)
    assert load_access_log("pure") is Pure
    assert "pure" in available_access_logs()
    with pytest.raises(ValueError, match="unknown access log implementation"):
        load_access_log("rust")
    if fast_mod is None:
        assert load_access_log() is Pure  # the package works without the native module
        assert available_access_logs() == ["pure"]
        with pytest.raises(ImportError):
            load_access_log("cython")
        return
    assert load_access_log("cython") is fast_mod.AccessLog
    assert load_access_log() is fast_mod.AccessLog  # auto prefers the compiled one
    assert available_access_logs() == ["cython", "pure"]
    monkeypatch.setenv("NFMESH_ACCESS_LOG", "pure")  # A/B measurements of the gateway
    assert load_access_log() is Pure
    assert load_access_log("cython") is fast_mod.AccessLog  # an explicit name wins
    monkeypatch.setenv("NFMESH_ACCESS_LOG", "cython")
    assert load_access_log() is fast_mod.AccessLog


@needs_fast
def test_the_compiled_twin_is_the_same_source_compiled() -> None:
    assert fast_mod.__file__.endswith(".so") and pure_mod.__file__.endswith("access_log.py")
    for name in ("record", "_format", "pending"):
        assert getattr(fast_mod.AccessLog, name).__doc__ == getattr(Pure, name).__doc__
    assert fast_mod._LOG_TEXT == pure_mod._LOG_TEXT


def test_gateway_app_still_exports_the_pure_class() -> None:
    from gateway.app import AccessLog

    assert AccessLog is Pure


# ---- differential: formatting -------------------------------------------------------------------

@needs_fast
@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=batches())
def test_batch_formats_exactly_like_the_pure_one(fmt, rows) -> None:
    rows = [_keyword_line(fmt, r) if isinstance(r, dict) else r for r in rows]
    expected = _outcome(Pure(fmt, out=io.StringIO()), rows)
    got = _outcome(fast_mod.AccessLog(fmt, out=io.StringIO()), rows)
    assert got == expected


def _random_rows(rng: random.Random, n: int) -> list:
    """Cheap bulk cases (hypothesis shrinks, this covers volume): n rows from pools of odd
    values, drawn by a seeded generator."""
    alphabet = "aZ09/-_.?=&%~:@ \"\\\x00\x1f\x7f\x80\xa0\xe9\xff\u0100\u2603\U0001f600"
    eps = [None, Endpoint("10.0.0.1", 80), Endpoint("2001:db8::7", 8443),
           Endpoint("udm.example", 0), Endpoint("caf\u00e9", 1)]
    infos = [{}, {"peername": ("127.0.0.1", 40000)}, {"peername": ("::1", 1, 0, 0)},
             {"peername": None}, {"peername": "caf\u00e9"}]

    def text() -> str:
        k = rng.random()
        if k < 0.7:  # what the wire gives: ASCII, sometimes latin-1
            return "".join(rng.choice(alphabet[:14]) for _ in range(rng.randint(0, 60)))
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))

    def number() -> object:
        return rng.choice([rng.randint(0, 999), rng.randint(0, 999), rng.randint(-2**70, 2**70),
                           True, _Code.CANCEL, -1])

    def duration() -> object:
        k = rng.random()
        if k < 0.6:
            return rng.random() * rng.choice([1e-6, 1e-3, 1.0, 100.0, 2.0**32])
        if k < 0.8:
            return (2 * rng.randint(0, 2**22) + 1) / 2**rng.randint(1, 12)  # exact halves
        return rng.choice([0.0, -0.0, -rng.random(), math.inf, -math.inf, math.nan, 2.0**40,
                           5e-324, 3, None])

    rows: list = []
    for _ in range(n):
        if rng.random() < 0.05:
            rows.append(" ".join(f"k{i}={text()}" for i in range(rng.randint(0, 3))))
            continue
        rows.append((rng.choice(["GET", "POST", text()]), text(), number(), text(),
                     rng.choice(eps), duration(), number(), rng.choice(infos)))
    return rows


@needs_fast
@pytest.mark.parametrize("fmt", FORMATS)
def test_seeded_random_rows_format_exactly_like_the_pure_one(fmt) -> None:
    rng = random.Random(20261126)
    pure, fast = Pure(fmt, out=io.StringIO()), fast_mod.AccessLog(fmt, out=io.StringIO())
    failed = 0
    for _ in range(400):  # 20 000 rows in batches of 50
        rows = _random_rows(rng, 50)
        expected = _outcome(pure, rows)
        failed += expected[0] == "raised"
        if expected[0] == "raised":  # one bad row spoils a batch: compare row by row then
            for row in rows:
                assert _outcome(fast, [row]) == _outcome(pure, [row]), row
        else:
            assert _outcome(fast, rows) == expected
    assert failed < 400  # most batches format (the rest compare row by row)


@needs_fast
@settings(max_examples=3000, deadline=None)
@given(d=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 2**33),
                   st.floats(0, 1), ties, st.integers(0, 2**53).map(lambda k: k / 2**20)))
def test_text_duration_is_python_percent_6f(d) -> None:
    row = ("GET", "/", 200, "c", None, d, 0, {})
    line = fast_mod.AccessLog("text", out=io.StringIO())._format([row])
    assert f" duration_s={d:.6f} " in line
    assert line == Pure("text", out=io.StringIO())._format([row])


@needs_fast
def test_duration_edge_values_both_formats() -> None:
    values = [0.0, -0.0, 1e-9, -1e-9, 5e-7, 0.0000015, 0.0000025, 1 / 128, 3 / 128, 0.5,
              0.9999995, 0.99999949999, 1.0, 123.4567895, 2.0**32 - 2**-21, 2.0**32, 2.0**53,
              1e300, 5e-324, 2.2250738585072014e-308, math.inf, -math.inf, math.nan, -math.nan,
              7, True, None]
    for fmt in FORMATS:
        rows = [("GET", "/", 200, "c", None, d, 0, {}) for d in values]
        assert _outcome(fast_mod.AccessLog(fmt, out=io.StringIO()), rows) == \
            _outcome(Pure(fmt, out=io.StringIO()), rows)
    text = fast_mod.AccessLog("text", out=io.StringIO())._format(
        [("GET", "/", 200, "c", None, d, 0, {}) for d in (1 / 128, 3 / 128, -0.0, math.nan)])
    durations = [line.split(" duration_s=")[1].split(" ")[0] for line in text.splitlines()]
    assert durations == ["0.007812", "0.023438", "-0.000000", "nan"]  # ties to even


@needs_fast
def test_surrogates_fail_the_same_way() -> None:
    # not from the wire (paths are latin-1), but a keyword field could carry one
    rows = [("GET", "/\ud800", 200, "c", None, 0.1, 0, {})]
    for fmt in FORMATS:
        assert _outcome(fast_mod.AccessLog(fmt, out=io.StringIO()), rows) == \
            _outcome(Pure(fmt, out=io.StringIO()), rows)


# ---- differential: the whole object (record, __call__, flush) -----------------------------------

def _records(rows: list) -> list:
    """The record tuples of a generated batch (one plain record when it has none)."""
    return [r for r in rows if isinstance(r, tuple)] or [
        ("GET", "/", 200, "c", None, 0.001, 0, {})]


def _replay(log, out, records: list, ops: list, snapshot) -> list:
    """Run ``ops`` (record / call / text written by someone else / flush) and a last flush on
    ``log``; after each, what ``snapshot()`` shows of the output (and any exception type)."""
    writes = []
    for op, arg in ops + [("flush", None)]:
        try:
            if op == "record":
                log.record(*records[arg % len(records)])
            elif op == "call":
                log(**arg)
            elif op == "text":
                out.write(arg)
            else:
                log.flush()
        except Exception as exc:  # e.g. '%.6f' of None: the batch is lost in both
            writes.append(type(exc))
        writes.append(snapshot())
    return writes


def _same_for_both(drive):
    """``await drive(cls)`` for the pure and the compiled class, each in a fresh event loop;
    the compiled one's result must equal the pure one's, which is returned."""
    loop = uvloop.new_event_loop()
    try:
        expected = loop.run_until_complete(drive(Pure))
        assert loop.run_until_complete(drive(fast_mod.AccessLog)) == expected
    finally:
        loop.close()
    return expected


_ops = st.lists(st.one_of(
    st.tuples(st.just("record"), st.integers(0, 10**6)),
    st.tuples(st.just("call"), keyword_fields),
    st.tuples(st.just("flush"), st.none())), max_size=40)


@needs_fast
@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=batches(), ops=_ops)
def test_same_calls_write_the_same_text(fmt, rows, ops) -> None:
    async def drive(cls) -> list:
        out = io.StringIO()
        return _replay(cls(fmt, out=out, flush_s=60), out, _records(rows), ops, out.getvalue)

    _same_for_both(drive)


_file_ops = st.lists(st.one_of(
    st.tuples(st.just("record"), st.integers(0, 10**6)),
    st.tuples(st.just("call"), keyword_fields),
    st.tuples(st.just("text"), st.text(max_size=12)),  # someone else writing to the stream
    st.tuples(st.just("flush"), st.none())), max_size=40)


@needs_fast
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=batches(), ops=_file_ops)
def test_same_calls_write_the_same_bytes_to_a_file(fmt, encoding, rows, ops) -> None:
    """On a real text file (stderr, a log file: a TextIOWrapper) the compiled log writes a
    UTF-8 batch to the byte buffer underneath: the bytes on the file, and their order with
    what others write through the text layer, are exactly the pure one's.  A file in another
    encoding gets text, as before."""
    async def drive(cls) -> list:
        raw = io.BytesIO()
        out = io.TextIOWrapper(raw, encoding=encoding, errors="backslashreplace")
        writes = _replay(cls(fmt, out=out, flush_s=60), out, _records(rows), ops, raw.getvalue)
        out.flush()
        return [*writes, raw.getvalue()]

    _same_for_both(drive)


@needs_fast
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_keyword_field_named_self_is_logged_by_both(fmt) -> None:
    """The keyword form takes any field name, ``self`` included (hypothesis found the pure
    one raising TypeError there while the compiled one logged it)."""

    async def drive(cls) -> list:
        out = io.StringIO()
        return _replay(cls(fmt, out=out, flush_s=60), out, _records([]),
                       [("call", {"self": None, "x": 1})], out.getvalue)

    writes = _same_for_both(drive)
    assert writes[-1] == ('{"self":null,"x":1}\n' if fmt == "json" else "self=None x=1\n")


@needs_fast
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_stream_reconfigured_to_another_encoding_gets_text(fmt) -> None:
    """The byte path is chosen per write: after ``reconfigure(encoding=...)`` the same log
    writes what the text layer encodes, as the pure one does."""

    async def write(cls) -> bytes:
        raw = io.BytesIO()
        out = io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace")
        log = cls(fmt, out=out, flush_s=60)
        log.record("GET", "/caf\u00e9", 200, "c", None, 0.25, 0, PEER)
        log.flush()
        out.reconfigure(encoding="latin-1")
        log.record("GET", "/na\u00efve", 200, "c", None, 0.5, 0, PEER)
        log.flush()
        return raw.getvalue()

    pure = _same_for_both(write)
    assert "é".encode() in pure  # the first batch in UTF-8 ...
    assert "ï".encode("latin-1") in pure and "ï".encode() not in pure  # ... the second latin-1


# ---- each implementation: batching and flush triggers -------------------------------------------

EP6 = Endpoint("2001:db8::1", 8443)
PEER = {"peername": ("127.0.0.1", 40000)}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("fmt", FORMATS)
async def test_row_bound_writes_before_the_timer(impl, fmt) -> None:
    out = io.StringIO()
    log = load_access_log(impl)(fmt, out=out, flush_s=60)
    for i in range(511):
        log.record("GET", f"/p/{i}", 200, "c", EP6, 0.001, 0, PEER)
    assert out.getvalue() == ""  # nothing written per request
    log.record("GET", "/p/511", 200, "c", EP6, 0.001, 0, PEER)
    assert out.getvalue().count("\n") == 512  # the 512th row wrote the batch at once
    log.record("GET", "/p/512", 200, "c", None, 0.001, 0, PEER)
    assert out.getvalue().count("\n") == 512
    log.flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == 513
    if fmt == "json":
        assert [json.loads(x)["path"] for x in lines] == [f"/p/{i}" for i in range(513)]
        assert json.loads(lines[0])["upstream"] == "[2001:db8::1]:8443"
    else:
        assert lines[0] == ("method=GET path=/p/0 status=200 cluster=c upstream=[2001:db8::1]:8443 "
                            "duration_s=0.001000 error_code=0 peer=('127.0.0.1', 40000)")
        assert " upstream= " in lines[-1]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("fmt", FORMATS)
async def test_byte_bound_writes_early(impl, fmt) -> None:
    out = io.StringIO()
    log = load_access_log(impl)(fmt, out=out, flush_s=60)
    path = "/" + "x" * 2000
    n = 0
    while out.getvalue() == "":
        log.record("PUT", path, 204, "c", None, 0.5, 0, {})
        n += 1
        assert n < 100  # about 64 KiB of paths: well before 512 rows
    assert n == 65536 // (len(path) + 120) + 1
    assert out.getvalue().count("\n") == n


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("fmt", FORMATS)
async def test_timer_writes_a_quiet_batch_and_flush_cancels_it(impl, fmt) -> None:
    out = io.StringIO()
    log = load_access_log(impl)(fmt, out=out, flush_s=0.05)
    log.record("GET", "/a", 200, "c", None, 0.001, 0, PEER)
    log(method="GET", path="/b", status=200)
    assert out.getvalue() == ""
    await wait_until(lambda: out.getvalue(), what="the 0.05 s timer writes the quiet batch")
    assert out.getvalue().count("\n") == 2
    log.record("GET", "/c", 200, "c", None, 0.001, 0, PEER)
    log.flush()  # an explicit flush writes now and cancels the pending timer
    assert log._timer is None and out.getvalue().count("\n") == 3
    # a window of time, kept: twice the 0.05 s timer's delay, in which the cancelled timer
    # must write nothing
    await asyncio.sleep(0.1)
    assert out.getvalue().count("\n") == 3
    log.flush()  # nothing waiting: nothing written
    assert out.getvalue().count("\n") == 3


class _Pipe:
    """A real pipe whose reader is gone: write() raises BrokenPipeError (an OSError)."""

    def __init__(self) -> None:
        r, w = os.pipe()
        os.close(r)
        self.file = open(w, "w", buffering=1)

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("fmt", FORMATS)
async def test_closed_or_broken_output_never_raises(impl, fmt) -> None:
    closed = io.StringIO()
    closed.close()
    pipe = _Pipe()
    try:
        for out in (closed, pipe.file):
            log = load_access_log(impl)(fmt, out=out, flush_s=60)
            for i in range(600):  # crosses the row bound: a write inside record()
                log.record("GET", f"/{i}", 200, "c", EP6, 0.001, 0, PEER)
                log(i=i)
            log.flush()
            assert log._timer is None
    finally:
        pipe.close()
    # and the log goes on working once the output works again
    out = io.StringIO()
    log = load_access_log(impl)(fmt, out=closed, flush_s=60)
    log.record("GET", "/lost", 200, "c", None, 0.001, 0, {})
    log.flush()
    log.out = out
    log.record("GET", "/kept", 200, "c", None, 0.001, 0, {})
    log.flush()
    assert "/kept" in out.getvalue() and "/lost" not in out.getvalue()


# ---- the record form through a real proxied exchange --------------------------------------------

@pytest.fixture
async def origin(backend):
    running = await start_origin(backend)
    yield running
    await running.stop()


@needs_fast
@pytest.mark.parametrize("fmt", FORMATS)
async def test_compiled_log_behind_the_proxy_matches_the_pure_one(backend, origin, fmt) -> None:
    outs = {"pure": io.StringIO(), "cython": io.StringIO()}
    logs = {k: load_access_log(k)(fmt, out=o, flush_s=60) for k, o in outs.items()}

    class Both:  # one proxy, both logs fed the very same record() arguments
        def record(self, *args) -> None:
            logs["pure"].record(*args)
            logs["cython"].record(*args)

    proxy = await start_proxy(backend, StaticRouter(origin.endpoint, cluster="udm"),
                              access_log=Both())
    client = H2Client(backend.NAME)
    try:
        for i in range(4):
            resp = await client.request("POST", f"http://127.0.0.1:{proxy.port}/echo?n={i}",
                                        body=b"x")
            assert resp.status == 200
        assert outs["cython"].getvalue() == ""
        for log in logs.values():
            log.flush()
        got = outs["cython"].getvalue()
        assert got == outs["pure"].getvalue()
        assert len(got.splitlines()) == 4
        assert f"127.0.0.1:{origin.endpoint.port}" in got
    finally:
        client.close()
        await proxy.stop()


# ---- the compiled class's own parts: references, re-entry ------------------------

@needs_fast
@pytest.mark.parametrize("fmt", FORMATS)
async def test_rows_hold_their_values_until_written_then_let_go(fmt) -> None:
    path = "/only-here-" + "x" * 30
    info = {"peername": ("192.0.2.1", 5)}
    before = sys.getrefcount(path), sys.getrefcount(info)
    log = fast_mod.AccessLog(fmt, out=io.StringIO(), flush_s=60)
    for _ in range(100):
        log.record("GET", path, 200, "c", None, 0.5, 0, info)
    assert sys.getrefcount(path) == before[0] + 100  # the batch holds them
    log.flush()
    assert (sys.getrefcount(path), sys.getrefcount(info)) == before
    log.record("GET", path, 200, "c", None, None, 0, info)  # a row that cannot be formatted
    if fmt == "text":
        with pytest.raises(TypeError):  # as the pure class: '%.6f' of None
            log.flush()
    else:
        log.flush()
    assert (sys.getrefcount(path), sys.getrefcount(info)) == before  # released all the same
    log.record("GET", "/next", 200, "c", None, 0.5, 0, info)  # and the log goes on
    log.flush()
    assert "/next" in log.out.getvalue()
    with pytest.raises(ValueError):
        log._format([("too", "short")])
    with pytest.raises(TypeError):
        log._format([["GET", "/", 200, "c", None, 0.5, 0, {}]])
    assert (sys.getrefcount(path), sys.getrefcount(info)) == before


@needs_fast
async def test_a_record_made_while_writing_goes_to_the_next_batch() -> None:
    class Echoing(io.StringIO):
        """An output that logs a line through the same log while it is written to."""

        log = None

        def write(self, text: str) -> int:
            if self.log is not None and "/inner" not in text:
                self.log.record("GET", "/inner", 200, "c", None, 0.1, 0, {})
            return super().write(text)

    out = Echoing()
    log = fast_mod.AccessLog("text", out=out, flush_s=60)
    out.log = log
    for i in range(512):  # the 512th row writes the batch from inside record()
        log.record("GET", f"/{i}", 200, "c", None, 0.1, 0, {})
    assert out.getvalue().count("\n") == 512 and log.pending == 1
    log.flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == 513 and "/inner" in lines[-1]


@pytest.mark.parametrize("impl", IMPLS)
async def test_format_can_be_changed_between_writes(impl) -> None:
    out = io.StringIO()
    log = load_access_log(impl)("json", out=out, flush_s=60)
    log.record("GET", "/j", 200, "c", None, 0.25, 0, {})
    log.flush()
    log.fmt = "text"
    assert log.fmt == "text"
    log.record("GET", "/t", 200, "c", None, 0.25, 0, {})
    log.flush()
    first, second = out.getvalue().splitlines()
    assert json.loads(first)["path"] == "/j"
    assert second.startswith("method=GET path=/t status=200 ")
