"""Mutual-TLS authentication: the caller is the client certificate the listener verified.

The certificate comes from the ASGI TLS extension (`scope["extensions"]["tls"]`, whose
`client_cert_chain` lists PEM certificates, the client's first). The listener
(`listen.tls.client_auth`) does the verification against `client_ca_file` during the
handshake; this policy only reads the verified leaf, never a request header.

granian 2.8 verifies client certificates but does not pass them to the application (no `tls`
extension in the scope, emmett-framework/granian#788). Behind it this policy finds no
certificate: in `strict` mode every request is refused (401), and a warning says why once.
Use `listen.tls.client_auth: required` to enforce certificates at the handshake; this policy
identifies callers once the server exposes the extension.

With `source: header` the certificate comes instead from a TLS-terminating proxy in front of
Crossway that verified it (Envoy's `X-Forwarded-Client-Cert`, or a URL-encoded PEM as nginx's
`$ssl_client_escaped_cert`). The header is believed only when the TCP peer is one of
`listen.trusted_proxies`; from any other peer it is ignored, so a client cannot claim a
certificate by sending the header itself.

Identity: `{"sub", "method": "mtls", "subject", "san", "fingerprint"}` — `sub` is the subject
DN (RFC 4514) or the first SAN, as configured; `fingerprint` is the leaf's SHA-256 (hex).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from crossway.config.policy import MtlsAuthConfig
from crossway.errors import Forbidden, Unauthenticated
from crossway.policy.authn import AuthnPolicy, consume, set_identity
from crossway.server.context import RequestContext
from crossway.server.forwarded import FORWARDED
from crossway.types import Scope

log = logging.getLogger("crossway.policy.mtls")

MAX_PARSED_CERTIFICATES: Final = 1024
"""Parsed leaf certificates kept (a client sends the same one on every request)."""


class ClientCertificate:
    """What the policy reads from a verified leaf certificate."""

    __slots__ = ("fingerprint", "sans", "subject")

    def __init__(self, pem: str) -> None:
        try:
            cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise Unauthenticated(
                "the client certificate cannot be read", code="invalid_client_certificate"
            ) from None
        self.subject: str = cert.subject.rfc4514_string()
        self.fingerprint = cert.fingerprint(hashes.SHA256()).hex()
        self.sans: list[str] = []
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return
        for name in names:
            if isinstance(name, (x509.DNSName, x509.UniformResourceIdentifier, x509.RFC822Name)):
                self.sans.append(name.value)


class ForwardedCertificate:
    """A certificate a trusted proxy describes in Envoy's XFCC format without the PEM."""

    __slots__ = ("fingerprint", "sans", "subject")

    def __init__(self, fields: Mapping[str, list[str]]) -> None:
        self.subject = (fields.get("subject") or [""])[0]
        self.fingerprint = (fields.get("hash") or [""])[0]
        self.sans = [*fields.get("uri", []), *fields.get("dns", [])]


def parse_xfcc(value: str) -> dict[str, list[str]]:
    """The key/value pairs of the last element of an `X-Forwarded-Client-Cert` value (the
    one the proxy in front of Crossway added), keys lower-cased, quoted values unquoted."""
    elements = _split(value, ",")
    fields: dict[str, list[str]] = {}
    for pair in _split(elements[-1] if elements else "", ";"):
        key, sep, raw = pair.partition("=")
        if not sep:
            continue
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1].replace('\\"', '"')
        fields.setdefault(key.strip().lower(), []).append(raw)
    return fields


