"""The mesh CA (gateway/ca.py) and NF identities (gateway/identity.py): files and modes, the
certificate profile, chain verification by independent verifiers (cryptography's RFC 5280
verifier, ``openssl verify``, Python's own certificate decoder), bad input, the CLI's exit codes (nfmesh_cli/ca.py),
and ``ca example`` making ``config check config/example.yaml`` pass."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import ca as ca_mod
from gateway.ca import CAError, CAInputError, MeshCA, gateway_instance_id, peercert_dict, write_pair
from gateway.identity import (
    NFTYPES_OID,
    NfIdentity,
    certificate_identity,
    decode_nf_types,
    der_nf_types,
    encode_nf_types,
    nf_identity,
    openssl_time,
    peer_identity,
    rfc9310_nf_types,
)
from nfmesh_cli import ca as ca_cli

AMF_ID = "6b2f5a2e-0c1d-4a53-9d3e-8d3a7c1e9f01"
SMF_ID = "0c5f3b7e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "config", "example.yaml")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> MeshCA:
    return MeshCA.create(str(tmp_path_factory.mktemp("ca")), name="test mesh CA", days=30)


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def ext(cert: x509.Certificate, cls):
    return cert.extensions.get_extension_for_class(cls)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = ca_cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# ---- the CA itself ----------------------------------------------------------------------------

def test_create_writes_a_p256_ca_with_pathlen_0(tmp_path):
    mesh = MeshCA.create(str(tmp_path / "ca"), name="nfmesh mesh CA", days=10)
    assert sorted(os.listdir(tmp_path / "ca")) == ["mesh-ca.crl", "mesh-ca.crt", "mesh-ca.key"]
    assert mode(mesh.key_path) == 0o600
    cert = mesh.cert
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "nfmesh mesh CA"
    cert.verify_directly_issued_by(cert)  # self-signed, signature checks
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=10) <= lifetime <= datetime.timedelta(days=10, minutes=6)
    again = MeshCA.load(mesh.directory)
    assert again.cert == cert
    assert again.key.private_numbers() == mesh.key.private_numbers()


def test_create_refuses_to_overwrite_without_force(tmp_path):
    first = MeshCA.create(str(tmp_path))
    with pytest.raises(CAError, match="exists"):
        MeshCA.create(str(tmp_path))
    assert MeshCA.load(str(tmp_path)).cert == first.cert  # untouched
    second = MeshCA.create(str(tmp_path), force=True)
    assert second.cert != first.cert
    assert MeshCA.load(str(tmp_path)).cert == second.cert


def test_load_refuses_missing_exposed_or_mismatched_ca(tmp_path):
    with pytest.raises(CAError, match="no mesh CA"):
        MeshCA.load(str(tmp_path / "none"))
    mesh = MeshCA.create(str(tmp_path / "a"))
    os.chmod(mesh.key_path, 0o644)
    with pytest.raises(CAError, match="group/others"):
        MeshCA.load(mesh.directory)
    os.chmod(mesh.key_path, 0o600)
    other = MeshCA.create(str(tmp_path / "b"))
    shutil.copy(other.key_path, mesh.key_path)
    with pytest.raises(CAError, match="does not match"):
        MeshCA.load(mesh.directory)
    with open(mesh.key_path, "wb") as fh:
        fh.write(b"not a key")
    with pytest.raises(CAError, match="unreadable"):
        MeshCA.load(mesh.directory)


# ---- issued certificates ----------------------------------------------------------------------

def test_issue_follows_the_nf_certificate_profile(mesh):
    cert_pem, key_pem = mesh.issue("AMF", AMF_ID.upper(), dns=["amf1.5gc.example"],
                                   ips=["127.0.0.1", "::1"], days=7)
    cert = load(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert key.public_key() == cert.public_key()
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"urn:uuid:{AMF_ID}"]
    assert san.get_values_for_type(x509.DNSName) == ["amf1.5gc.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                      ipaddress.ip_address("::1")]
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "AMF"
    eku = ext(cert, x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    assert ext(cert, x509.KeyUsage).value.digital_signature
    assert cert.issuer == mesh.cert.subject
    cert.verify_directly_issued_by(mesh.cert)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= datetime.timedelta(days=7, minutes=6)
    expected = NfIdentity(AMF_ID, "AMF", "amf1.5gc.example", ("amf1.5gc.example",), ("AMF",))
    assert nf_identity(peercert_dict(cert)) == expected  # from the OU
    assert certificate_identity(cert) == expected  # from the RFC 9310 extension
    assert rfc9310_nf_types(cert) == ("AMF",)
    assert not cert.extensions.get_extension_for_oid(NFTYPES_OID).critical


def test_validity_never_exceeds_the_cas(mesh):
    cert = load(mesh.issue("SMF", SMF_ID, days=3650)[0])
    assert cert.not_valid_after_utc == mesh.cert.not_valid_after_utc
    assert cert.not_valid_before_utc >= mesh.cert.not_valid_before_utc


def test_an_expired_ca_issues_nothing(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old CA")])
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(past)
            .not_valid_after(past + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    with pytest.raises(CAError, match="expired"):
        MeshCA(str(tmp_path), cert, key).issue("AMF", AMF_ID)


def verifier_store(mesh: MeshCA) -> verification.PolicyBuilder:
    return verification.PolicyBuilder().store(verification.Store([mesh.cert]))


def test_chain_verifies_with_cryptographys_rfc5280_verifier(mesh, tmp_path):
    cert = load(mesh.issue("AUSF", SMF_ID, dns=["ausf.example"], ips=["127.0.0.1"])[0])
    builder = verifier_store(mesh)
    # as a server (DNS and IP names) and as a client (both EKUs are there)
    chain = builder.build_server_verifier(verification.DNSName("ausf.example")).verify(cert, [])
    assert chain[-1] == mesh.cert
    builder.build_server_verifier(
        verification.IPAddress(ipaddress.ip_address("127.0.0.1"))).verify(cert, [])
    client = builder.build_client_verifier().verify(cert, [])
    assert x509.UniformResourceIdentifier(f"urn:uuid:{SMF_ID}") in client.subjects
    with pytest.raises(verification.VerificationError):
        builder.build_server_verifier(verification.DNSName("other.example")).verify(cert, [])
    # a certificate of another mesh CA does not chain to this one
    other = MeshCA.create(str(tmp_path / "other"))
    foreign = load(other.issue("AUSF", SMF_ID, dns=["ausf.example"])[0])
    with pytest.raises(verification.VerificationError):
        builder.build_client_verifier().verify(foreign, [])


def test_chain_verifies_with_openssl(mesh, tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert_path, _ = write_pair(str(tmp_path / "udm"), *mesh.issue("UDM", AMF_ID, dns=["udm"]))
    for purpose in ("sslclient", "sslserver"):
        res = subprocess.run([openssl, "verify", "-x509_strict", "-purpose", purpose, "-CAfile",
                              mesh.cert_path, cert_path], capture_output=True, timeout=10)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip().endswith(b": OK")
    other = MeshCA.create(str(tmp_path / "other"))
    res = subprocess.run([openssl, "verify", "-CAfile", other.cert_path, cert_path],
                         capture_output=True, timeout=10)
    assert res.returncode != 0


def test_pythons_own_decoder_reads_the_same_identity(mesh, tmp_path):
    """``ssl``'s decoder (what getpeercert() returns) as the oracle for peercert_dict."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        pytest.skip("this Python has no ssl._ssl._test_decode_cert")
    cert_pem, key_pem = mesh.issue("PCF", SMF_ID, dns=["pcf.example", "pcf2.example"],
                                   ips=["10.0.0.1"])
    cert_path, _ = write_pair(str(tmp_path / "pcf"), cert_pem, key_pem)
    decoded = decode(cert_path)
    ours = peercert_dict(load(cert_pem))
    assert ours["subject"] == decoded["subject"]
    assert ours["issuer"] == decoded["issuer"]
    assert ours["subjectAltName"] == decoded["subjectAltName"]
    assert ours["notAfter"] == decoded["notAfter"]
    assert nf_identity(decoded) == NfIdentity(SMF_ID, "PCF", "pcf.example",
                                              ("pcf.example", "pcf2.example"), ("PCF",))


