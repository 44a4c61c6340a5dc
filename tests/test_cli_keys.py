"""`crossway keys|teams|users|spend` as a subprocess, both ways: `--config` (the store
directly) and `--admin` (a running gateway's admin API)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crossway.store.accounting import digest
from tests.helpers import ROOT, Gateway, free_port, start_gateway

TOKEN = "cli-admin-t0ken"


def crossway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crossway", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        timeout=60,
    )


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`--config FILE` of a config whose store is in a tmp data dir."""
    monkeypatch.setenv("CROSSWAY_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "crossway.yaml"
    path.write_text("routes: []\naccounting:\n  teams:\n    research: {max_budget: 100}\n")
    return ["--config", str(path)]


def created_key(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """(secret, id) from `keys create`/`rotate` output: the secret alone on the last line."""
    assert result.returncode == 0, result.stderr
    lines = result.stdout.rstrip("\n").split("\n")
    secret = lines[-1]
    assert secret.startswith("sk-cw-") and secret == secret.strip() and " " not in secret
    key_id = next(line.split()[1] for line in lines if line.startswith("id:"))
    return secret, key_id


def test_keys_through_the_store(config: list[str]) -> None:
    secret, key_id = created_key(
        crossway(
            "keys", "create", *config, "--name", "ci", "--user", "alice", "--team", "research",
            "--models", "gpt-4o-mini,gpt-4o", "--mcp-tools", "files_read", "--agents", "helper",
            "--max-budget", "0.001", "--budget-period", "daily", "--rpm", "60", "--tpm", "1000",
            "--expires", "30d", "--metadata", "owner=ops", "--metadata", "env=dev",
        )
    )  # fmt: skip
    shown = crossway("keys", "show", key_id, *config)
    assert shown.returncode == 0, shown.stderr
    assert secret not in shown.stdout and digest(secret) not in shown.stdout
    assert "gpt-4o-mini,gpt-4o" in shown.stdout and "owner=ops, env=dev" in shown.stdout
    listed = crossway("keys", "list", *config, "--team", "research")
    assert key_id in listed.stdout and secret not in listed.stdout

    updated = crossway("keys", "update", key_id, *config, "--rpm", "5", "--clear-budget")
    assert updated.returncode == 0, updated.stderr
    assert "rpm:           5" in updated.stdout and "max_budget:    -" in updated.stdout

    new_secret, same_id = created_key(crossway("keys", "rotate", key_id, *config))
    assert same_id == key_id and new_secret != secret
    revoked = crossway("keys", "revoke", key_id, *config)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    for verb in (["rotate", key_id], ["update", key_id, "--rpm", "9"]):
        refused = crossway("keys", *verb, *config)
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.count("\n") == 1 and "revoked" in refused.stderr
    assert key_id not in crossway("keys", "list", *config).stdout
    assert key_id in crossway("keys", "list", *config, "--all").stdout
    missing = crossway("keys", "show", "key_nope", *config)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "flags",
    [
        ["--max-budget", "-1"],
        ["--max-budget", "1e12"],
        ["--max-budget", "lots"],
        ["--budget-period", "yearly"],
        ["--rpm", "0"],
        ["--tpm", "-3"],
        ["--expires", "0d"],
        ["--expires", "-5m"],
        ["--expires", "tomorrow"],
        ["--metadata", "novalue"],
        ["--models", "a b"],
        ["--user", "x/y"],
    ],
)
def test_bad_flags_write_nothing(config: list[str], flags: list[str]) -> None:
    result = crossway("keys", "create", *config, *flags)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr and result.stdout == ""
    listed = crossway("keys", "list", *config, "--all")
    assert listed.returncode == 0 and listed.stdout.count("\n") == 1  # the header alone
    team = crossway("teams", "set", "research", *config, *flags[:2])
    if flags[0] in ("--max-budget", "--budget-period", "--rpm", "--tpm", "--metadata"):
        assert team.returncode == 2, team


def test_teams_users_and_spend_through_the_store(config: list[str]) -> None:
    listed = crossway("teams", "list", *config)
    assert listed.returncode == 0 and "research" in listed.stdout and "config" in listed.stdout
    first = crossway("teams", "set", "research", *config, "--rpm", "50")
    assert first.returncode == 0, first.stderr
    # `set` changes what its flags name: the budget from the config stays.
    assert "max_budget:    100.0" in first.stdout and "rpm:           50" in first.stdout
    second = crossway("teams", "set", "research", *config, "--tpm", "900", "--clear-rpm")
    assert "rpm:           -" in second.stdout and "tpm:           900" in second.stdout
    assert "max_budget:    100.0" in second.stdout
    user = crossway("users", "set", "bob@example.com", *config, "--max-budget", "3")
    assert user.returncode == 0, user.stderr
    assert "bob@example.com" in crossway("users", "list", *config).stdout
    assert crossway("users", "delete", "bob@example.com", *config).returncode == 0
    gone = crossway("users", "show", "bob@example.com", *config)
    assert gone.returncode == 1 and "no user" in gone.stderr

    spend = crossway("spend", *config, "--group-by", "key,model", "--since", "24h")
    assert spend.returncode == 0, spend.stderr
    assert spend.stdout.splitlines()[0].split()[:2] == ["KEY", "MODEL"]
    assert "total: $0.000000" in spend.stdout
    bad = crossway("spend", *config, "--group-by", "colour")
    assert bad.returncode == 1 and "colour" in bad.stderr
    assert crossway("spend", *config, "--since", "0h").returncode == 2


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gateway-data")
    port = free_port()
    with start_gateway(
        f"admin:\n  port: {port}\n  token: {TOKEN}\nroutes: []\n",
        env={"CROSSWAY_DATA_DIR": str(data)},
        admin_port=port,
    ) as gw:
        yield gw


def test_keys_through_a_running_gateway(gateway: Gateway, tmp_path: Path) -> None:
    admin = ["--admin", gateway.admin_url]
    env = {"CROSSWAY_ADMIN_TOKEN": TOKEN}
    secret, key_id = created_key(
        crossway("keys", "create", *admin, "--team", "ops", "--max-budget", "2", env=env)
    )
    shown = crossway("keys", "show", key_id, *admin, "--admin-token", TOKEN)
    assert shown.returncode == 0 and key_id in shown.stdout
    assert secret not in shown.stdout and digest(secret) not in shown.stdout
    budget = crossway("keys", "list", *admin, "--team", "ops", env=env)
    assert key_id in budget.stdout and "$2/total" in budget.stdout

    # The store the gateway uses is the one `--config` opens (same data dir).
    path = tmp_path / "same.yaml"
    path.write_text("routes: []\n")
    direct = crossway(
        "keys",
        "list",
        "--config",
        str(path),
        env={"CROSSWAY_DATA_DIR": gateway.env["CROSSWAY_DATA_DIR"]},
    )
    assert direct.returncode == 0 and key_id in direct.stdout

    new_secret, _ = created_key(crossway("keys", "rotate", key_id, *admin, env=env))
    assert new_secret != secret
    assert crossway("keys", "revoke", key_id, *admin, env=env).returncode == 0
    refused = crossway("keys", "rotate", key_id, *admin, env=env)
    assert refused.returncode == 1 and "revoked" in refused.stderr
    assert refused.stderr.count("\n") == 1 and refused.stdout == ""

    assert crossway("teams", "set", "ops", *admin, "--rpm", "10", env=env).returncode == 0
    assert "ops" in crossway("teams", "list", *admin, env=env).stdout
    assert crossway("spend", *admin, "--group-by", "team", env=env).returncode == 0

    for bad_env in ({}, {"CROSSWAY_ADMIN_TOKEN": "wrong"}):
        denied = crossway("keys", "list", *admin, env={"CROSSWAY_ADMIN_TOKEN": "", **bad_env})
        assert denied.returncode == 1 and "401" in denied.stderr, denied
        assert denied.stderr.count("\n") == 1
    bad = crossway("keys", "create", *admin, "--expires", "0d", env=env)
    assert bad.returncode == 2 and "expires" in bad.stderr


def test_unreachable_admin_and_usage_errors(config: list[str], tmp_path: Path) -> None:
    down = crossway("keys", "list", "--admin", "http://127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach" in down.stderr
    assert down.stderr.count("\n") == 1
    both = crossway("keys", "list", "--admin", "http://127.0.0.1:9", *config)
    assert both.returncode == 2
    assert crossway("keys", "frobnicate").returncode == 2
    assert crossway("keys", "update", "key_x", *config).returncode == 2  # nothing to change
    missing = crossway("keys", "list", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
