# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled twin of ``gateway.access_log.AccessLog``: record() and batch formatting in C.

Same API and byte-identical output as the pure class (which stays the reference and the
fallback when this module is not built).  ``record`` keeps the raw values of a request in a
C array of rows (references held, a float duration as a C double: no tuple, nothing
formatted); ``flush`` formats the whole batch into one C buffer:

* text: the line is written with C string copies into a latin-1 buffer (the str fields are
  copied from their one-byte storage, ints with an itoa, the duration as ``'%.6f'`` by exact
  integer arithmetic, correctly rounded with ties to even like Python's dtoa);
* json: strings that need no escape are copied (checked eight bytes at a time), latin-1 ones
  UTF-8 encoded in C, ints written in C; all the batch's float durations are encoded by
  msgspec in ONE call (its shortest float form is the reference) and spliced in; the upstream
  and peer JSON are encoded once per endpoint / connection in the batch.

Whatever falls outside those fast cases (a str with characters beyond latin-1, a str subclass,
a bool, an int beyond 64 bits, a negative, huge or non-finite duration, ...) is formatted by
the pure module's own code (``_LOG_TEXT % row``, the msgspec encoder), so the output matches
the pure class on every input, not just the common ones.
"""

import asyncio
import codecs
import io
import json
import sys

from cpython.ref cimport Py_XDECREF, Py_XINCREF, PyObject
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

from gateway import access_log as _pure

cdef extern from "Python.h":
    int PyUnicode_KIND(object s)
    int PyUnicode_IS_ASCII(object s)
    unsigned char* PyUnicode_1BYTE_DATA(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL
    object PyUnicode_DecodeLatin1(const char* s, Py_ssize_t size, const char* errors)
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1
    double PyFloat_AS_DOUBLE(object o)
    char* PyBytes_AS_STRING(object o)
    object PyBytes_FromStringAndSize(const char* s, Py_ssize_t size)
    Py_ssize_t PyBytes_GET_SIZE(object o)

cdef extern from *:
    """
    #include <math.h>
    #include <string.h>

    /* '%.6f' of d for 0 <= d < 2**32 with the sign bit clear: d = m / 2**s exactly, so
       d * 10**6 = m * 10**6 / 2**s, rounded to the nearest integer, ties to even (what
       Python's correctly rounded dtoa does).  Returns the length written, or -1 when d is
       outside that range (the caller lets Python format it). */
    static int nfm_fixed6(double d, char *out) {
        int e, s, n = 0, i;
        double f;
        unsigned long long m, q, ip, fp;
        char tmp[24];
        if (!(d >= 0.0) || d >= 4294967296.0 || signbit(d)) return -1;
        f = frexp(d, &e);
        m = (unsigned long long)ldexp(f, 53);
        s = 53 - e;
        if (m == 0 || s >= 128) {
            q = 0;
        } else {
            unsigned __int128 num = (unsigned __int128)m * 1000000u;
            unsigned __int128 qq = num >> s;
            unsigned __int128 r = num - (qq << s);
            unsigned __int128 half = (unsigned __int128)1 << (s - 1);
            if (r > half || (r == half && (qq & 1))) qq++;
            q = (unsigned long long)qq;
        }
        ip = q / 1000000u;
        fp = q % 1000000u;
        do { tmp[n++] = (char)('0' + ip % 10u); ip /= 10u; } while (ip);
        for (i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
        out[n] = '.';
        for (i = 6; i >= 1; i--) { out[n + i] = (char)('0' + fp % 10u); fp /= 10u; }
        return n + 7;
    }

    /* 1 when none of the n bytes needs a JSON escape or is beyond ASCII (no control
       character, quote, backslash or byte >= 0x80), eight bytes at a time */
    static int nfm_json_plain(const unsigned char *s, Py_ssize_t n) {
        const unsigned long long ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
        unsigned long long w, acc = 0;
        Py_ssize_t i = 0;
        for (; i + 8 <= n; i += 8) {
            memcpy(&w, s + i, 8);
            acc |= w | ((w - ones * 0x20) & ~w)
                   | (((w ^ (ones * 0x22)) - ones) & ~(w ^ (ones * 0x22)))
                   | (((w ^ (ones * 0x5c)) - ones) & ~(w ^ (ones * 0x5c)));
        }
        if (acc & high) return 0;
        for (; i < n; i++) {
            unsigned char c = s[i];
            if (c < 0x20 || c == 0x22 || c == 0x5c || c >= 0x80) return 0;
        }
        return 1;
    }

    /* the decimal text of v (what str(int) writes), returns its length (at most 20) */
    static int nfm_lltoa(long long v, char *out) {
        char tmp[24];
        int n = 0, i = 0;
        unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
        do { tmp[n++] = (char)('0' + u % 10u); u /= 10u; } while (u);
        if (v < 0) out[i++] = '-';
        while (n) out[i++] = tmp[--n];
        return i;
    }
    """
    int nfm_fixed6(double d, char* out) noexcept nogil
    int nfm_lltoa(long long v, char* out) noexcept nogil
    int nfm_json_plain(const unsigned char* s, Py_ssize_t n) noexcept nogil

cdef object _LOG_TEXT = _pure._LOG_TEXT
cdef Py_ssize_t _LOG_MAX_ROWS = _pure._LOG_MAX_ROWS
cdef Py_ssize_t _LOG_MAX_BYTES = _pure._LOG_MAX_BYTES
cdef object _endpoint_text = _pure._endpoint_text
cdef object _get_running_loop = asyncio.get_running_loop

NAME = "cython"


cdef struct Row:
    # one record()'s raw values (references held), or a keyword line (kind 1, in ``method``)
    PyObject* method
    PyObject* path
    PyObject* status
    PyObject* cluster
    PyObject* upstream
    PyObject* duration  # NULL: a float duration, kept as the C double ``dur``
    PyObject* error_code
    PyObject* info
    double dur
    int kind


cdef struct Buf:
    char* p
    Py_ssize_t n
    Py_ssize_t cap
    bint ascii  # text batches: every str copied so far was ASCII (the bytes are UTF-8 too)


cdef int _grow(Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap = b.cap * 2 if b.cap else 16384
    cdef char* p
    while cap < b.n + extra:
        cap *= 2
    p = <char*>realloc(b.p, cap)
    if p == NULL:
        raise MemoryError()
    b.p = p
    b.cap = cap
    return 0


cdef inline int _reserve(Buf* b, Py_ssize_t extra) except -1:
    if b.n + extra > b.cap:
        _grow(b, extra)
    return 0


cdef inline int _put(Buf* b, const char* s, Py_ssize_t n) except -1:
    if b.n + n > b.cap:
        _grow(b, n)
    memcpy(b.p + b.n, s, n)
    b.n += n
    return 0


cdef inline int _put_bytes(Buf* b, bytes s) except -1:
    return _put(b, PyBytes_AS_STRING(s), PyBytes_GET_SIZE(s))


cdef inline bint _put_latin1(Buf* b, object s) except -1:
    """Text: copy an exact str stored one byte per character; False for anything else."""
    if type(s) is not str or PyUnicode_KIND(s) != 1:
        return False
    if not PyUnicode_IS_ASCII(s):
        b.ascii = False
    _put(b, <const char*>PyUnicode_1BYTE_DATA(s), PyUnicode_GET_LENGTH(s))
    return True


cdef inline bint _put_int(Buf* b, object v) except -1:
    """An exact int within 64 bits as str() writes it; False for anything else."""
    cdef int overflow = 0
    cdef long long x
    if type(v) is not int:
        return False
    x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow:
        return False
    _reserve(b, 24)
    b.n += nfm_lltoa(x, b.p + b.n)
    return True


cdef inline bint _put_json_str(Buf* b, object s) except -1:
    """JSON: an exact one-byte str as msgspec writes it (quoted, UTF-8, characters >= 0x80
    raw); False when it needs an escape (control characters, quote, backslash) or is not that."""
    cdef Py_ssize_t i, n
    cdef const unsigned char* src
    cdef unsigned char c
    cdef char* dst
    if type(s) is not str or PyUnicode_KIND(s) != 1:
        return False
    n = PyUnicode_GET_LENGTH(s)
    src = PyUnicode_1BYTE_DATA(s)
    _reserve(b, 2 * n + 2)
    dst = b.p + b.n
    if nfm_json_plain(src, n):  # the common case: copied as is
        dst[0] = b'"'
        memcpy(dst + 1, src, n)
        dst[n + 1] = b'"'
        b.n += n + 2
        return True
    dst[0] = b'"'
    dst += 1
    for i in range(n):
        c = src[i]
        if c < 0x20 or c == 0x22 or c == 0x5c:
            return False  # nothing committed: b.n has not moved
        if c < 0x80:
            dst[0] = <char>c
            dst += 1
        else:
            dst[0] = <char>(0xC0 | (c >> 6))
            dst[1] = <char>(0x80 | (c & 0x3F))
            dst += 2
    dst[0] = b'"'
    b.n = (dst + 1) - b.p
    return True


cdef inline bint _text_str(Buf* b, const char* label, Py_ssize_t n, object v) except -1:
    _put(b, label, n)
    return _put_latin1(b, v)


cdef inline bint _text_int(Buf* b, const char* label, Py_ssize_t n, object v) except -1:
    _put(b, label, n)
    return _put_int(b, v)


cdef inline bint _text_duration(Buf* b, PyObject* duration, double dur) except -1:
    cdef int k = -1
    _put(b, b" duration_s=", 12)
    _reserve(b, 32)
    if duration == NULL:
        k = nfm_fixed6(dur, b.p + b.n)
    elif type(<object>duration) is float:
        k = nfm_fixed6(PyFloat_AS_DOUBLE(<object>duration), b.p + b.n)
    if k < 0:
        return False
    b.n += k
    return True


cdef bint _text_row(Buf* b, object method, object path, object status, object cluster,
                    object up, PyObject* duration, double dur, object error_code,
                    object peer) except -1:
    """The text line of a record and its newline; False (nothing written) when a field is not
    of the common kinds: the caller lets Python format that line."""
    cdef Py_ssize_t start = b.n
    if (_text_str(b, b"method=", 7, method) and _text_str(b, b" path=", 6, path)
            and _text_int(b, b" status=", 8, status)
            and _text_str(b, b" cluster=", 9, cluster)
            and _text_str(b, b" upstream=", 10, up) and _text_duration(b, duration, dur)
            and _text_int(b, b" error_code=", 12, error_code)
            and _text_str(b, b" peer=", 6, peer)):
        _put(b, b"\n", 1)
        return True
    b.n = start
    return False


cdef inline int _put_json(Buf* b, object v, object encode) except -1:
    """Any value as msgspec writes it: plain strings and ints here, the rest by msgspec."""
    if _put_json_str(b, v) or _put_int(b, v):
        return 0
    return _put_bytes(b, encode(v))


cdef void _release(Row* rows, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    cdef Row* r
    for i in range(n):
        r = &rows[i]
        Py_XDECREF(r.method)
        Py_XDECREF(r.path)
        Py_XDECREF(r.status)
        Py_XDECREF(r.cluster)
        Py_XDECREF(r.upstream)
        Py_XDECREF(r.duration)
        Py_XDECREF(r.error_code)
        Py_XDECREF(r.info)


cdef inline void _fill(Row* r, object method, object path, object status, object cluster,
                       object upstream, PyObject* duration, double dur, object error_code,
                       object info) noexcept:
    r.method = <PyObject*>method
    r.path = <PyObject*>path
    r.status = <PyObject*>status
    r.cluster = <PyObject*>cluster
    r.upstream = <PyObject*>upstream
    r.duration = duration
    r.dur = dur
    r.error_code = <PyObject*>error_code
    r.info = <PyObject*>info
    r.kind = 0
    Py_XINCREF(r.method)
    Py_XINCREF(r.path)
    Py_XINCREF(r.status)
    Py_XINCREF(r.cluster)
    Py_XINCREF(r.upstream)
    Py_XINCREF(r.duration)
    Py_XINCREF(r.error_code)
    Py_XINCREF(r.info)


cdef inline void _fill_record(Row* r, object method, object path, object status,
                              object cluster, object upstream, object duration,
                              object error_code, object info) noexcept:
    """``_fill`` from ``record``'s arguments: a float duration is kept as a C double."""
    if type(duration) is float:
        _fill(r, method, path, status, cluster, upstream, NULL, PyFloat_AS_DOUBLE(duration),
              error_code, info)
    else:
        _fill(r, method, path, status, cluster, upstream, <PyObject*>duration, 0.0,
              error_code, info)


cdef inline void _fill_line(Row* r, object line) noexcept:
    r.method = <PyObject*>line
    Py_XINCREF(r.method)
    r.path = r.status = r.cluster = r.upstream = r.duration = r.error_code = r.info = NULL
    r.kind = 1


cdef class AccessLog:
    """One line per request (JSON or text) on stderr, written in batches: the compiled twin of
    ``gateway.access_log.AccessLog`` (same constructor, ``record``, ``__call__``, ``flush``).

    The batch is a C array of rows holding references to the raw values (no tuple per
    request); ``flush`` detaches it before formatting, so a record made meanwhile starts a new
    batch."""

    cdef public object out, flush_s
    cdef object _fmt
    cdef readonly Py_ssize_t _size
    cdef readonly object _timer
    cdef object _dumps, _encode, _flush
    cdef bint _json
    cdef Buf _buf
    cdef Row* _rows  # the batch being collected (NULL until its first row)
    cdef Py_ssize_t _n
    cdef Row* _spare  # a written batch's array, reused by the next one

    def __init__(self, fmt="json", out=None, flush_s=0.2):
        import msgspec

        self.fmt = fmt
        self.out = out if out is not None else sys.stderr
        self.flush_s = flush_s
        self._size = 0
        self._timer = None
        self._dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode
        self._encode = msgspec.json.Encoder(enc_hook=str).encode
        self._flush = self.flush

    def __dealloc__(self):
        if self._rows != NULL:
            _release(self._rows, self._n)
            free(self._rows)
            self._rows = NULL
        free(self._spare)
        self._spare = NULL
        free(self._buf.p)
        self._buf.p = NULL

    @property
    def fmt(self) -> object:
        """"json" or anything else for text, as in the pure class (a change applies to the
        next write)."""
        return self._fmt

    @fmt.setter
    def fmt(self, value) -> None:
        self._fmt = value
        self._json = value == "json"

    @property
    def pending(self) -> int:
        """Rows waiting for the next write."""
        return self._n

    cdef Row* _slot(self) except NULL:
        if self._rows == NULL:
            if self._spare != NULL:
                self._rows = self._spare
                self._spare = NULL
            else:
                self._rows = <Row*>malloc(_LOG_MAX_ROWS * sizeof(Row))
                if self._rows == NULL:
                    raise MemoryError()
        return &self._rows[self._n]

    def __call__(self, **fields):
        if self._json:
            line = self._dumps(fields)
        else:
            line = " ".join(f"{k}={v}" for k, v in fields.items())
        _fill_line(self._slot(), line)
        self._n += 1
        self._size += len(line)
        self._after_add()

    def record(self, method, path, status, cluster, upstream, duration_s, error_code,
               peer_info):
        """One finished request: ``upstream`` an ``Endpoint`` or None, ``peer_info`` the
        connection's (its ``peername`` is logged).  Same fields as the keyword form."""
        _fill_record(self._slot(), method, path, status, cluster, upstream, duration_s,
                     error_code, peer_info)
        self._n += 1
        self._size += len(path) + 120
        self._after_add()

    cdef int _after_add(self) except -1:
        if self._size > _LOG_MAX_BYTES or self._n >= _LOG_MAX_ROWS:
            self.flush()
        elif self._timer is None:
            self._timer = _get_running_loop().call_later(self.flush_s, self._flush)
        return 0

    def flush(self):
        cdef Row* rows
        cdef Py_ssize_t n
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._n:
            rows = self._rows
            n = self._n
            self._rows = NULL
            self._n = 0
            self._size = 0
            try:
                try:
                    out = self.out
                    sink = self._byte_sink(out)
                    data = self._format_rows(rows, n, sink is not None)
                    if type(data) is bytes:  # UTF-8 already: skip decoding and re-encoding
                        out.flush()  # what the text layer holds goes first
                        sink.write(data)
                    else:
                        out.write(data)
                    out.flush()
                except (OSError, ValueError):
                    pass  # a closed log stream must never stop the data plane
            finally:
                _release(rows, n)
                if self._spare == NULL:
                    self._spare = rows
                else:
                    free(rows)

    cdef object _byte_sink(self, out):
        """``out``'s binary buffer when ``out`` is a text file writing UTF-8 (stderr, a log
        file): a batch that is UTF-8 already goes there as bytes.  None for anything else
        (StringIO, other encodings), which gets text.  Asked at every write (a stream can be
        reconfigured; the codec registry caches the lookup)."""
        if type(out) is not io.TextIOWrapper:
            return None
        try:
            if codecs.lookup(out.encoding).name == "utf-8":
                return out.buffer
        except (LookupError, AttributeError, ValueError):
            pass
        return None

    def _format(self, list rows):
        """The text of a batch given as the pure class keeps it (record tuples and keyword
        lines), made by the same code as ``flush``'s: for tests and comparisons."""
        cdef Py_ssize_t i, n = len(rows), filled = 0
        cdef Row* arr = <Row*>malloc((n or 1) * sizeof(Row))
        cdef tuple t
        if arr == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                r = rows[i]
                if type(r) is str:
                    _fill_line(&arr[i], r)
                else:
                    t = r
                    method, path, status, cluster, upstream, duration, error_code, info = t
                    _fill_record(&arr[i], method, path, status, cluster, upstream, duration,
                                 error_code, info)
                filled = i + 1
            return self._format_rows(arr, n, False)
        finally:
            _release(arr, filled)
            free(arr)

    cdef object _format_rows(self, Row* rows, Py_ssize_t n, bint utf8_bytes):
        """The batch as str, or as UTF-8 bytes when ``utf8_bytes`` and it is made as such (JSON
        always; text when every value was ASCII)."""
        self._buf.n = 0
        if self._json:
            return self._format_json(rows, n, utf8_bytes)
        return self._format_text(rows, n, utf8_bytes)

    cdef object _format_text(self, Row* rows, Py_ssize_t n, bint utf8_bytes):
        cdef Buf* b = &self._buf
        cdef list pieces = None
        cdef Py_ssize_t i
        cdef Row* r
        cdef PyObject* last_ep = NULL
        cdef PyObject* last_info = NULL
        upstreams = {}
        peers = {}
        b.ascii = True
        up = peer = None  # consecutive rows mostly share both
        for i in range(n):
            r = &rows[i]
            if r.kind:
                pieces = self._put_text(<str>r.method, pieces)
                continue
            if r.upstream != last_ep or up is None:
                last_ep = r.upstream
                ep = <object>r.upstream
                up = upstreams.get(id(ep)) if ep is not None else ""
                if up is None:
                    up = upstreams[id(ep)] = _endpoint_text(ep)
            if r.info != last_info or peer is None:
                last_info = r.info
                info = <object>r.info
                peer = peers.get(id(info))
                if peer is None:
                    peer = peers[id(info)] = str(info.get("peername"))
            if not _text_row(b, <object>r.method, <object>r.path, <object>r.status,
                             <object>r.cluster, up, r.duration, r.dur, <object>r.error_code,
                             peer):
                duration = <object>r.duration if r.duration != NULL else r.dur
                pieces = self._put_text(
                    _LOG_TEXT % (<object>r.method, <object>r.path, <object>r.status,
                                 <object>r.cluster, up, duration, <object>r.error_code, peer),
                    pieces)
        if utf8_bytes and pieces is None and b.ascii:
            data = PyBytes_FromStringAndSize(b.p, b.n)
            b.n = 0
            return data
        text = PyUnicode_DecodeLatin1(b.p, b.n, NULL)
        b.n = 0
        if pieces is None:
            return text
        pieces.append(text)
        return "".join(pieces)

    cdef list _put_text(self, str line, list pieces):
        """A whole line (and its newline): copied when it is latin-1, else a piece of its own
        between the buffer's text so far and what follows."""
        cdef Buf* b = &self._buf
        if PyUnicode_KIND(line) == 1:
            if not PyUnicode_IS_ASCII(line):
                b.ascii = False
            _put(b, <const char*>PyUnicode_1BYTE_DATA(line), PyUnicode_GET_LENGTH(line))
            _put(b, b"\n", 1)
            return pieces
        if pieces is None:
            pieces = []
        pieces.append(PyUnicode_DecodeLatin1(b.p, b.n, NULL))
        b.n = 0
        pieces.append(line)
        _put(b, b"\n", 1)
        return pieces

    cdef object _format_json(self, Row* rows, Py_ssize_t n, bint utf8_bytes):
        cdef Buf* b = &self._buf
        cdef bytes floats_json
        cdef bytes up_json = None
        cdef bytes peer_json = None
        cdef const char* fp
        cdef const char* fe
        cdef const char* s
        cdef Py_ssize_t i, size
        cdef Row* r
        cdef PyObject* last_ep = NULL
        cdef PyObject* last_info = NULL
        encode = self._encode
        # every float duration of the batch encoded in one msgspec call: "[d1,d2,...]"
        floats = [rows[i].dur for i in range(n) if not rows[i].kind and rows[i].duration == NULL]
        floats_json = encode(floats) if floats else b"[]"
        fp = PyBytes_AS_STRING(floats_json) + 1
        upstreams = {}
        peers = {}
        for i in range(n):
            r = &rows[i]
            if r.kind:
                s = PyUnicode_AsUTF8AndSize(<object>r.method, &size)
                _put(b, s, size)
                _put(b, b"\n", 1)
                continue
            if r.upstream != last_ep or up_json is None:
                last_ep = r.upstream
                ep = <object>r.upstream
                if ep is None:
                    up_json = b'""'
                else:
                    up_json = upstreams.get(id(ep))
                    if up_json is None:
                        up_json = upstreams[id(ep)] = encode(_endpoint_text(ep))
            if r.info != last_info or peer_json is None:
                last_info = r.info
                info = <object>r.info
                peer_json = peers.get(id(info))
                if peer_json is None:
                    peer_json = peers[id(info)] = encode(info.get("peername"))
            _put(b, b'{"method":', 10)
            _put_json(b, <object>r.method, encode)
            _put(b, b',"path":', 8)
            _put_json(b, <object>r.path, encode)
            _put(b, b',"status":', 10)
            _put_json(b, <object>r.status, encode)
            _put(b, b',"cluster":', 11)
            _put_json(b, <object>r.cluster, encode)
            _put(b, b',"upstream":', 12)
            _put_bytes(b, up_json)
            _put(b, b',"duration_s":', 14)
            if r.duration == NULL:
                fe = fp
                while fe[0] != b',' and fe[0] != b']':
                    fe += 1
                _put(b, fp, fe - fp)
                fp = fe + 1
            else:
                _put_json(b, <object>r.duration, encode)
            _put(b, b',"error_code":', 14)
            _put_json(b, <object>r.error_code, encode)
            _put(b, b',"peer":', 8)
            _put_bytes(b, peer_json)
            _put(b, b"}\n", 2)
        if utf8_bytes:
            data = PyBytes_FromStringAndSize(b.p, b.n)
            b.n = 0
            return data
        text = PyUnicode_DecodeUTF8(b.p, b.n, "replace")
        b.n = 0
        return text