def test_gateway_certificate_is_an_scp_with_a_stable_id(mesh):
    a = load(mesh.issue_gateway("scp-1", ips=["127.0.0.1"])[0])
    b = load(mesh.issue_gateway("scp-1")[0])
    ia, ib = nf_identity(peercert_dict(a)), nf_identity(peercert_dict(b))
    assert ia.nf_type == "SCP" and ia.instance_id == ib.instance_id == gateway_instance_id("scp-1")
    assert ia.dns_names == ("scp-1",) and ia.common_name == "scp-1"
    assert nf_identity(peercert_dict(load(mesh.issue_gateway("scp-2")[0]))).instance_id != \
        ia.instance_id


@pytest.mark.parametrize("kwargs, message", [
    ({"nf_type": "XYZ"}, "unknown NF type"),
    ({"nf_type": ""}, "unknown NF type"),
    ({"instance_id": "not-a-uuid"}, "invalid NF instance id"),
    ({"instance_id": "6b2f5a2e0c1d4a539d3e8d3a7c1e9f01"}, "invalid NF instance id"),
    ({"instance_id": "{6b2f5a2e-0c1d-4a53-9d3e-8d3a7c1e9f01}"}, "invalid NF instance id"),
    ({"dns": ["bad_name!"]}, "invalid DNS name"),
    ({"dns": ["-lead.example"]}, "invalid DNS name"),
    ({"dns": ["127.0.0.1"]}, "is an IP address"),
    ({"ips": ["300.1.1.1"]}, "invalid IP address"),
    ({"days": 0}, "days must be"),
    ({"days": 10**6}, "days must be"),
    ({"dns": [f"h{i}.example" for i in range(70)]}, "at most"),
])
def test_bad_input_is_refused_with_a_clear_error(mesh, kwargs, message):
    args = {"nf_type": "AMF", "instance_id": AMF_ID} | kwargs
    with pytest.raises(CAInputError, match=message):
        mesh.issue(**args)


