"""Bad accounting config is refused at load with the key's path and a clear reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

ROUTE = """
routes:
  - name: llm
    backend: llm
    policies:
{policies}
backends:
  llm: {{type: llm, providers: {{p: {{type: openai, base_url: "http://127.0.0.1:9/v1", api_key: x}}}}}}
"""


def _validate(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "crossway", "validate", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("policies", "accounting", "expected"),
    [
        ("- {type: rate_limit, limits: [{key: key, requests: -5}]}", "", "requests"),
        ("- {type: rate_limit, limits: [{key: key, requests: 0}]}", "", "requests"),
        ("- {type: rate_limit, limits: [{key: key, tokens: 1e12}]}", "", "tokens"),
        ("- {type: rate_limit, limits: [{key: key, requests: 5, window: 0}]}", "", "window"),
        ("- {type: rate_limit, limits: [{key: key, requests: 5, tokens: 5}]}", "", "exactly one"),
        ("- {type: rate_limit, limits: [{key: password, requests: 5}]}", "", "unknown limit key"),
        ("- {type: rate_limit, limits: []}", "", "limits"),
        ("- {type: rate_limit, limits: [{key: key, requests: 5, mode: global}]}", "", "Redis"),
        ("- {type: virtual_key}", "accounting: {teams: {t: {max_budget: -1}}}", "max_budget"),
        ("- {type: virtual_key}", "accounting: {teams: {t: {max_budget: 1e15}}}", "max_budget"),
        ("- {type: virtual_key}", "accounting: {users: {u: {rpm: 0}}}", "rpm"),
        ("- {type: virtual_key}", "accounting: {teams: {t: {budget_period: yearly}}}", "period"),
        ("- {type: virtual_key}", "accounting: {timezone: Mars/Olympus}", "time zone"),
        ("- {type: virtual_key}", "accounting: {flush_interval: 0}", "flush_interval"),
        ("- {type: virtual_key}", "accounting: {store: {type: redis, url: http://x}}", "redis://"),
        ("- {type: virtual_key, mode: sometimes}", "", "mode"),
    ],
)
def test_bad_accounting_config_is_refused(
    tmp_path: Path, policies: str, accounting: str, expected: str
) -> None:
    text = accounting + "\n" + ROUTE.format(policies="      " + policies)
    done = _validate(tmp_path, text)
    assert done.returncode == 2, done.stdout
    assert expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_examples_validate() -> None:
    env = {"REDIS_URL": "redis://127.0.0.1:6379/0", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    for name in ("keys.yaml", "replicas.yaml"):
        done = subprocess.run(
            [sys.executable, "-m", "crossway", "validate", "--config", f"examples/{name}"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, **env},
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
