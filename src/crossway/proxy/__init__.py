"""Talking to upstreams: the one outbound client factory (`outbound`: TLS, no cookies, no
redirects), the pooled hot-path client, streaming, timeouts; the plain HTTP backend."""