def test_nf_type_and_urn_prefix_are_normalised(mesh):
    cert = load(mesh.issue("nssf", f"URN:UUID:{AMF_ID.upper()}")[0])
    assert nf_identity(peercert_dict(cert)) == NfIdentity(AMF_ID, "NSSF", f"NSSF-{AMF_ID}", (),
                                                          ("NSSF",))
    import uuid

    cert = load(mesh.issue("AMF", uuid.UUID(AMF_ID))[0])
    assert nf_identity(peercert_dict(cert)).instance_id == AMF_ID


def test_write_pair_modes_and_no_silent_overwrite(mesh, tmp_path):
    prefix = str(tmp_path / "sub" / "amf")
    cert_path, key_path = write_pair(prefix, *mesh.issue("AMF", AMF_ID))
    assert (mode(cert_path), mode(key_path)) == (0o644, 0o600)
    before = open(cert_path, "rb").read()
    with pytest.raises(CAError, match="exists"):
        write_pair(prefix, *mesh.issue("AMF", SMF_ID))
    assert open(cert_path, "rb").read() == before
    write_pair(prefix, *mesh.issue("AMF", SMF_ID), force=True)
    assert nf_identity(peercert_dict(load(open(cert_path, "rb").read()))).instance_id == SMF_ID
    assert not [n for n in os.listdir(tmp_path / "sub") if n.startswith(".tmp-")]


# ---- identity from getpeercert() dicts --------------------------------------------------------

def peercert(uris=(), ou=None, cn="x", dns=()) -> dict:
    subject = [(("commonName", cn),)]
    if ou is not None:
        subject.append((("organizationalUnitName", ou),))
    return {"subject": tuple(subject),
            "subjectAltName": tuple([("URI", u) for u in uris] + [("DNS", d) for d in dns])}


def test_identity_edge_cases():
    assert nf_identity(None) is None
    assert nf_identity({}) is None  # CERT_OPTIONAL and no client certificate
    assert nf_identity(peercert()) is None  # no URI SAN
    assert nf_identity(peercert(["urn:uuid:not-a-uuid"])) is None
    assert nf_identity(peercert(["https://amf.example/"])) is None
    # two different instance ids: ambiguous, no identity; the same one twice is fine
    other = "urn:uuid:0c5f3b7e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
    assert nf_identity(peercert([f"urn:uuid:{AMF_ID}", other], "AMF")) is None
    assert nf_identity(peercert([f"urn:uuid:{AMF_ID}", f"URN:UUID:{AMF_ID.upper()}"],
                                "AMF")).instance_id == AMF_ID
    # unknown OU: identified, but with no NF type
    ident = nf_identity(peercert([f"urn:uuid:{AMF_ID}"], "Radio Team", dns=["a.example"]))
    assert ident == NfIdentity(AMF_ID, None, "x", ("a.example",), ())
    assert ident.uri == f"urn:uuid:{AMF_ID}"
    # several OUs: no NF type
    pc = peercert([f"urn:uuid:{AMF_ID}"], "AMF")
    pc["subject"] += ((("organizationalUnitName", "SMF"),),)
    assert nf_identity(pc).nf_type is None


def test_peer_identity_is_computed_once_per_connection():
    info = {"peercert": peercert([f"urn:uuid:{AMF_ID}"], "AMF")}
    first = peer_identity(info)
    assert first is not None and info["nf_identity"] is first
    info["peercert"] = {}  # the cached answer stands for the connection's lifetime
    assert peer_identity(info) is first
    assert peer_identity({}) is None


_san_kinds = st.sampled_from(["URI", "DNS", "IP Address", "email", "x"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_san_kinds, st.text(max_size=60)), max_size=6),
       st.lists(st.tuples(st.sampled_from(["commonName", "organizationalUnitName", "x"]),
                          st.text(max_size=20)), max_size=4))
