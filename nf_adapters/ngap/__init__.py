"""NGAP (TS 38.413) for the N2 proxy: routing keys, the pycrate codec, and the ngap_router.

``extract`` and ``rewrite_ue_ids`` are the Cython fast path (``nf_adapters._ngap_fast``) when
it is built, else the pure-Python twin (``nf_adapters.ngap.routing_key``); ``FAST`` says which.
"""

from nf_adapters.ngap.routing_key import NgapDecodeError

try:
    from nf_adapters._ngap_fast import extract, rewrite_ue_ids

    FAST = True
except ImportError:  # no compiler: the pure twin, same API
    from nf_adapters.ngap.routing_key import extract, rewrite_ue_ids

    FAST = False

__all__ = ["FAST", "NgapDecodeError", "extract", "rewrite_ue_ids"]
