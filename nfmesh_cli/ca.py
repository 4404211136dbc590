"""``nfmesh ca ...``: the command line of the mesh certificate authority (``gateway.ca``).

Subcommands: ``init``, ``issue``, ``gateway``, ``show``, ``verify``, ``revoke``, ``crl``,
``example``; exit 0 on success, 1 when the operation fails (missing CA, file exists, a
certificate that does not verify), 2 on bad usage or bad input (invalid UUID, NF type, DNS
name, IP, days).  Nothing is overwritten without ``--force``.  Every operation is a call into
``gateway.ca``; this module parses, prints and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from cryptography import x509

from gateway.ca import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    DEFAULT_CA_DAYS,
    DEFAULT_CA_NAME,
    DEFAULT_CRL_DAYS,
    DEFAULT_LEAF_DAYS,
    REVOCATION_REASONS,
    CAError,
    CAInputError,
    MeshCA,
    check_instance_id,
    check_nf_type,
    describe,
    describe_json,
    load_crl,
    read_certs,
    verify,
    write_cert,
    write_pair,
)
from gateway.identity import certificate_identity

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so ``main`` returns its exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nfmesh ca", description="The mesh certificate authority: NF identities "
                "for mTLS (NF instance id in the URI SAN urn:uuid:<id>, NF type in subject OU).")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)

    init = sub.add_parser("init", help="create the CA (mesh-ca.crt, mesh-ca.key)")
    init.add_argument("--dir", required=True)
    init.add_argument("--name", default=DEFAULT_CA_NAME, help="CA common name")
    init.add_argument("--days", type=int, default=DEFAULT_CA_DAYS)
    init.add_argument("--force", action="store_true", help="replace an existing CA")

    def leaf_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--dir", required=True, help="the CA directory")
        sp.add_argument("--dns", action="append", default=[], metavar="NAME")
        sp.add_argument("--ip", action="append", default=[], metavar="ADDR")
        sp.add_argument("--days", type=int, default=DEFAULT_LEAF_DAYS)
        sp.add_argument("--out", metavar="PREFIX", help="write PREFIX.crt and PREFIX.key")
        sp.add_argument("--force", action="store_true", help="overwrite existing files")

    issue = sub.add_parser("issue", help="issue an NF certificate")
    issue.add_argument("--nf-type", required=True, help="NFType of TS 29.510 (AMF, SMF, ...)")
    issue.add_argument("--instance-id", required=True, help="NfInstanceId (UUID)")
    issue.add_argument("--csr", metavar="FILE", help="certify the key of this PKCS#10 request "
                       "(the key stays with the NF; only PREFIX.crt is written)")
    leaf_options(issue)

    gw = sub.add_parser("gateway", help="issue the gateway's own certificate (NF type SCP)")
    gw.add_argument("--name", required=True)
    gw.add_argument("--instance-id", help="default: derived from --name (UUID v5)")
    leaf_options(gw)

    show = sub.add_parser("show", help="print a certificate: subject, SANs, NF identity, validity")
    show.add_argument("file")
    show.add_argument("--json", action="store_true", help="machine-readable output")

    rev = sub.add_parser("revoke", help="revoke a certificate (by file or serial) and publish the CRL")
    rev.add_argument("--dir", required=True)
    rev.add_argument("--serial", help="hex serial number (as `show` prints it)")
    rev.add_argument("--reason", default="unspecified", choices=list(REVOCATION_REASONS))
    rev.add_argument("--crl-days", type=int, default=DEFAULT_CRL_DAYS)
    rev.add_argument("file", nargs="?", help="the certificate to revoke")

    crl = sub.add_parser("crl", help="re-sign mesh-ca.crl with a fresh nextUpdate; list entries")
    crl.add_argument("--dir", required=True)
    crl.add_argument("--days", type=int, default=DEFAULT_CRL_DAYS)

    ver = sub.add_parser("verify", help="check a certificate against the mesh CA, as a peer would")
    ver.add_argument("--dir", required=True, help="the CA directory (mesh-ca.crt and, when there, mesh-ca.crl are read)")
    ver.add_argument("--dns", help="also check it serves this DNS name")
    ver.add_argument("--ip", help="also check it serves this IP address")
    ver.add_argument("file")

    ex = sub.add_parser("example", help="the files config/example.yaml references")
    ex.add_argument("--dir", default=os.path.join("config", "certs"))
    ex.add_argument("--name", default="nfmesh", help="gateway name")
    return p


def _cmd_init(a: argparse.Namespace) -> int:
    ca = MeshCA.create(a.dir, a.name, a.days, force=a.force)
    print(f"created mesh CA {ca.cert.subject.rfc4514_string()}: {ca.cert_path}, {ca.key_path}")
    return EXIT_OK


def _cmd_issue(a: argparse.Namespace) -> int:
    nf_type, instance_id = check_nf_type(a.nf_type), check_instance_id(a.instance_id)
    ca = MeshCA.load(a.dir)
    prefix = a.out or os.path.join(a.dir, f"{nf_type.lower()}-{instance_id}")
    if a.csr is not None:
        try:
            with open(a.csr, "rb") as fh:
                csr_pem = fh.read(1 << 20)
        except OSError as exc:
            raise CAError(f"cannot read {a.csr}: {exc.strerror}") from None
        cert_pem = ca.sign_csr(csr_pem, nf_type, instance_id, a.dns, a.ip, a.days)
        write_cert(prefix, cert_pem, a.force)
        print(f"issued {nf_type} {instance_id} for the key of {a.csr}: {prefix}.crt")
        return EXIT_OK
    cert_pem, key_pem = ca.issue(nf_type, instance_id, a.dns, a.ip, a.days)
    cert_path, key_path = write_pair(prefix, cert_pem, key_pem, a.force)
    print(f"issued {nf_type} {instance_id}: {cert_path}, {key_path}")
    return EXIT_OK


def _cmd_gateway(a: argparse.Namespace) -> int:
    ca = MeshCA.load(a.dir)
    instance_id = check_instance_id(a.instance_id) if a.instance_id else None
    cert_pem, key_pem = ca.issue_gateway(a.name, a.dns, a.ip, a.days, instance_id)
    prefix = a.out or os.path.join(a.dir, "gateway")
    cert_path, key_path = write_pair(prefix, cert_pem, key_pem, a.force)
    ident = certificate_identity(x509.load_pem_x509_certificate(cert_pem))
    print(f"issued gateway {a.name} (SCP {ident.instance_id if ident else '?'}): "
          f"{cert_path}, {key_path}")
    return EXIT_OK


def _cmd_show(a: argparse.Namespace) -> int:
    certs = read_certs(a.file)
    if a.json:
        print(json.dumps([describe_json(c) for c in certs], indent=2))
    else:
        print("\n\n".join(describe(c) for c in certs))
    return EXIT_OK


def _cmd_revoke(a: argparse.Namespace) -> int:
    if (a.file is None) == (a.serial is None):
        raise CAInputError("give either a certificate file or --serial")
    ca = MeshCA.load(a.dir)
    if a.file is not None:
        target: x509.Certificate | int = read_certs(a.file)[0]
    else:
        try:
            target = int(a.serial.replace(":", ""), 16)
        except ValueError:
            raise CAInputError(f"--serial must be hexadecimal, not {a.serial!r}") from None
    serial = target.serial_number if isinstance(target, x509.Certificate) else target
    if ca.revoke(target, a.reason, a.crl_days):
        print(f"revoked serial {serial:x} ({a.reason}); published {ca.crl_path}")
    else:
        print(f"serial {serial:x} was already revoked; {ca.crl_path} unchanged")
    return EXIT_OK


def _cmd_crl(a: argparse.Namespace) -> int:
    ca = MeshCA.load(a.dir)
    path = ca.publish_crl(a.days)
    crl = ca.crl()
    assert crl is not None
    print(f"{path}: {len(crl)} revoked, next update "
          f"{crl.next_update_utc:%Y-%m-%d %H:%M} UTC")
    for r in crl:
        print(f"  {r.serial_number:x} revoked {r.revocation_date_utc:%Y-%m-%d %H:%M} UTC")
    return EXIT_OK


def _cmd_verify(a: argparse.Namespace) -> int:
    ca_cert = read_certs(os.path.join(a.dir, CA_CERT_FILE))[0]
    cert = read_certs(a.file)[0]
    try:
        ident = verify(ca_cert, cert, a.dns, a.ip, load_crl(a.dir, ca_cert))
    except CAError as exc:
        print(f"{a.file}: FAILED: {exc}")
        return EXIT_FAIL
    print(f"{a.file}: OK: {ident.nf_type or 'unknown NF type'} {ident.instance_id}, "
          f"valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    return EXIT_OK


def _cmd_example(a: argparse.Namespace) -> int:
    """The CA (kept when already there), the gateway certificate for localhost, 127.0.0.1 and
    ::1, and an example AMF client certificate, so the example config's TLS listener works."""
    try:
        ca = MeshCA.load(a.dir)
        print(f"using the mesh CA in {a.dir}")
    except CAError:
        if os.path.lexists(os.path.join(a.dir, CA_CERT_FILE)) or \
                os.path.lexists(os.path.join(a.dir, CA_KEY_FILE)):
            raise
        ca = MeshCA.create(a.dir)
        print(f"created mesh CA: {ca.cert_path}")
    if ca.crl() is None:
        ca.publish_crl()
    gw = ca.issue_gateway(a.name, ["localhost"], ["127.0.0.1", "::1"])
    cert_path, key_path = write_pair(os.path.join(a.dir, "gateway"), *gw, force=True)
    print(f"gateway certificate: {cert_path}, {key_path}")
    amf_id = "3f6b1f0e-8a47-4d4b-9c1e-5a2b7d9e0c11"
    amf = ca.issue("AMF", amf_id, ["amf.example"])
    amf_cert, amf_key = write_pair(os.path.join(a.dir, "amf-example"), *amf, force=True)
    print(f"example AMF client certificate ({amf_id}): {amf_cert}, {amf_key}")
    print(f"try: curl --http2 --cacert {ca.cert_path} --cert {amf_cert} --key {amf_key} "
          f"https://localhost:8443/...")
    return EXIT_OK


_COMMANDS = {"init": _cmd_init, "issue": _cmd_issue, "gateway": _cmd_gateway, "show": _cmd_show,
             "verify": _cmd_verify, "revoke": _cmd_revoke, "crl": _cmd_crl,
             "example": _cmd_example}


def main(argv: list[str]) -> int:
    """``nfmesh ca ...``: 0 ok, 1 operation failed, 2 bad usage or bad input."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return EXIT_OK if not exc.code else EXIT_USAGE
    if args.cmd is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return _COMMANDS[args.cmd](args)
    except CAInputError as exc:
        print(f"nfmesh ca {args.cmd}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CAError as exc:
        print(f"nfmesh ca {args.cmd}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except OSError as exc:
        print(f"nfmesh ca {args.cmd}: {exc}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