def _split(value: str, separator: str) -> list[str]:
    """Split on `separator` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == '"':
            quoted = not quoted
            current.append(char)
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in (part.strip() for part in parts) if p]


class MtlsPolicy(AuthnPolicy):
    """Authenticate by the TLS client certificate (subject DN or first SAN as `sub`)."""

    method = "mtls"

    def __init__(self, config: MtlsAuthConfig) -> None:
        super().__init__(config.mode)
        self.identity = config.identity
        self.allowed = frozenset(config.allowed)
        self._parsed: dict[str, ClientCertificate] = {}
        self._warned = False
        self.source = config.source
        self.header = config.header.lower().encode("latin-1")
        self.header_format = config.header_format

    def missing(self, scope: Scope) -> Unauthenticated:
        return Unauthenticated(
            "this endpoint needs a TLS client certificate", code="client_certificate_required"
        )

    def _tls(self, scope: Scope) -> Mapping[str, Any] | None:
        extensions = scope.get("extensions") or {}
        tls = extensions.get("tls")
        if tls is None and scope.get("scheme") == "https" and not self._warned:
            self._warned = True
            log.warning(
                "route policy mtls: the server does not pass TLS client certificates to the "
                "application (no ASGI 'tls' extension; granian 2.8 lacks it), so no caller "
                "can be identified by certificate; enforce certificates at the listener with "
                "listen.tls.client_auth: required"
            )
        return tls if isinstance(tls, Mapping) else None

    def _certificate(self, pem: str) -> ClientCertificate:
        parsed = self._parsed.get(pem)
        if parsed is None:
            parsed = ClientCertificate(pem)
            if len(self._parsed) >= MAX_PARSED_CERTIFICATES:
                self._parsed.clear()
            self._parsed[pem] = parsed
        return parsed

    def _forwarded(
        self, scope: Scope, ctx: RequestContext
    ) -> ClientCertificate | ForwardedCertificate | None:
        value = None
        for name, raw in scope["headers"]:
            if name == self.header:
                value = raw.decode("latin-1")
                break
        if value is None:
            return None
        # The header is the credential of the proxy in front, never the client's: consumed
        # either way, believed only when the TCP peer is a trusted proxy.
        consume(ctx, self.header)
        if FORWARDED not in ctx.attrs:
            log.warning(
                "route %s: ignoring %s from %s, which is not in listen.trusted_proxies",
                ctx.route,
                self.header.decode(),
                ctx.client_ip or "an unknown peer",
            )
            return None
        if self.header_format == "pem":
            return self._certificate(unquote(value))
        fields = parse_xfcc(value)
        cert = fields.get("cert")
        if cert:
            return self._certificate(unquote(cert[0]))
        if not fields.get("subject") and not fields.get("uri") and not fields.get("dns"):
            raise Unauthenticated(
                "the forwarded client certificate names no subject",
                code="invalid_client_certificate",
            )
        return ForwardedCertificate(fields)

    async def authenticate(self, scope: Scope, ctx: RequestContext) -> bool:
        if self.source == "header":
            found = self._forwarded(scope, ctx)
            if found is None:
                return False
            return self._identify(ctx, found)
        tls = self._tls(scope)
        if tls is None:
            return False
        error = tls.get("client_cert_error")
        if error:
            raise Unauthenticated(
                f"the client certificate did not verify: {error}",
                code="invalid_client_certificate",
            )
        chain = tls.get("client_cert_chain") or ()
        if not chain:
            return False
        leaf = chain[0]
        if not isinstance(leaf, str):
            raise Unauthenticated(
                "the client certificate cannot be read", code="invalid_client_certificate"
            )
        return self._identify(ctx, self._certificate(leaf))

    def _identify(
        self, ctx: RequestContext, cert: ClientCertificate | ForwardedCertificate
    ) -> bool:
        if self.identity == "san":
            if not cert.sans:
                raise Unauthenticated(
                    "the client certificate has no DNS, URI or e-mail subject alternative name",
                    code="invalid_client_certificate",
                )
            sub = cert.sans[0]
        else:
            sub = cert.subject
        if self.allowed and sub not in self.allowed:
            raise Forbidden(
                "this client certificate is not allowed here", code="client_certificate_denied"
            )
        set_identity(
            ctx,
            sub,
            self.method,
            subject=cert.subject,
            san=list(cert.sans),
            fingerprint=cert.fingerprint,
        )
        return True


__all__ = ["ClientCertificate", "MtlsPolicy"]
