"""The capability router and the catalog: every test fails on a wrong pick."""

from __future__ import annotations

from typing import Any

import pytest

from crossway.a2a.errors import CONTENT_TYPE_NOT_SUPPORTED, INVALID_PARAMS, A2aError
from crossway.a2a.model import Agent
from crossway.a2a.routing import (
    CapabilityRouter,
    router_card,
    search_catalog,
    tokenize,
)


def agent(
    name: str,
    description: str,
    skills: list[dict[str, Any]],
    *,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    tags: list[str] | None = None,
    up: bool = True,
) -> Agent:
    inputs = inputs if inputs is not None else ["text/plain"]
    outputs = outputs if outputs is not None else ["text/plain"]
    card = {
        "name": name,
        "description": description,
        "version": "1.0.0",
        "supportedInterfaces": [
            {
                "url": f"http://127.0.0.1/{name}",
                "protocolBinding": "JSONRPC",
                "protocolVersion": "1.0",
            }
        ],
        "capabilities": {},
        "defaultInputModes": inputs,
        "defaultOutputModes": outputs,
        "skills": skills,
    }
    skill_tags = [t for s in skills for t in s.get("tags", [])]
    return Agent(
        name=name,
        base_url=f"http://127.0.0.1/{name}",
        version="1.0",
        card=card,
        skills=skills,
        input_modes=inputs,
        output_modes=outputs,
        tags=[*(tags or []), *skill_tags],
        up=up,
    )


def skill(sid: str, name: str, description: str, tags: list[str], **extra: Any) -> dict[str, Any]:
    return {"id": sid, "name": name, "description": description, "tags": tags, **extra}


def fleet() -> list[Agent]:
    return [
        agent(
            "summarizer",
            "Summarizes long documents and articles.",
            [
                skill(
                    "summarize",
                    "Summarize text",
                    "Produces a short summary of a long text, article or report.",
                    ["summary", "tl;dr"],
                    examples=["Summarize this article", "Give me the gist of this report"],
                )
            ],
        ),
        agent(
            "translator",
            "Translates text between human languages.",
            [
                skill(
                    "translate",
                    "Translate text",
                    "Translates text from one language into another (French, German, Spanish).",
                    ["translation", "languages"],
                    examples=["Translate this into French", "How do you say hello in German?"],
                )
            ],
            tags=["nlp"],
        ),
        agent(
            "vision",
            "Looks at images and describes them.",
            [
                skill(
                    "describe-image",
                    "Describe image",
                    "Describes what is in a photo or picture; answers questions about images.",
                    ["vision", "image"],
                    inputModes=["image/*", "text/plain"],
                ),
                skill(
                    "render-chart",
                    "Render chart",
                    "Draws a chart from a table of numbers.",
                    ["chart"],
                    inputModes=["application/json", "text/plain"],
                    outputModes=["image/png"],
                ),
            ],
            inputs=["text/plain", "image/png", "image/jpeg"],
            outputs=["text/plain"],
        ),
    ]