def test_identity_never_raises_on_odd_certificates(sans, subject):
    pc = {"subjectAltName": tuple(sans), "subject": tuple((pair,) for pair in subject)}
    ident = nf_identity(pc)
    assert ident is None or ident.uri in [v.lower() for k, v in sans if k == "URI"]


# ---- the CLI ----------------------------------------------------------------------------------

def test_cli_init_issue_gateway_show(tmp_path, capsys):
    d = str(tmp_path / "ca")
    assert run_cli(["init", "--dir", d, "--name", "cli CA", "--days", "5"], capsys)[0] == 0
    rc, out, err = run_cli(["init", "--dir", d], capsys)
    assert rc == 1 and "exists" in err
    rc, out, err = run_cli(["issue", "--dir", d, "--nf-type", "SMF", "--instance-id", SMF_ID,
                            "--dns", "smf.example", "--ip", "127.0.0.1", "--ip", "::1"], capsys)
    assert rc == 0, err
    cert_path = os.path.join(d, f"smf-{SMF_ID}.crt")
    assert mode(cert_path[:-4] + ".key") == 0o600
    rc, out, err = run_cli(["show", cert_path], capsys)
    assert rc == 0
    assert f"NF instance: {SMF_ID}" in out and "NF type:     SMF" in out
    assert "SAN DNS: smf.example" in out and "SAN IP Address: ::1" in out
    assert "issuer:      CN=cli CA,O=nfmesh" in out
    # same file again: refused, then --force
    argv = ["issue", "--dir", d, "--nf-type", "SMF", "--instance-id", SMF_ID]
    assert run_cli(argv, capsys)[0] == 1
    assert run_cli(argv + ["--force", "--out", str(tmp_path / "x" / "smf")], capsys)[0] == 0
    assert os.path.isfile(tmp_path / "x" / "smf.key")
    rc, out, err = run_cli(["gateway", "--dir", d, "--name", "scp-1", "--ip", "127.0.0.1"], capsys)
    assert rc == 0, err
    rc, out, err = run_cli(["show", os.path.join(d, "gateway.crt")], capsys)
    assert "NF type:     SCP" in out and gateway_instance_id("scp-1") in out
    rc, out, err = run_cli(["show", os.path.join(d, "mesh-ca.crt")], capsys)
    assert rc == 0 and "CA:          yes" in out


@pytest.mark.parametrize("argv, code, message", [
    ([], 2, "usage"),
    (["bogus"], 2, "invalid choice"),
    (["issue", "--dir", "{d}", "--nf-type", "AMF"], 2, "--instance-id"),
    (["issue", "--dir", "{d}", "--nf-type", "WIFI", "--instance-id", AMF_ID], 2, "unknown NF type"),
    (["issue", "--dir", "{d}", "--nf-type", "AMF", "--instance-id", "12"], 2, "invalid NF instance id"),
    (["issue", "--dir", "{d}", "--nf-type", "AMF", "--instance-id", AMF_ID, "--ip", "x"], 2,
     "invalid IP address"),
    (["issue", "--dir", "{d}", "--nf-type", "AMF", "--instance-id", AMF_ID, "--days", "many"], 2,
     "invalid int"),
    (["issue", "--dir", "{d}/nowhere", "--nf-type", "AMF", "--instance-id", AMF_ID], 1,
     "no mesh CA"),
    (["gateway", "--dir", "{d}", "--name", "scp", "--instance-id", "zzz"], 2, "invalid NF instance id"),
    (["show", "{d}/missing.crt"], 1, "cannot read"),
    (["show", "{d}/mesh-ca.key"], 2, "no PEM certificate"),
])
def test_cli_bad_usage_exit_codes(mesh, capsys, argv, code, message):
    argv = [a.replace("{d}", mesh.directory) for a in argv]
    rc, out, err = run_cli(argv, capsys)
    assert rc == code
    assert message in err


def test_example_makes_the_example_config_check_pass(tmp_path, capsys):
    from gateway.config import check_config_file

    shutil.copy(EXAMPLE, tmp_path / "example.yaml")
    ok, report = check_config_file(str(tmp_path / "example.yaml"))
    assert not ok and "certs/gateway.crt" in report
    rc, out, err = run_cli(["example", "--dir", str(tmp_path / "certs")], capsys)
    assert rc == 0, err
    ok, report = check_config_file(str(tmp_path / "example.yaml"))
    assert ok, report
    # run again: the CA is kept, the gateway certificate re-issued under it
    ca_before = open(tmp_path / "certs" / "mesh-ca.crt", "rb").read()
    assert run_cli(["example", "--dir", str(tmp_path / "certs")], capsys)[0] == 0
    assert open(tmp_path / "certs" / "mesh-ca.crt", "rb").read() == ca_before
    gw = load(open(tmp_path / "certs" / "gateway.crt", "rb").read())
    gw.verify_directly_issued_by(load(ca_before))
    verifier_store(MeshCA.load(str(tmp_path / "certs"))).build_server_verifier(
        verification.DNSName("localhost")).verify(gw, [])


