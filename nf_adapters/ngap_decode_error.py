"""``NgapDecodeError``, the one error both NGAP routing-key twins raise (``nf_adapters.ngap.
routing_key`` and its compiled form ``nf_adapters._ngap_fast``).  It lives outside the
``nf_adapters.ngap`` package so that importing the compiled twin first does not run the
package's loader, which imports the compiled twin."""


class NgapDecodeError(ValueError):
    """The bytes are not an NGAP message the fast path can read."""
