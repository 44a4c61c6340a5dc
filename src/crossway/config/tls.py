"""Listener TLS: the server certificate, and client certificates (mutual TLS).

```yaml
listen:
  port: 8443
  tls:
    cert_file: /etc/crossway/server.pem
    key_file: /etc/crossway/server.key
    client_ca_file: /etc/crossway/clients-ca.pem   # mutual TLS
    client_auth: required
```

The files are checked when the config is loaded (`crossway validate` names the one that does
not load) and read by the server when it starts its workers: a restart picks up new
certificates; with `--workers` > 1, SIGHUP after the files changed respawns the workers
gracefully, so they load them (see docs/security-policies.md).
"""

from __future__ import annotations

import ssl
from typing import Final, Literal

from pydantic import Field, model_validator

from crossway.config.base import StrictModel

ClientAuth = Literal["none", "optional", "required"]
TlsVersion = Literal["1.2", "1.3"]
DEFAULT_TLS_MIN_VERSION: Final[TlsVersion] = "1.2"


class ListenTls(StrictModel):
    """Serve the data plane over HTTPS, optionally asking clients for certificates."""

    cert_file: str
    """PEM file of the server certificate, followed by its intermediates."""
    key_file: str
    """PEM file of the server certificate's private key (unencrypted)."""
    client_ca_file: str | None = None
    """PEM file of the CA certificate(s) client certificates must chain to (mutual TLS)."""
    client_auth: ClientAuth = "none"
    """`none`: no client certificates; `optional`: asked for, and a presented one must verify
    against `client_ca_file`; `required`: a connection without a valid one fails the
    handshake. `optional` and `required` need `client_ca_file`."""
    client_crl_files: list[str] = Field(default_factory=list)
    """PEM certificate revocation lists checked against client certificates."""
    min_version: TlsVersion = DEFAULT_TLS_MIN_VERSION
    """Oldest TLS version accepted (`1.2` or `1.3`)."""

    @model_validator(mode="after")
    def _consistent_and_loadable(self) -> ListenTls:
        if self.client_auth != "none" and self.client_ca_file is None:
            raise ValueError(f"client_auth {self.client_auth} needs client_ca_file")
        if self.client_ca_file is not None and self.client_auth == "none":
            raise ValueError("client_ca_file is set: set client_auth to optional or required")
        if self.client_crl_files and self.client_ca_file is None:
            raise ValueError("client_crl_files needs client_ca_file")
        check_files(self)
        return self


def check_files(tls: ListenTls) -> None:
    """Raise ValueError naming the file when a certificate, key, CA or CRL does not load
    (the server would otherwise fail in a worker with a less helpful message)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"cannot load cert_file {tls.cert_file} / key_file {tls.key_file}: {exc}"
        ) from None
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load client_ca_file {tls.client_ca_file}: {exc}") from None
    from cryptography import x509  # only when CRLs are configured (it is a large import)

    for path in tls.client_crl_files:
        try:
            with open(path, "rb") as f:
                x509.load_pem_x509_crl(f.read())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot load CRL {path}: {exc}") from None


def tls_files(tls: ListenTls) -> tuple[str, ...]:
    """Every file the listener reads (to notice when they change)."""
    files = [tls.cert_file, tls.key_file, *tls.client_crl_files]
    if tls.client_ca_file is not None:
        files.append(tls.client_ca_file)
    return tuple(files)


__all__ = ["DEFAULT_TLS_MIN_VERSION", "ClientAuth", "ListenTls", "check_files", "tls_files"]