def test_nfmesh_ca_is_wired_into_the_program(tmp_path):
    exe = os.path.join(os.path.dirname(os.sys.executable), "nfmesh")
    if not os.path.exists(exe):
        pytest.skip("the nfmesh entry point is not installed in this environment")
    d = str(tmp_path)
    res = subprocess.run([exe, "ca", "init", "--dir", d], capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([exe, "ca", "issue", "--dir", d, "--nf-type", "NOPE", "--instance-id",
                          AMF_ID], capture_output=True, timeout=30)
    assert res.returncode == 2 and b"unknown NF type" in res.stderr


def test_cli_verify_and_show_json(mesh, tmp_path, capsys):
    import json

    cert_path, _ = write_pair(str(tmp_path / "amf"), *mesh.issue(
        "AMF", AMF_ID, dns=["amf1.example"], ips=["127.0.0.1"]))
    rc, out, err = run_cli(["verify", "--dir", mesh.directory, "--dns", "amf1.example", "--ip",
                            "127.0.0.1", cert_path], capsys)
    assert rc == 0 and f"OK: AMF {AMF_ID}" in out, err
    rc, out, err = run_cli(["verify", "--dir", mesh.directory, "--dns", "amf2.example",
                            cert_path], capsys)
    assert rc == 1 and "FAILED" in out and "subjectAltName" in out
    other = MeshCA.create(str(tmp_path / "other"))
    rc, out, err = run_cli(["verify", "--dir", other.directory, cert_path], capsys)
    assert rc == 1 and "FAILED: does not verify" in out
    rc, out, err = run_cli(["show", "--json", cert_path], capsys)
    assert rc == 0
    [info] = json.loads(out)
    assert info["nf_instance_id"] == AMF_ID and info["nf_type"] == "AMF" and info["ca"] is False
    assert {"type": "IP Address", "value": "127.0.0.1"} in info["sans"]
    assert info["sha256"] == load(open(cert_path, "rb").read()).fingerprint(hashes.SHA256()).hex()


def test_verify_refuses_a_mesh_certificate_without_identity(mesh):
    """A certificate the CA key signed by hand, with no urn:uuid SAN: chains, but no identity."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anon")]))
            .issuer_name(mesh.cert.subject).public_key(key.public_key()).serial_number(7)
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("anon.example")]), False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                mesh.key.public_key()), False)
            .sign(mesh.key, hashes.SHA256()))
    with pytest.raises(CAError, match="no NF identity"):
        ca_mod.verify(mesh.cert, cert)


# ---- revocation ---------------------------------------------------------------------------------

def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_revocation_list_from_init_to_revoke(tmp_path):
    mesh = MeshCA.create(str(tmp_path / "ca"))
    crl = mesh.crl()
    assert crl is not None and len(crl) == 0 and crl.is_signature_valid(mesh.cert.public_key())
    assert crl.next_update_utc > datetime.datetime.now(datetime.UTC)
    first = crl_number(crl)
    amf = load(mesh.issue("AMF", AMF_ID)[0])
    smf = load(mesh.issue("SMF", SMF_ID)[0])
    assert mesh.revoke(amf, "keyCompromise") is True
    assert mesh.revoke(amf) is False  # already there: unchanged
    crl = mesh.crl()
    assert crl_number(crl) == first + 1 and len(crl) == 1
    entry = crl.get_revoked_certificate_by_serial_number(amf.serial_number)
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.key_compromise
    assert crl.get_revoked_certificate_by_serial_number(smf.serial_number) is None
    assert mesh.revoke(12345) is True and set(mesh.revoked()) == {amf.serial_number, 12345}
    # re-publishing keeps the entries and moves nextUpdate
    mesh.publish_crl(days=2)
    crl = mesh.crl()
    assert len(crl) == 2 and crl_number(crl) == first + 3
    assert crl.next_update_utc <= datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)
    with pytest.raises(CAError, match="revoked"):
        ca_mod.verify(mesh.cert, amf, crl=crl)
    assert ca_mod.verify(mesh.cert, smf, crl=crl).nf_type == "SMF"


def test_revoke_refuses_foreign_certificates_bad_reasons_and_forged_crls(tmp_path):
    mesh = MeshCA.create(str(tmp_path / "ca"))
    other = MeshCA.create(str(tmp_path / "other"))
    with pytest.raises(CAInputError, match="not issued by this CA"):
        mesh.revoke(load(other.issue("AMF", AMF_ID)[0]))
    with pytest.raises(CAInputError, match="reason"):
        mesh.revoke(7, "because")
    with pytest.raises(CAInputError, match="serial"):
        mesh.revoke(0)
    other.revoke(99)
    shutil.copy(other.crl_path, mesh.crl_path)  # another CA's CRL in our place
    with pytest.raises(CAError, match="not signed by this CA"):
        mesh.crl()
    with open(mesh.crl_path, "wb") as fh:
        fh.write(b"garbage")
    with pytest.raises(CAError, match="not a PEM CRL"):
        mesh.revoke(7)


def test_openssl_honours_the_crl(tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    mesh = MeshCA.create(str(tmp_path / "ca"))
    amf_path, _ = write_pair(str(tmp_path / "amf"), *mesh.issue("AMF", AMF_ID))
    smf_path, _ = write_pair(str(tmp_path / "smf"), *mesh.issue("SMF", SMF_ID))
    mesh.revoke(load(open(amf_path, "rb").read()))

    def check(path: str) -> subprocess.CompletedProcess:
        return subprocess.run([openssl, "verify", "-crl_check", "-CRLfile", mesh.crl_path,
                               "-CAfile", mesh.cert_path, path], capture_output=True, timeout=10)

    res = check(amf_path)
    assert res.returncode != 0 and b"certificate revoked" in res.stdout + res.stderr
    assert check(smf_path).returncode == 0


def test_cli_revoke_crl_and_verify(tmp_path, capsys):
    d = str(tmp_path / "ca")
    assert run_cli(["init", "--dir", d], capsys)[0] == 0
    argv = ["issue", "--dir", d, "--nf-type", "AMF", "--instance-id", AMF_ID, "--out"]
    assert run_cli(argv + [str(tmp_path / "amf")], capsys)[0] == 0
    cert_path = str(tmp_path / "amf.crt")
    serial = f"{load(open(cert_path, 'rb').read()).serial_number:x}"
    assert run_cli(["verify", "--dir", d, cert_path], capsys)[0] == 0
    rc, out, err = run_cli(["revoke", "--dir", d, "--reason", "superseded", cert_path], capsys)
    assert rc == 0 and f"revoked serial {serial}" in out
    rc, out, err = run_cli(["revoke", "--dir", d, "--serial", serial], capsys)
    assert rc == 0 and "already revoked" in out
    rc, out, err = run_cli(["verify", "--dir", d, cert_path], capsys)
    assert rc == 1 and "FAILED: revoked" in out
    rc, out, err = run_cli(["crl", "--dir", d, "--days", "3"], capsys)
    assert rc == 0 and "1 revoked" in out and serial in out
    for bad in (["revoke", "--dir", d], ["revoke", "--dir", d, "--serial", "xyz"],
                ["revoke", "--dir", d, "--serial", "1", cert_path],
                ["revoke", "--dir", d, "--reason", "whim", cert_path],
                ["crl", "--dir", d, "--days", "0"]):
        assert run_cli(bad, capsys)[0] == 2, bad


# ---- RFC 9310 NFTypes ---------------------------------------------------------------------------

def test_nftypes_der_round_trip_and_malformed_values():
    assert encode_nf_types(["5G_EIR"]) == bytes.fromhex("3008160635475f454952")
    for types in (["AMF"], ["SMF", "UPF"], ["A" * 32] * 10):  # 10 x 34 bytes: long-form length
        assert decode_nf_types(encode_nf_types(types)) == tuple(types)
    with pytest.raises(ValueError):
        encode_nf_types([])
    with pytest.raises(ValueError):
        encode_nf_types(["A" * 33])
    for bad in (b"", b"\x30", b"\x30\x00", b"\x31\x05\x16\x03AMF", b"\x30\x05\x0c\x03AMF",
                b"\x30\x06\x16\x03AMF", b"\x30\x05\x16\x04AMF", b"\x30\x05\x16\x03A\xffF",
                b"\x30\x84\x00\x00\x00\x05\x16\x03AMF", b"\x30\x02\x16\x00"):
        assert decode_nf_types(bad) is None, bad


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_nftypes_decoder_takes_any_bytes(value):
    result = decode_nf_types(value)
    assert result is None or all(1 <= len(t) <= 32 for t in result)


def test_openssl_parses_the_nftypes_extension(mesh, tmp_path):
    """An independent DER reader (openssl asn1parse) sees SEQUENCE { IA5STRING "UDM" }."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert_path, _ = write_pair(str(tmp_path / "udm"), *mesh.issue("UDM", AMF_ID))
    res = subprocess.run([openssl, "asn1parse", "-in", cert_path], capture_output=True,
                         timeout=10, text=True)
    lines = res.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "1.3.6.1.5.5.7.1.34" in line)
    offset = lines[at + 1].split(":", 1)[0].strip()  # the OCTET STRING holding the value
    inner = subprocess.run([openssl, "asn1parse", "-in", cert_path, "-strparse", offset],
                           capture_output=True, timeout=10, text=True).stdout
    assert "SEQUENCE" in inner and "IA5STRING" in inner and ":UDM" in inner


