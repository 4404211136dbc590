# cython: language_level=3, boundscheck=False, wraparound=False
"""The C formatter of an access log batch, used by the compiled twin of the access log
(``gateway.access_log`` compiled as ``gateway._access_log_fast``) in place of the pure
module's ``_format_text`` / ``_format_json``: the same batch (record tuples and keyword lines)
gives byte-identical output (the tests compare them).  The whole batch goes into one C buffer:

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

from libc.stdlib cimport free, realloc
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
cdef object _endpoint_text = _pure._endpoint_text


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


cdef inline bint _text_duration(Buf* b, object duration) except -1:
    cdef int k = -1
    _put(b, b" duration_s=", 12)
    _reserve(b, 32)
    if type(duration) is float:
        k = nfm_fixed6(PyFloat_AS_DOUBLE(duration), b.p + b.n)
    if k < 0:
        return False
    b.n += k
    return True


cdef bint _text_row(Buf* b, object method, object path, object status, object cluster,
                    object up, object duration, object error_code, object peer) except -1:
    """The text line of a record and its newline; False (nothing written) when a field is not
    of the common kinds: the caller lets Python format that line."""
    cdef Py_ssize_t start = b.n
    if (_text_str(b, b"method=", 7, method) and _text_str(b, b" path=", 6, path)
            and _text_int(b, b" status=", 8, status)
            and _text_str(b, b" cluster=", 9, cluster)
            and _text_str(b, b" upstream=", 10, up) and _text_duration(b, duration)
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




cdef inline str _upstream_text(object ep, dict upstreams):
    """An endpoint's text, made once per Endpoint object in a batch ("" for None)."""
    if ep is None:
        return ""
    up = upstreams.get(id(ep))
    if up is None:
        up = upstreams[id(ep)] = _endpoint_text(ep)
    return up


def format_text(list rows, bint utf8_bytes):
    """The text lines of a batch, as ``gateway.access_log._format_text`` writes them: a str,
    or UTF-8 bytes when ``utf8_bytes`` and every value was ASCII."""
    cdef Buf b
    cdef list pieces = None
    cdef tuple t
    cdef object last_ep = None, last_info = None
    b.p = NULL
    b.n = b.cap = 0
    b.ascii = True
    upstreams = {}
    peers = {}
    up = peer = None  # consecutive rows mostly share both
    try:
        for r in rows:
            if type(r) is str:
                pieces = _put_text(&b, <str>r, pieces)
                continue
            t = r
            method, path, status, cluster, ep, duration, error_code, info = t
            if ep is not last_ep or up is None:
                last_ep = ep
                up = _upstream_text(ep, upstreams)
            if info is not last_info or peer is None:
                last_info = info
                peer = peers.get(id(info))
                if peer is None:
                    peer = peers[id(info)] = str(info.get("peername"))
            if not _text_row(&b, method, path, status, cluster, up, duration, error_code, peer):
                pieces = _put_text(&b, _LOG_TEXT % (method, path, status, cluster, up, duration,
                                                     error_code, peer), pieces)
        if utf8_bytes and pieces is None and b.ascii:
            return PyBytes_FromStringAndSize(b.p, b.n)
        text = PyUnicode_DecodeLatin1(b.p, b.n, NULL)
        if pieces is None:
            return text
        pieces.append(text)
        return "".join(pieces)
    finally:
        free(b.p)


cdef list _put_text(Buf* b, str line, list pieces):
    """A whole line (and its newline): copied when it is latin-1, else a piece of its own
    between the buffer's text so far and what follows."""
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


def format_json(list rows, object encode, bint utf8_bytes):
    """The JSON lines of a batch, as ``gateway.access_log._format_json`` writes them with
    msgspec (``encode``: its encoder's ``encode``): UTF-8 bytes when ``utf8_bytes``, else the
    str they decode to."""
    cdef Buf b
    cdef bytes floats_json
    cdef bytes up_json = None
    cdef bytes peer_json = None
    cdef const char* fp
    cdef const char* fe
    cdef const char* s
    cdef Py_ssize_t size
    cdef tuple t
    cdef object last_ep = None, last_info = None
    b.p = NULL
    b.n = b.cap = 0
    # every float duration of the batch encoded in one msgspec call: "[d1,d2,...]"
    floats = [(<tuple>r)[5] for r in rows
              if type(r) is tuple and len(<tuple>r) == 8
              and type((<tuple>r)[5]) is float]
    floats_json = encode(floats) if floats else b"[]"
    fp = PyBytes_AS_STRING(floats_json) + 1
    upstreams = {}
    peers = {}
    try:
        for r in rows:
            if type(r) is str:
                s = PyUnicode_AsUTF8AndSize(r, &size)
                _put(&b, s, size)
                _put(&b, b"\n", 1)
                continue
            t = r
            method, path, status, cluster, ep, duration, error_code, info = t
            if ep is not last_ep or up_json is None:
                last_ep = ep
                up_json = b'""' if ep is None else upstreams.get(id(ep))
                if up_json is None:
                    up_json = upstreams[id(ep)] = encode(_endpoint_text(ep))
            if info is not last_info or peer_json is None:
                last_info = info
                peer_json = peers.get(id(info))
                if peer_json is None:
                    peer_json = peers[id(info)] = encode(info.get("peername"))
            _put(&b, b'{"method":', 10)
            _put_json(&b, method, encode)
            _put(&b, b',"path":', 8)
            _put_json(&b, path, encode)
            _put(&b, b',"status":', 10)
            _put_json(&b, status, encode)
            _put(&b, b',"cluster":', 11)
            _put_json(&b, cluster, encode)
            _put(&b, b',"upstream":', 12)
            _put_bytes(&b, up_json)
            _put(&b, b',"duration_s":', 14)
            if type(duration) is float:
                fe = fp
                while fe[0] != b',' and fe[0] != b']':
                    fe += 1
                _put(&b, fp, fe - fp)
                fp = fe + 1
            else:
                _put_json(&b, duration, encode)
            _put(&b, b',"error_code":', 14)
            _put_json(&b, error_code, encode)
            _put(&b, b',"peer":', 8)
            _put_bytes(&b, peer_json)
            _put(&b, b"}\n", 2)
        if utf8_bytes:
            return PyBytes_FromStringAndSize(b.p, b.n)
        return PyUnicode_DecodeUTF8(b.p, b.n, "replace")
    finally:
        free(b.p)
