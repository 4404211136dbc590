# cython: language_level=3
# C declarations for compiling dataplane/admission.py (one source, two twins): setup.py compiles
# that file as dataplane._admission_fast with this file beside it, so that the gate and the
# controller are extension types with C fields.  The pure module ignores this file.  Every
# field is public: the tests, the metrics and the proxy read and set them from Python.

cdef class EndpointGate:
    cdef public object controller, key, cluster, levels, mask, prio_counts, shed_counts
    cdef public object by_consumer, held
    cdef public double limit, cap_top, cap_normal, margin, last_empty, drain_rate
    cdef public double rtt_noload, rtt_sum, window_end, probe_at, probe_start
    cdef public double ejected_until, shed_fraction, shed_until, shed_partial, shed_at
    cdef public double queue_delay_sum
    cdef public long in_flight, queued, done_n, rtt_n, probe_n, max_in_flight, failures
    cdef public long ejections, shed_threshold, queue_delay_n
    cdef public long forwarded, ejected_total
    cdef public bint overloaded, probing


cdef class AdmissionController:
    cdef public object settings, clock, gates, clusters, _last_key, _last_gate, _seq
    cdef public object report_completions, _sweep, scope_sheds, buckets, _lag_timer
    cdef public long queue_floor, in_flight, retries_in_flight, retries_refused, _lag_run
    cdef public long self_shed, top_band, default_priority
    cdef public double lag, _lag_expected, consumer_rate, consumer_max_share
    cdef public bint _reporting, self_overloaded
