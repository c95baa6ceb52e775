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
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject: str, key, issuer: str, issuer_key, *extensions) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(end))
        for ext, critical in extensions:
            builder = builder.add_extension(ext, critical=critical)
        return builder.sign(issuer_key, hashes.SHA256())

    def pem_key(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def pem_cert(c: x509.Certificate) -> bytes:
        return c.public_bytes(serialization.Encoding.PEM)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("kafkatail test CA", ca_key, "kafkatail test CA", ca_key,
              (x509.BasicConstraints(ca=True, path_length=0), True),
              (x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                             content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, encipher_only=False,
                             decipher_only=False), True))
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = cert(hosts[0], server_key, "kafkatail test CA", ca_key,
                  (x509.SubjectAlternativeName(sans), False),
                  (x509.BasicConstraints(ca=False, path_length=None), True),
                  (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                          ExtendedKeyUsageOID.CLIENT_AUTH]), False))
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = cert(client_cn, client_key, "kafkatail test CA", ca_key,
                  (x509.BasicConstraints(ca=False, path_length=None), True),
                  (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False))

    folder.mkdir(parents=True, exist_ok=True)
    pki = TestPKI(ca=folder / "ca.pem", server_pem=folder / "server.pem",
                  client_cert=folder / "client.pem", client_key=folder / "client.key",
                  client_dn=f"CN={client_cn}")
    pki.ca.write_bytes(pem_cert(ca))
    pki.server_pem.write_bytes(pem_key(server_key) + pem_cert(server))
    pki.client_cert.write_bytes(pem_cert(client))
    pki.client_key.write_bytes(pem_key(client_key))
    for path in (pki.server_pem, pki.client_key):
        path.chmod(0o600)
    return pki