def text_message(text: str, **metadata: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": text}]}
    if metadata:
        message["metadata"] = metadata
    return message


def image_message(text: str, media: str = "image/png") -> dict[str, Any]:
    return {
        "messageId": "m2",
        "role": "ROLE_USER",
        "parts": [{"text": text}, {"raw": "iVBORw0KGgo=", "mediaType": media}],
    }


@pytest.fixture
def router() -> CapabilityRouter:
    return CapabilityRouter(fleet())


# -- pick: the text match --------------------------------------------------------------------


def test_translate_goes_to_the_translator_not_the_summarizer(router: CapabilityRouter) -> None:
    decision = router.pick(text_message("translate this into French"))
    assert (decision.agent, decision.skill, decision.reason) == ("translator", "translate", "match")
    assert decision.score > 0


def test_summary_request_goes_to_the_summarizer(router: CapabilityRouter) -> None:
    decision = router.pick(text_message("Please summarize this long report for me"))
    assert (decision.agent, decision.skill) == ("summarizer", "summarize")


def test_the_skill_within_an_agent_is_picked_by_text(router: CapabilityRouter) -> None:
    decision = router.pick(text_message("draw a chart of these numbers"))
    assert (decision.agent, decision.skill) == ("vision", "render-chart")


def test_tags_win_over_the_text(router: CapabilityRouter) -> None:
    decision = router.pick(text_message("translate this into French", tags=["Summary"]))
    assert decision.agent == "summarizer"
    # config tags count too
    assert router.pick(text_message("hello", tags=["nlp"])).agent == "translator"


# -- pick: explicit skill ------------------------------------------------------------------


def test_an_explicit_skill_id_wins_over_the_text(router: CapabilityRouter) -> None:
    decision = router.pick(text_message("translate this into French", skillId="summarize"))
    assert (decision.agent, decision.skill, decision.reason) == ("summarizer", "summarize", "skill")


def test_the_router_card_skill_id_maps_back(router: CapabilityRouter) -> None:
    message = text_message("translate this", **{"crossway/skill": "vision/describe-image"})
    decision = router.pick(message)
    assert (decision.agent, decision.skill) == ("vision", "describe-image")
    assert router.resolve_skill("vision/render-chart") == ("vision", "render-chart")
    assert router.resolve_skill("vision/nope") is None


def test_an_unknown_skill_id_is_invalid_params_naming_it(router: CapabilityRouter) -> None:
    with pytest.raises(A2aError) as caught:
        router.pick(text_message("hi", skillId="teleport"))
    assert caught.value.code == INVALID_PARAMS
    assert "teleport" in caught.value.message


def test_a_skill_of_an_agent_the_caller_may_not_call_is_unknown(router: CapabilityRouter) -> None:
    with pytest.raises(A2aError) as caught:
        router.pick(text_message("hi", skillId="translate"), candidates={"summarizer"})
    assert caught.value.code == INVALID_PARAMS


def test_an_explicit_skill_still_negotiates_modes(router: CapabilityRouter) -> None:
    message = image_message("translate the text in this picture")
    message["metadata"] = {"skillId": "translate"}
    with pytest.raises(A2aError) as caught:
        router.pick(message)
    assert caught.value.code == CONTENT_TYPE_NOT_SUPPORTED
    assert "image/png" in caught.value.message


def test_an_explicit_skill_of_a_down_agent_is_unavailable() -> None:
    agents = fleet()
    agents[1].up = False
    with pytest.raises(A2aError) as caught:
        CapabilityRouter(agents).pick(text_message("x", skillId="translate"))
    assert caught.value.status == 503
    assert "translator" in caught.value.message


# -- pick: modality negotiation --------------------------------------------------------------


def test_an_image_never_goes_to_a_text_only_agent(router: CapabilityRouter) -> None:
    # the text matches the translator much better, but it takes text only
    decision = router.pick(image_message("translate this into French, translate translation"))
    assert (decision.agent, decision.skill) == ("vision", "describe-image")


def test_a_file_part_without_a_media_type_is_octet_stream(router: CapabilityRouter) -> None:
    message = text_message("summarize")
    message["parts"].append({"url": "https://example.com/x.bin"})
    with pytest.raises(A2aError) as caught:
        router.pick(message)
    assert caught.value.code == CONTENT_TYPE_NOT_SUPPORTED
    assert "application/octet-stream" in caught.value.message


def test_an_audio_part_no_agent_takes_is_32005_naming_the_modes(router: CapabilityRouter) -> None:
    message = image_message("transcribe this", media="audio/wav")
    with pytest.raises(A2aError) as caught:
        router.pick(message)
    error = caught.value
    assert error.code == CONTENT_TYPE_NOT_SUPPORTED == -32005
    assert error.status == 415
    assert "audio/wav" in error.message
    assert "translator takes text/plain" in error.message
    assert "vision takes" in error.message and "image/*" in error.message
    assert error.data["inputModes"] == ["text/plain", "audio/wav"]
    assert {a["name"] for a in error.data["agents"]} == {"summarizer", "translator", "vision"}


def test_a_data_part_goes_to_a_skill_taking_json(router: CapabilityRouter) -> None:
    message = {"messageId": "m", "role": "ROLE_USER", "parts": [{"data": {"rows": [1, 2]}}]}
    decision = router.pick(message)
    assert (decision.agent, decision.skill, decision.reason) == ("vision", "render-chart", "mode")


def test_the_output_mode_constraint(router: CapabilityRouter) -> None:
    # only the chart skill produces images, whatever the text says
    decision = router.pick(
        text_message("summarize this article"), accepted_output_modes=["image/png"]
    )
    assert (decision.agent, decision.skill) == ("vision", "render-chart")
    assert (
        router.pick(text_message("chart it"), accepted_output_modes=["image/*"]).skill
        == "render-chart"
    )
    with pytest.raises(A2aError) as caught:
        router.pick(text_message("summarize"), accepted_output_modes=["video/mp4"])
    assert caught.value.code == CONTENT_TYPE_NOT_SUPPORTED
    assert "video/mp4" in caught.value.message


def test_a_more_specific_mode_wins_a_tie() -> None:
    loose = agent("loose", "Anything.", [skill("any", "Any", "Whatever.", [])], inputs=["*/*"])
    wild = agent("wild", "Pictures.", [skill("pic", "Pic", "Whatever.", [])], inputs=["image/*"])
    exact = agent("exact", "PNGs.", [skill("png", "Png", "Whatever.", [])], inputs=["image/png"])
    router = CapabilityRouter([loose, wild, exact])
    message = {
        "messageId": "m",
        "role": "ROLE_USER",
        "parts": [{"raw": "", "mediaType": "image/png"}],
    }
    assert router.pick(message).agent == "exact"
    message["parts"][0]["mediaType"] = "image/gif"
    assert router.pick(message).agent == "wild"
    message["parts"][0]["mediaType"] = "video/mp4"
    decision = router.pick(message)
    assert (decision.agent, decision.reason) == ("loose", "mode")


def test_a_more_specific_mode_wins_a_text_tie() -> None:
    same = [skill("see", "See", "Describes pictures.", [])]
    alpha = agent("alpha", "Pictures.", same, inputs=["text/plain", "image/*"])
    bravo = agent("bravo", "Pictures.", same, inputs=["text/plain", "image/png"])
    decision = CapabilityRouter([alpha, bravo]).pick(image_message("describe the pictures"))
    assert (decision.agent, decision.reason) == ("bravo", "match")


def test_config_order_breaks_a_full_tie() -> None:
    one = agent("one", "Echo.", [skill("a", "A", "Echo.", [])])
    two = agent("two", "Echo.", [skill("b", "B", "Echo.", [])])
    assert CapabilityRouter([one, two]).pick(text_message("zzz")).agent == "one"
    assert CapabilityRouter([two, one]).pick(text_message("zzz")).agent == "two"
    assert CapabilityRouter([one, two]).pick(text_message("zzz")).reason == "default"


# -- pick: who may be picked -----------------------------------------------------------------


def test_candidates_are_respected(router: CapabilityRouter) -> None:
    decision = router.pick(text_message("translate this into French"), ["summarizer", "vision"])
    assert decision.agent != "translator"
    only = router.pick(text_message("translate this into French"), candidates=["summarizer"])
    assert (only.agent, only.reason) == ("summarizer", "default")
    with pytest.raises(A2aError) as caught:
        router.pick(text_message("translate"), candidates=[])
    assert caught.value.status == 503


def test_the_error_lists_only_agents_the_caller_may_call(router: CapabilityRouter) -> None:
    with pytest.raises(A2aError) as caught:
        router.pick(image_message("x", media="audio/ogg"), candidates={"summarizer"})
    assert "translator" not in caught.value.message
    assert [a["name"] for a in caught.value.data["agents"]] == ["summarizer"]


def test_down_agents_are_skipped() -> None:
    agents = fleet()
    router = CapabilityRouter(agents)
    assert router.pick(text_message("translate this into French")).agent == "translator"
    agents[1].up = False  # read at each pick
    assert router.pick(text_message("translate this into French")).agent != "translator"
    agents[2].up = False
    with pytest.raises(A2aError) as caught:
        router.pick(image_message("describe"))
    assert caught.value.code == CONTENT_TYPE_NOT_SUPPORTED
    for a in agents:
        a.up = False
    with pytest.raises(A2aError) as down:
        router.pick(text_message("translate"))
    assert down.value.status == 503


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        ("nope", "object"),
        ({"parts": "x"}, "parts"),
        ({"parts": [1]}, "parts[0]"),
        ({"parts": [{"metadata": {}}]}, "none of text"),
        ({"parts": [], "metadata": []}, "metadata"),
        ({"parts": [], "metadata": {"skillId": 3}}, "skillId"),
        ({"parts": [], "metadata": {"tags": [1]}}, "tags"),
    ],
)
def test_bad_messages_are_invalid_params(
    router: CapabilityRouter, message: Any, needle: str
) -> None:
    with pytest.raises(A2aError) as caught:
        router.pick(message)
    assert caught.value.code == INVALID_PARAMS
    assert needle in caught.value.message