def foreign_cert(mesh: MeshCA, *, ou: str | None, nf_types: list[str] | None,
                 raw_ext: bytes | None = None, critical: bool = False) -> x509.Certificate:
    """A certificate signed by the mesh CA key but shaped by hand (another PKI's profile)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, "nf")]
    if ou is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    builder = (x509.CertificateBuilder().subject_name(x509.Name(attrs))
               .issuer_name(mesh.cert.subject).public_key(key.public_key()).serial_number(9)
               .not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.SubjectAlternativeName(
                   [x509.UniformResourceIdentifier(f"urn:uuid:{AMF_ID}")]), False))
    if nf_types is not None or raw_ext is not None:
        value = raw_ext if raw_ext is not None else encode_nf_types(nf_types)
        builder = builder.add_extension(x509.UnrecognizedExtension(NFTYPES_OID, value), critical)
    return builder.sign(mesh.key, hashes.SHA256())


def test_rfc9310_decides_over_the_ou(mesh):
    # only the extension (an RFC 9310 PKI without OUs): typed from it
    ident = certificate_identity(foreign_cert(mesh, ou=None, nf_types=["SMF", "UPF"]))
    assert ident.nf_type == "SMF" and ident.nf_types == ("SMF", "UPF")
    # only the OU (a PKI before RFC 9310)
    assert certificate_identity(foreign_cert(mesh, ou="PCF", nf_types=None)).nf_types == ("PCF",)
    # both, disagreeing: the standard extension wins
    assert certificate_identity(foreign_cert(mesh, ou="PCF", nf_types=["AMF"])).nf_type == "AMF"
    # an extension that is malformed or names an unknown type: no type at all, no OU fallback
    for cert in (foreign_cert(mesh, ou="AMF", nf_types=None, raw_ext=b"\x30\x01"),
                 foreign_cert(mesh, ou="AMF", nf_types=["AMF", "TOASTER"])):
        ident = certificate_identity(cert)
        assert ident.instance_id == AMF_ID and ident.nf_type is None and ident.nf_types == ()


class FakeSSLObject:
    """Stands in for ssl.SSLObject (only getpeercert) to drive peer_identity's branches."""

    def __init__(self, cert: x509.Certificate | None, verified: bool = True) -> None:
        self.cert, self.verified = cert, verified

    def getpeercert(self, binary_form: bool = False):
        if self.cert is None:
            return None
        if binary_form:
            return self.cert.public_bytes(serialization.Encoding.DER)
        return peercert_dict(self.cert) if self.verified else {}


