"""The admin plane over HTTPS (`admin.tls`), with client certificates when asked."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port, wait_for
from tests.policy.test_mtls import Pki, pki  # noqa: F401 (the fixture)

REFUSED = (ssl.SSLError, urllib.error.URLError, ConnectionError, OSError)


def _status(url: str, context: ssl.SSLContext | None = None) -> int:
    try:
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _up(url: str, context: ssl.SSLContext) -> bool:
    try:
        return _status(url, context) == 200
    except REFUSED:
        return False


def test_admin_plane_over_https_with_client_certificates(
    pki: Pki,  # noqa: F811
    tmp_path: Path,
) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "crossway.yaml"
    config.write_text(
        f"listen: {{port: {port}}}\n"
        f"admin:\n  port: {admin}\n  token: admin-tls-test-token\n  tls:\n"
        f"    cert_file: {pki.server_cert}\n    key_file: {pki.server_key}\n"
        f"    client_ca_file: {pki.ca}\n    client_auth: required\n"
    )
    env = {**os.environ, "CROSSWAY_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossway", "serve", "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"https://127.0.0.1:{admin}"
    try:
        wait_for(
            lambda: proc.poll() is not None or _up(base + "/healthz", pki.client_context()),
            what="the admin plane over HTTPS",
        )
        assert proc.poll() is None
        assert _status(base + "/readyz", pki.client_context()) == 200
        for context in (pki.client_context(with_cert=False), pki.client_context(stranger=True)):
            with pytest.raises(REFUSED):
                _status(base + "/healthz", context)
        with pytest.raises(REFUSED):
            _status(f"http://127.0.0.1:{admin}/healthz")  # no plain HTTP on the TLS port
        assert _status(base + "/ui/login", pki.client_context()) == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