def test_junk_in_a_card_does_not_break_the_router() -> None:
    odd = agent("odd", "Odd.", [])
    odd.skills = [{"id": 5, "tags": "x", "inputModes": None}, "junk"]  # type: ignore[list-item]
    odd.card = {"description": None}
    router = CapabilityRouter([odd, *fleet()])
    assert router.pick(text_message("translate into French")).agent == "translator"
    assert router_card([odd], "http://gw/a2a/")["skills"] == []


def test_tokenize_stems_and_drops_stop_words() -> None:
    assert tokenize("Translate this into French") == ["translat", "french"]
    assert {tokenize(w)[0] for w in ["translates", "translation", "translator"]} == {"translat"}


# -- catalog ---------------------------------------------------------------------------------


def names(entries: list[dict[str, Any]]) -> list[str]:
    return [e["name"] for e in entries]


def test_catalog_lists_everything_with_the_fields() -> None:
    entries = search_catalog(fleet())
    assert names(entries) == ["summarizer", "translator", "vision"]
    vision = entries[2]
    assert vision["up"] is True and vision["cardUrl"] is None
    assert vision["inputModes"] == ["text/plain", "image/png", "image/jpeg"]
    chart = vision["skills"][1]
    assert chart == {
        "id": "render-chart",
        "name": "Render chart",
        "description": "Draws a chart from a table of numbers.",
        "tags": ["chart"],
        "inputModes": ["application/json", "text/plain"],
        "outputModes": ["image/png"],
    }
    assert entries[1]["tags"] == ["nlp", "translation", "languages"]


