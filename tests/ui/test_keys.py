"""The Keys page in a real browser: form errors keep what was typed, edits change what the
gateway enforces (checked with the openai SDK), rotation shows a new secret once and stops the
old one, revocation asks first; plus the admin API additions the page reads (`with_spend`,
`/spend?interval=`)."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import openai
import pytest

from tests.helpers import wait_for
from tests.ui.conftest import Stack, sign_in

WAIT_SECONDS = 30.0


def _api(stack: Stack, path: str, body: Any = None, method: str | None = None) -> Any:
    """The admin API with the Bearer token: (status, JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        stack.admin + path,
        data=data,
        method=method,
        headers={"authorization": f"Bearer {stack.token}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _create_in_ui(page: Any, stack: Stack, **fields: str) -> str:
    """Fill and send the create form; the secret shown."""
    page.goto(stack.console + "/keys")
    form = page.locator("form#new-key")
    for label, value in fields.items():
        form.get_by_label(label, exact=True).fill(value)
    form.get_by_role("button", name="Create key").click()
    return str(page.locator(".secret code").inner_text().strip())


def _client(stack: Stack, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=secret, max_retries=0)


def _chat(client: openai.OpenAI, model: str = "sample-model") -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    return str(answer.choices[0].message.content)


def _until_raises(call: Any, error: type[Exception]) -> None:
    """Other processes see key changes within the key poll interval: wait for the refusal."""

    def refused() -> bool:
        try:
            call()
        except error:
            return True
        return False

    wait_for(refused, timeout=WAIT_SECONDS, what=f"{error.__name__}")
    with pytest.raises(error):
        call()


def test_form_errors_keep_what_was_typed(page: Any, console_stack: Stack) -> None:
    sign_in(page, console_stack)
    page.goto(console_stack.console + "/keys")
    form = page.locator("form#new-key")
    form.get_by_label("Name", exact=True).fill("typo-key")
    form.get_by_label("Budget (USD)").fill("lots")
    form.get_by_role("button", name="Create key").click()
    alert = page.get_by_role("alert").inner_text()
    assert "max_budget: expected a number" in alert
    assert page.locator("form#new-key input[name=name]").input_value() == "typo-key"
    assert page.locator(".secret").count() == 0
    # The API's own checks show as its message (rpm must be at least 1).
    page.locator("form#new-key input[name=max_budget]").fill("")
    page.locator("form#new-key input[name=rpm]").fill("0")
    page.locator("form#new-key").get_by_role("button", name="Create key").click()
    assert "rpm" in page.get_by_role("alert").inner_text()
    assert page.locator(".secret").count() == 0
    status, listed = _api(console_stack, "/keys")
    assert status == 200 and all(k["name"] != "typo-key" for k in listed["keys"])


def test_edit_rotate_and_revoke_change_what_the_gateway_allows(
    page: Any, console_stack: Stack
) -> None:
    sign_in(page, console_stack)
    secret = _create_in_ui(page, console_stack, Name="edit-key", User="bob")
    client = _client(console_stack, secret)
    assert _chat(client, "sample-model-mini")
    page.get_by_role("link", name="This key's page").click()
    page.wait_for_url(re.compile(r"/ui/keys/key_"))
    key_url = page.url

    # Scope it to one model and give it limits.
    form = page.locator("form.keyform")
    form.get_by_label("Models", exact=True).fill("sample-model")
    form.get_by_label("Requests per minute").fill("600")
    form.get_by_label("Metadata, one key=value a line").fill("owner=bob\ncost-centre=42")
    form.get_by_role("button", name="Save changes").click()
    page.wait_for_url(re.compile(r"done=saved"))
    facts = page.locator("table.facts").inner_text()
    assert "models: sample-model" in facts and "600 rpm" in facts and "owner=bob" in facts
    _until_raises(lambda: _chat(client, "sample-model-mini"), openai.PermissionDeniedError)
    assert _chat(client, "sample-model")

    # Rotate: a confirmation, then the new secret once; the old one stops working.
    page.get_by_role("link", name="Rotate secret…").click()
    assert "stops working at once" in page.locator("main").inner_text()
    page.get_by_role("button", name="Yes, rotate it").click()
    new_secret = page.locator(".secret code").inner_text().strip()
    assert new_secret.startswith("sk-cw-") and new_secret != secret
    assert new_secret not in page.url
    _until_raises(lambda: _chat(client, "sample-model"), openai.AuthenticationError)
    rotated = _client(console_stack, new_secret)
    assert _chat(rotated, "sample-model")

    # Revoke asks first; cancelling changes nothing.
    page.goto(key_url)
    page.get_by_role("link", name="Revoke key…").click()
    page.get_by_role("link", name="Cancel").click()
    page.wait_for_url(key_url)
    assert _chat(rotated, "sample-model")
    page.get_by_role("link", name="Revoke key…").click()
    page.get_by_role("button", name="Yes, revoke it").click()
    page.wait_for_url(re.compile(r"done=revoked"))
    assert "revoked" in page.locator(".keyname").inner_text()
    assert page.locator("form.keyform").count() == 0  # a revoked key cannot be edited
    _until_raises(lambda: _chat(rotated, "sample-model"), openai.AuthenticationError)
    # The list says so in words, not only in colour.
    page.goto(console_stack.console + "/keys")
    row = page.locator("table.keys tr", has_text="edit-key")
    assert "revoked" in row.inner_text()


def test_secret_only_in_the_post_answer_and_never_cached(console_stack: Stack) -> None:
    # A script may use the console with the Bearer token (no cookie, so no CSRF field).
    form = urllib.parse.urlencode({"name": "script-key", "budget_period": "daily"}).encode()
    request = urllib.request.Request(
        console_stack.console + "/keys",
        data=form,
        headers={"authorization": f"Bearer {console_stack.token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        body = answer.read().decode()
        assert answer.status == 200
        assert answer.headers["cache-control"] == "no-store"
        assert answer.url == console_stack.console + "/keys"  # no redirect carrying the secret
    found = re.search(r'<code id="secret">(sk-cw-[^<]+)</code>', body)
    assert found, body
    listed = urllib.request.Request(
        console_stack.console + "/keys", headers={"authorization": f"Bearer {console_stack.token}"}
    )
    with urllib.request.urlopen(listed, timeout=10) as answer:
        page = answer.read().decode()
    assert "script-key" in page and found.group(1) not in page


def test_unknown_key_and_bad_id_are_404_pages(page: Any, console_stack: Stack) -> None:
    sign_in(page, console_stack)
    answer = page.goto(console_stack.console + "/keys/key_0000000000000000")
    assert answer is not None and answer.status == 404
    assert "no virtual key" in page.get_by_role("alert").inner_text()
    answer = page.goto(console_stack.console + "/keys/key_0000000000000000/revoke")
    assert answer is not None and answer.status == 404
    assert page.locator("form button").filter(has_text="revoke").count() == 0


def test_teams_and_users_with_their_budgets_and_spend(page: Any, console_stack: Stack) -> None:
    # research is a configured team (examples/console.yaml: $50 a month).
    sign_in(page, console_stack)
    secret = _create_in_ui(page, console_stack, Name="team-key", User="carol", Team="research")
    _chat(_client(console_stack, secret))
    page.goto(console_stack.console + "/keys")
    teams = page.locator("#teams + .scroll table").inner_text()
    assert "research" in teams and "$50.00" in teams and "monthly" in teams
    assert "accounting.teams" in teams

    def carol_listed() -> bool:
        page.goto(console_stack.console + "/keys")
        users = page.locator("#users + .scroll table")
        return users.count() == 1 and "carol" in users.inner_text()

    wait_for(carol_listed, timeout=WAIT_SECONDS, what="carol's spend")
    assert "no record" in page.locator("#users + .scroll table tr", has_text="carol").inner_text()
    assert page.get_by_role("img", name=re.compile("Teams: budget used")).count() == 1


def test_api_budgets_with_the_list_and_spend_per_interval(console_stack: Stack) -> None:
    status, created = _api(console_stack, "/keys", {"name": "api-key", "max_budget": 2})
    assert status == 201
    _chat(_client(console_stack, created["key"]))

    def counted() -> bool:
        _, listed = _api(console_stack, "/keys?with_spend=true")
        mine = [k for k in listed["keys"] if k["id"] == created["id"]]
        return bool(mine) and mine[0]["budget"]["spent"] > 0

    wait_for(counted, timeout=WAIT_SECONDS, what="the key's spend")
    _, listed = _api(console_stack, "/keys?with_spend=true")
    mine = next(k for k in listed["keys"] if k["id"] == created["id"])
    assert mine["budget"]["max_budget"] == 2 and mine["budget"]["period"] == "total"
    _, plain = _api(console_stack, "/keys")
    assert all("budget" not in k for k in plain["keys"])
    _, teams = _api(console_stack, "/teams?with_spend=true")
    research = next(t for t in teams["teams"] if t["id"] == "research")
    assert research["budget"]["max_budget"] == 50 and research["budget"]["budget_period"] == (
        "monthly"
    )

    end = time.time() + 60
    status, hourly = _api(
        console_stack, f"/spend?interval=1h&key={created['id']}&group_by=model&end={end}"
    )
    assert status == 200 and hourly["interval"] == 3600
    assert hourly["end"] - hourly["start"] == pytest.approx(24 * 3600)
    assert [row["model"] for row in hourly["rows"]] == ["sample-model"]
    assert hourly["start"] <= hourly["rows"][0]["start"] < end
    for query, param in (
        ("/spend?interval=10s", "interval"),
        ("/spend?interval=soon", "interval"),
        ("/spend?interval=1m&start=0", "interval"),
        ("/keys?with_spend=maybe", "with_spend"),
        ("/users?with_spend=2", "with_spend"),
    ):
        status, error = _api(console_stack, query)
        assert status == 400, query
        assert error["error"]["param"] == param, query


def test_set_a_users_budget_from_the_page(page: Any, console_stack: Stack) -> None:
    sign_in(page, console_stack)
    page.goto(console_stack.console + "/keys")
    form = page.locator("form[action='/ui/keys/budgets']")
    form.get_by_label("For a").select_option("user")
    form.get_by_label("Team or user id").fill("dora")
    form.get_by_label("Budget (USD)").fill("-1")
    form.get_by_role("button", name="Save budget").click()
    assert "max_budget" in page.get_by_role("alert").inner_text()
    assert page.locator("form[action='/ui/keys/budgets'] input[name=id]").input_value() == "dora"
    form = page.locator("form[action='/ui/keys/budgets']")
    form.get_by_label("Budget (USD)").fill("12.5")
    form.get_by_label("Budget period").select_option("weekly")
    form.get_by_label("Requests per minute").fill("30")
    form.get_by_role("button", name="Save budget").click()
    page.wait_for_url(re.compile(r"saved=user"))
    assert "Saved user dora" in page.get_by_role("status").inner_text()
    row = page.locator("#users + .scroll table tr", has_text="dora").inner_text()
    assert "store" in row and "of $12.50" in row and "weekly" in row and "30 rpm" in row
    status, stored = _api(console_stack, "/users/dora")
    assert status == 200 and stored["max_budget"] == 12.5 and stored["rpm"] == 30
