"""Throw-away test PKI made with ``cryptography``: a CA, a server and a client certificate.

``make_pki(directory)`` writes PEM files and returns their paths; the server certificate is valid
for localhost, 127.0.0.1 and ::1, the client certificate carries a URI SAN like the mesh's NF
identities (``urn:uuid:...``).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_URI = "urn:uuid:6b2f5a2e-0c1d-4a53-9d3e-8d3a7c1e9f01"


@dataclass(frozen=True)
class PKI:
    ca_cert: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca_cert: str  # a CA that signed nothing here (for verification failures)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key, path: str) -> None:
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def _write_cert(cert: x509.Certificate, path: str) -> None:
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def _ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(ca_key, ca_cert, cn: str, sans: list, usage):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def make_pki(directory: str) -> PKI:
    """Create the PEM files under ``directory``."""
    p = lambda name: os.path.join(directory, name)  # noqa: E731
    ca_key, ca_cert = _ca("nfmesh test CA")
    _, other_cert = _ca("unrelated CA")
    s_key, s_cert = _leaf(ca_key, ca_cert, "localhost", [
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ], ExtendedKeyUsageOID.SERVER_AUTH)
    c_key, c_cert = _leaf(ca_key, ca_cert, "amf-test", [
        x509.UniformResourceIdentifier(CLIENT_URI),
    ], ExtendedKeyUsageOID.CLIENT_AUTH)
    _write_cert(ca_cert, p("ca.pem"))
    _write_cert(other_cert, p("other-ca.pem"))
    _write_cert(s_cert, p("server.pem"))
    _write_key(s_key, p("server.key"))
    _write_cert(c_cert, p("client.pem"))
    _write_key(c_key, p("client.key"))
    return PKI(p("ca.pem"), p("server.pem"), p("server.key"), p("client.pem"), p("client.key"),
               p("other-ca.pem"))
