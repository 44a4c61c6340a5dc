"""Guard decisions reach the access log line and the request log store, and neither the
store nor the line keeps the text a guard found: a refused request's stored body has its
match masked, a masked answer is stored masked (LLM, streamed and not)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import _sample_process
from tests.helpers import free_port, start_gateway, wait_for
from tests.telemetry.test_access_log import Stack

CARD = "4111 1111 1111 1111"
CONFIG = """
telemetry:
  access_log: {{path: {log}}}
  request_log: {{enabled: true, flush_interval: 0.02}}
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
    policies:
      - type: guardrails
        name: pii
        detectors:
          - {{type: pii, entities: [email], response: mask}}
          - {{type: pii, entities: [credit_card], request: block}}
backends:
  llm:
    type: llm
    providers:
      oa: {{type: openai_compatible, base_url: "{upstream}"}}
"""


def _entry(admin: str, request_id: str) -> dict[str, Any]:
    found: list[Any] = []

    def stored() -> bool:
        logs = httpx.get(admin + "/logs").json()["logs"]
        found[:] = [e for e in logs if e["request_id"] == request_id]
        return bool(found)

    wait_for(stored, timeout=10, what="the stored entry")
    return httpx.get(f"{admin}/logs/{found[0]['id']}").json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_decisions_are_logged_and_no_match_is_kept(tmp_path: Path, stream: bool) -> None:
    log = tmp_path / "access.log"
    with _sample_process() as upstream:
        config = CONFIG.format(log=log, upstream=upstream, port=free_port())
        with start_gateway(config, env={"CROSSWAY_DATA_DIR": str(tmp_path / "data")}) as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
            stack = Stack(gw, log)
            # A refused request: counted, and stored with its card masked.
            with pytest.raises(openai.BadRequestError) as err:
                client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": f"card {CARD}"}], stream=stream
                )
            refused_id = err.value.response.headers["x-request-id"]
            line = stack.line_for(request_id=refused_id)
            decision = {
                "guard": "pii",
                "detector": "credit_card",
                "action": "block",
                "direction": "request",
                "count": 1,
            }
            assert line["guards"] == [decision]
            entry = _entry(gw.admin_url, refused_id)
            assert entry["guards"] == [decision]
            assert "4111" not in orjson.dumps(entry).decode()
            assert "4111" not in log.read_text()
            # A masked answer: stored as the client got it.
            raw = client.chat.completions.with_raw_response.create(
                model="m",
                messages=[{"role": "user", "content": "write to jane@example.com"}],
                stream=stream,
            )
            body = raw.parse()
            if stream:
                text = "".join(c.choices[0].delta.content or "" for c in body if c.choices)
            else:
                text = body.choices[0].message.content
            assert text.endswith("write to <EMAIL>")
            entry = _entry(gw.admin_url, raw.headers["x-request-id"])
            assert entry["guards"][0]["action"] == "mask"
            assert "<EMAIL>" in orjson.dumps(entry["response"]).decode()
            # The request went upstream as sent (the guard masks only answers' e-mails).
            assert "jane@example.com" in orjson.dumps(entry["request"]).decode()
