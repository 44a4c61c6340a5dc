"""The issue's second "done when" line: `OTEL_EXPORTER_OTLP_ENDPOINT` pointed at a receiver, and
no other change to examples/quickstart.yaml, exports the quickstart's spans (`make run`'s own
`crossway.quickstart`, with its sample upstreams)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import openai

from tests.helpers import ROOT, free_port, http_status, wait_for
from tests.telemetry.otlp_receiver import ReceivedSpan, otlp_receiver


def test_the_quickstart_exports_its_spans() -> None:
    with otlp_receiver() as receiver:
        port, admin = free_port(), free_port()
        env = {
            **os.environ,
            "CROSSWAY_PORT": str(port),
            "CROSSWAY_ADMIN_PORT": str(admin),
            "SAMPLE_LLM_PORT": str(free_port()),
            "SAMPLE_MCP_PORT": str(free_port()),
            "SAMPLE_A2A_WRITER_PORT": str(free_port()),
            "SAMPLE_A2A_VISION_PORT": str(free_port()),
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
        }
        env.pop("CROSSWAY_QUICKSTART_CONFIG", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "crossway.quickstart"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for(
                lambda: (
                    proc.poll() is not None
                    or http_status(f"http://127.0.0.1:{admin}/readyz") == 200
                ),
                what="quickstart",
            )
            assert proc.poll() is None, "quickstart exited early"
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
            answer = client.chat.completions.create(
                model="sample-model", messages=[{"role": "user", "content": "hello"}]
            )
            assert answer.choices[0].message.content == "You said: hello"

            def exported(spans: list[ReceivedSpan]) -> bool:
                return any(
                    s.kind == "server" and s.attributes.get("crossway.route") == "llm"
                    for s in spans
                ) and any(s.kind == "client" for s in spans)

            spans = receiver.wait_for(exported)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    server = next(s for s in spans if s.kind == "server")
    attempt = next(s for s in spans if s.kind == "client" and s.trace_id == server.trace_id)
    assert attempt.attributes["gen_ai.request.model"] == "sample-model"
