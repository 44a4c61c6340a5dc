"""examples/keys.yaml runs as its header says: the sample upstream, a key made with
`crossway keys create`, a call with the openai SDK, the spend listed by `crossway spend`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.helpers import ROOT, Gateway, free_port, start_gateway, wait_for
from tests.mcp.conftest import spawn, stop


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    llm_port = free_port()
    sample = spawn(
        [sys.executable, "-m", "crossway.samples.openai_server", "--port", str(llm_port)],
        llm_port,
    )
    env = {
        "SAMPLE_LLM_URL": f"http://127.0.0.1:{llm_port}/v1",
        "CROSSWAY_DATA_DIR": str(tmp_path_factory.mktemp("data")),
    }
    try:
        with start_gateway((ROOT / "examples/keys.yaml").read_text(), env=env) as gw:
            yield gw
    finally:
        stop(sample)


def _cli(gw: Gateway, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "crossway", *args, "--admin", gw.admin_url],
        env=gw.env,
        cwd=Path(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_example_as_its_header_says(gateway: Gateway) -> None:
    out = _cli(
        gateway,
        "keys",
        "create",
        "--team",
        "research",
        "--max-budget",
        "0.01",
        "--models",
        "sample-model",
    )
    key = out.strip().splitlines()[-1]
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    resp = client.chat.completions.with_raw_response.create(
        model="sample-model", messages=[{"role": "user", "content": "hello"}]
    )
    assert resp.parse().choices[0].message.content == "You said: hello"
    assert resp.headers["x-ratelimit-limit-requests"] == "60"
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=gateway.url + "/v1", api_key="sk-cw-nope", max_retries=0
        ).models.list()

    wait_for(
        lambda: "sample-model" in _cli(gateway, "spend", "--group-by", "key,model"),
        timeout=10,
        what="the call's spend to be written",
    )
