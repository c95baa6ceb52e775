"""A throwaway certificate authority for test brokers: a CA, a server and a client certificate.

Everything is written as PEM, the one format both sides read without conversion: Apache Kafka
takes PEM key and trust stores (``ssl.keystore.type=PEM``), Python's ``ssl`` module takes PEM
files. Keys are made fresh for every broker start and never leave its temporary folder.
"""
from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TestPKI:
    """Where the PEM files are.

    ``server_pem`` holds the server's private key (PKCS#8) then its certificate, as Kafka's PEM
    key store wants them in one file; ``client_cert``/``client_key`` are for mutual TLS.
    """

    ca: Path
    server_pem: Path
    client_cert: Path
    client_key: Path
    client_dn: str


def make_pki(folder: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
             client_cn: str = "kt-client") -> TestPKI:
    """A fresh CA, a server certificate for ``hosts`` (the first is its CN) and a client
    certificate for ``client_cn``, written as PEM under ``folder``."""
    ca = _Authority("kafkatail test CA")
    server_key, server = ca.issue(hosts[0], *_server_extensions(hosts))
    client_key, client = ca.issue(client_cn, *_client_extensions())
    folder.mkdir(parents=True, exist_ok=True)
    pki = TestPKI(ca=folder / "ca.pem", server_pem=folder / "server.pem",
                  client_cert=folder / "client.pem", client_key=folder / "client.key",
                  client_dn=f"CN={client_cn}")
    pki.ca.write_bytes(_pem_cert(ca.cert))
    pki.server_pem.write_bytes(_pem_key(server_key) + _pem_cert(server))
    pki.client_cert.write_bytes(_pem_cert(client))
    pki.client_key.write_bytes(_pem_key(client_key))
    for path in (pki.server_pem, pki.client_key):
        path.chmod(0o600)
    return pki


class _Authority:
    """A self-signed CA (EC P-256) that issues certificates valid from an hour ago for two days."""

    def __init__(self, cn: str) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec

        now = datetime.datetime.now(datetime.timezone.utc)
        self.start, self.end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
        self.cn = cn
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = self._sign(cn, self.key, (
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                           content_commitment=False, key_encipherment=False,
                           data_encipherment=False, key_agreement=False, encipher_only=False,
                           decipher_only=False), True)))

    def issue(self, cn: str, *extensions: tuple[Any, bool]) -> tuple[Any, Any]:
        """A new key and its certificate for ``cn``, signed by this CA."""
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        return key, self._sign(cn, key, extensions)

    def _sign(self, subject: str, key: Any, extensions: tuple[tuple[Any, bool], ...]) -> Any:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        builder = (x509.CertificateBuilder().subject_name(_name(subject))
                   .issuer_name(_name(self.cn)).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(self.start).not_valid_after(self.end))
        for ext, critical in extensions:
            builder = builder.add_extension(ext, critical=critical)
        return builder.sign(self.key, hashes.SHA256())


def _server_extensions(hosts: tuple[str, ...]) -> tuple[tuple[Any, bool], ...]:
    """A server (and client) certificate's extensions, each host an IP or DNS name in its SAN."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    return ((x509.SubjectAlternativeName(sans), False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                    ExtendedKeyUsageOID.CLIENT_AUTH]), False))


def _client_extensions() -> tuple[tuple[Any, bool], ...]:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    return ((x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False))


def _name(cn: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)