def test_catalog_by_skill_tag_mode_and_text() -> None:
    agents = fleet()
    assert names(search_catalog(agents, skill="TRANSLATE")) == ["translator"]
    assert names(search_catalog(agents, skill="Describe image")) == ["vision"]
    assert names(search_catalog(agents, skill="vision/render-chart")) == ["vision"]
    assert names(search_catalog(agents, skill="nope")) == []
    assert names(search_catalog(agents, tag="Summary")) == ["summarizer"]
    assert names(search_catalog(agents, tag="nlp")) == ["translator"]
    assert names(search_catalog(agents, mode="image/*")) == ["vision"]
    assert names(search_catalog(agents, mode="image/gif")) == ["vision"]
    assert names(search_catalog(agents, mode="text/plain")) == [a.name for a in agents]
    assert names(search_catalog(agents, mode="audio/*")) == []
    ranked = search_catalog(agents, q="French translation")
    assert names(ranked)[0] == "translator" and ranked[0]["score"] > 0
    assert "summarizer" not in names(ranked)
    assert names(search_catalog(agents, q="chart numbers", mode="image/png")) == ["vision"]
    assert names(search_catalog(agents, q="chart", tag="summary")) == []


def test_catalog_shows_down_agents_as_down() -> None:
    agents = fleet()
    agents[0].up = False
    assert search_catalog(agents, tag="summary")[0]["up"] is False