def test_peer_identity_reads_rfc9310_through_the_ssl_object_when_verified(mesh):
    cert = foreign_cert(mesh, ou=None, nf_types=["NRF"])
    info = {"sslobject": FakeSSLObject(cert), "peercert": peercert_dict(cert)}
    assert peer_identity(info).nf_type == "NRF"  # the dict alone has no NF type
    assert nf_identity(info["peercert"]).nf_type is None
    # an unverified certificate (verify_mode CERT_NONE: empty dict) is no identity
    assert peer_identity({"sslobject": FakeSSLObject(cert, verified=False),
                          "peercert": {}}) is None
    assert peer_identity({"sslobject": FakeSSLObject(None)}) is None


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def test_fast_der_walk_agrees_with_cryptography(mesh):
    """der_nf_types (a short DER walk) against cryptography's full parse, on every shape."""
    certs = [
        load(mesh.issue("AMF", AMF_ID, dns=["a.example"], ips=["::1"])[0]),
        load(mesh.issue_gateway("scp-x")[0]),
        mesh.cert,  # no extension at all
        foreign_cert(mesh, ou=None, nf_types=["SMF", "UPF"]),
        foreign_cert(mesh, ou="AMF", nf_types=None),
        foreign_cert(mesh, ou=None, nf_types=["NRF"], critical=True),
        foreign_cert(mesh, ou=None, nf_types=None, raw_ext=b"\x30\x01"),
        foreign_cert(mesh, ou=None, nf_types=None, raw_ext=b"\x04\x00"),
    ]
    for cert in certs:
        assert der_nf_types(der(cert)) == rfc9310_nf_types(cert), cert.subject


