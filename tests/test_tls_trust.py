"""TLS contexts trust exactly the CA bundle they are given (the mesh CA), never the system store.

Without this, mutual TLS would accept any client (or producer) certificate issued by one of
the public CAs the operating system trusts.
"""

from __future__ import annotations

from dataplane.tls import client_context, server_context


def test_server_context_trusts_only_the_mesh_ca(pki) -> None:
    ctx = server_context(pki.server_cert, pki.server_key, ca_file=pki.ca_cert,
                         require_client_cert=True)
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "nfmesh test CA"),),)]


def test_client_context_with_a_bundle_trusts_only_it(pki) -> None:
    ctx = client_context(ca_file=pki.ca_cert)
    assert len(ctx.get_ca_certs()) == 1
    assert ctx.cert_store_stats()["x509_ca"] == 1
