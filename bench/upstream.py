"""The benchmark's upstream: nginx answering fixed provider responses from files.

nginx cannot look inside request bodies, so a streaming answer lives at its own path prefix:
`/v1/...` answers JSON and `/stream/v1/...` answers the stream. A proxy is pointed at one or
the other through its base URL. Bedrock's two operations already have distinct paths.

POSTs to static files are answered through `return 405` + `error_page 405 =200 <file>`: the
internal redirect turns the request into a GET of the file and the request body is discarded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

NGINX_TEMPLATE: Final = """\
{user}
worker_processes 1;
daemon off;
master_process on;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-tmp/body;
    proxy_temp_path {work}/nginx-tmp/proxy;
    fastcgi_temp_path {work}/nginx-tmp/fastcgi;
    uwsgi_temp_path {work}/nginx-tmp/uwsgi;
    scgi_temp_path {work}/nginx-tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    tcp_nodelay on;
    sendfile on;
    etag off;
    server_tokens off;
    open_file_cache max=64 inactive=600s;
    open_file_cache_valid 600s;
    types {{
        application/json json;
        text/event-stream sse;
        application/vnd.amazon.eventstream bin;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location /_files/ {{ internal; alias {files}/; }}
        location = /healthz {{ return 200 "ok"; }}
        location = /v1/models {{
            default_type application/json;
            return 200 '{{"object":"list","data":[{{"id":"gpt-4o-mini","object":"model","created":0,"owned_by":"bench"}}]}}';
        }}
        location = /v1/chat/completions {{ error_page 405 =200 /_files/openai-chat.json; return 405; }}
        location = /stream/v1/chat/completions {{ error_page 405 =200 /_files/openai-chat.sse; return 405; }}
        location = /v1/messages {{ error_page 405 =200 /_files/anthropic-messages.json; return 405; }}
        location = /stream/v1/messages {{ error_page 405 =200 /_files/anthropic-messages.sse; return 405; }}
        location ~ ^/model/[^/]+/converse$ {{ error_page 405 =200 /_files/bedrock-converse.json; return 405; }}
        location ~ ^/model/[^/]+/converse-stream$ {{ error_page 405 =200 /_files/bedrock-converse-stream.bin; return 405; }}
    }}
}}
"""


def find_nginx() -> str | None:
    """Path of the nginx binary (Debian installs it under /usr/sbin, often not on PATH)."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


@dataclass
class Nginx:
    """A running nginx serving the fixtures in `files` on 127.0.0.1:`port`."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def write_config(work: Path, files: Path, port: int) -> Path:
    """Write nginx.conf for the benchmark into `work` and return its path."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / "nginx-tmp" / sub).mkdir(parents=True, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = work / "nginx.conf"
    conf.write_text(NGINX_TEMPLATE.format(user=user, work=work, files=files, port=port))
    return conf


def start_nginx(work: Path, files: Path, port: int, *, cpu: int) -> Nginx:
    """Start nginx pinned to `cpu`; the caller waits for readiness."""
    binary = find_nginx()
    if binary is None:
        raise RuntimeError("nginx not found (bench/run.sh installs it with apt-get)")
    conf = write_config(work, files, port)
    process = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(cpu),
            binary,
            "-p",
            str(work),
            "-c",
            str(conf),
            "-e",
            str(work / "nginx-error.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return Nginx(port=port, process=process)