def test_fast_der_walk_on_broken_input_raises_value_error_only(mesh):
    whole = der(load(mesh.issue("AMF", AMF_ID)[0]))
    cut = whole.index(bytes.fromhex("06082b06010505070122")) + 12
    for data in (whole[:cut], b"\x30\x82\xff\xff" + whole[4:], whole[:4] + b"\x31" + whole[5:]):
        with pytest.raises(ValueError):
            der_nf_types(data)
    assert der_nf_types(whole[:cut - 14]) is None  # cut before the OID: no extension seen


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60), st.binary(max_size=60))
def test_fast_der_walk_takes_any_bytes(before, after):
    data = before + bytes.fromhex("06082b06010505070122") + after
    try:
        result = der_nf_types(data)
    except ValueError:
        return
    assert result is None or isinstance(result, tuple)


# ---- certificate signing requests (the NF keeps its key) ----------------------------------------

def make_csr(key, ou: str = "NRF") -> bytes:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asks-for-more"),
                                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou)]))
           .add_extension(x509.SubjectAlternativeName(
               [x509.UniformResourceIdentifier("urn:uuid:00000000-0000-4000-8000-000000000000")]),
               critical=False)
           .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def test_sign_csr_certifies_the_requesters_key_with_the_operators_identity(mesh):
    key = ec.generate_private_key(ec.SECP384R1())
    cert = load(mesh.sign_csr(make_csr(key), "SMF", SMF_ID, dns=["smf1.example"]))
    assert cert.public_key() == key.public_key()
    # what the request asked for (OU=NRF, another instance id) is ignored
    assert certificate_identity(cert) == NfIdentity(SMF_ID, "SMF", "smf1.example",
                                                    ("smf1.example",), ("SMF",))
    verifier_store(mesh).build_client_verifier().verify(cert, [])


def test_sign_csr_refuses_forged_requests_and_weak_keys(mesh):
    from cryptography.hazmat.primitives.asymmetric import rsa

    good = make_csr(ec.generate_private_key(ec.SECP256R1()))
    raw = bytearray(x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER))
    raw[-3] ^= 0x01  # inside the signature: no proof of possession
    forged = x509.load_der_x509_csr(bytes(raw)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CAInputError, match="proof of possession"):
        mesh.sign_csr(forged, "AMF", AMF_ID)
    with pytest.raises(CAInputError, match="too small"):
        mesh.sign_csr(make_csr(rsa.generate_private_key(65537, 1024)), "AMF", AMF_ID)
    with pytest.raises(CAInputError, match="curve"):
        mesh.sign_csr(make_csr(ec.generate_private_key(ec.SECP521R1())), "AMF", AMF_ID)
    with pytest.raises(CAInputError, match="not accepted"):
        mesh.sign_csr(make_csr(ed25519.Ed25519PrivateKey.generate()), "AMF", AMF_ID)
    with pytest.raises(CAInputError, match="signing request"):
        mesh.sign_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", "AMF", AMF_ID)
    with pytest.raises(CAInputError, match="unknown NF type"):
        mesh.sign_csr(good, "MODEM", AMF_ID)


def test_cli_issue_from_an_openssl_request(mesh, tmp_path, capsys):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    key_path, csr_path = str(tmp_path / "nf.key"), str(tmp_path / "nf.csr")
    subprocess.run([openssl, "req", "-new", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key_path, "-out", csr_path,
                    "-subj", "/CN=nf/OU=NRF"], check=True, capture_output=True, timeout=10)
    rc, out, err = run_cli(["issue", "--dir", mesh.directory, "--nf-type", "AUSF",
                            "--instance-id", AMF_ID, "--csr", csr_path, "--out",
                            str(tmp_path / "ausf")], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ausf.crt", "nf.csr", "nf.key"]
    cert = load(open(tmp_path / "ausf.crt", "rb").read())
    key = serialization.load_pem_private_key(open(key_path, "rb").read(), password=None)
    assert cert.public_key() == key.public_key()
    assert certificate_identity(cert).nf_type == "AUSF"
    rc, out, err = run_cli(["issue", "--dir", mesh.directory, "--nf-type", "AUSF",
                            "--instance-id", AMF_ID, "--csr", str(tmp_path / "nope.csr")], capsys)
    assert rc == 1 and "cannot read" in err


@pytest.mark.parametrize("day", range(1, 32))
def test_certificate_dates_read_as_openssl_writes_them(day):
    """``openssl_time`` against ``ssl.cert_time_to_seconds`` (which parses what OpenSSL's
    ``ASN1_TIME_print`` writes: the day padded with a space) on every day of a month."""
    when = datetime.datetime(2027, 1, day, 9, 5, 3, tzinfo=datetime.UTC)
    text = openssl_time(when)
    assert text == f"Jan {day:2d} 09:05:03 2027 GMT"
    assert ssl.cert_time_to_seconds(text) == int(when.timestamp())
