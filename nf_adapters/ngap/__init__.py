"""NGAP (TS 38.413) for the N2 proxy: routing keys, the pycrate codec, and the ngap_router.

``extract`` and ``rewrite_ue_ids`` are the compiled twin (``nf_adapters._ngap_fast``:
``nf_adapters/ngap/routing_key.py`` compiled) when it is built, else that pure module's, unless
``NFMESH_NGAP_KEYS=pure|cython`` says otherwise; ``FAST`` says which, ``load_routing_keys``
gives either pair.
"""

from collections.abc import Callable

from dataplane.twins import load_twin
from nf_adapters.ngap import routing_key
from nf_adapters.ngap.routing_key import NgapDecodeError


def load_routing_keys(name: str = "auto") -> tuple[Callable, Callable]:
    """``(extract, rewrite_ue_ids)``: ``cython`` (``nf_adapters._ngap_fast``: routing_key.py
    compiled with routing_key.pxd, see setup.py's TWINS), ``pure`` (``routing_key``'s), or
    ``auto``: the compiled pair when built, unless ``NFMESH_NGAP_KEYS`` names one (A/B runs)."""
    return load_twin(name, ("nf_adapters._ngap_fast", "FUNCTIONS"),  # type: ignore[return-value]
                     routing_key.FUNCTIONS, "NFMESH_NGAP_KEYS", "NGAP routing key")


extract, rewrite_ue_ids = load_routing_keys()
FAST = extract is not routing_key.extract

__all__ = ["FAST", "NgapDecodeError", "extract", "load_routing_keys", "rewrite_ue_ids"]