# -- router card -----------------------------------------------------------------------------


def test_router_card_is_the_union_of_skills() -> None:
    card = router_card(fleet(), "https://gw.example/a2a/", "Router", "Routes.")
    assert card["name"] == "Router" and card["description"] == "Routes."
    ids = [s["id"] for s in card["skills"]]
    assert ids == [
        "summarizer/summarize",
        "translator/translate",
        "vision/describe-image",
        "vision/render-chart",
    ]
    assert card["capabilities"]["streaming"] is True
    assert {(i["protocolBinding"], i["url"]) for i in card["supportedInterfaces"]} == {
        ("JSONRPC", "https://gw.example/a2a/"),
        ("HTTP+JSON", "https://gw.example/a2a/"),
    }
    assert card["defaultInputModes"] == [
        "text/plain",
        "image/png",
        "image/jpeg",
        "image/*",
        "application/json",
    ]
    assert "image/png" in card["defaultOutputModes"]
    translate = card["skills"][1]
    assert translate["inputModes"] == ["text/plain"]  # explicit, not the router's union
    assert translate["examples"][0] == "Translate this into French"
    # every id on the card maps back through the router
    router = CapabilityRouter(fleet())
    for sid in ids:
        decision = router.pick(text_message("hi", skillId=sid))
        assert f"{decision.agent}/{decision.skill}" == sid


def test_router_card_is_a_valid_v1_card() -> None:
    from a2a.types import a2a_pb2
    from google.protobuf import json_format

    card = router_card(fleet(), "http://127.0.0.1:1/a2a/", "Router", "Routes.")
    parsed = json_format.ParseDict(card, a2a_pb2.AgentCard())
    assert len(parsed.skills) == 4 and parsed.capabilities.streaming


def test_the_bench_runs_small() -> None:
    from bench.a2a_router import measure

    figures = measure(10, 200, 1)
    assert figures["skills"] >= 30 and figures["p50_ms"] > 0


def _sample_agents() -> list[Agent]:
    from crossway.samples.a2a_agents import AGENTS, agent_card, card_json

    agents = []
    for name in AGENTS:
        card = card_json(agent_card(name, f"http://127.0.0.1:1/{name}"), "1.0")
        skills = card["skills"]
        agents.append(
            Agent(
                name=name,
                base_url=f"http://127.0.0.1:1/{name}",
                version="1.0",
                card=card,
                skills=skills,
                input_modes=card["defaultInputModes"],
                output_modes=card["defaultOutputModes"],
                tags=[t for s in skills for t in s.get("tags", [])],
            )
        )
    return agents


@pytest.mark.parametrize(
    ("text", "media", "expected"),
    [
        ("Translate this paragraph into French", None, ("writer", "translate")),
        ("Give me the gist of this article", None, ("writer", "summarize")),
        ("What is in this picture?", None, ("vision", "describe-image")),
        ("translate the text on this sign", "image/jpeg", ("vision", "describe-image")),
        ("Write a long report and stream it", None, ("streamer", "stream-report")),
        ("Ask me first, then answer my question", None, ("asker", "clarify")),
    ],
)
def test_the_sample_agents_cards_route(
    text: str, media: str | None, expected: tuple[str, str]
) -> None:
    router = CapabilityRouter(_sample_agents())
    message = image_message(text, media) if media else text_message(text)
    decision = router.pick(message)
    assert (decision.agent, decision.skill) == expected
