"""Router decision time with 100 registered agents (goal: <= 0.5 ms p50): `CapabilityRouter.pick`
over synthetic agents of 3-5 skills each and a mix of messages (text only, text + image, data,
with tags, with an explicit skill id, with accepted output modes, restricted candidates). In
process, no network; each call timed alone.

    .venv/bin/python -m bench.a2a_router [--agents 100] [--messages 10000] [--seed 8]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from crossway.a2a.errors import A2aError
from crossway.a2a.model import Agent
from crossway.a2a.routing import CapabilityRouter

GOAL_P50_MS = 0.5

WORDS = (
    "translate summarize classify extract describe image chart table invoice receipt contract "
    "legal medical code review search answer question french german spanish japanese report "
    "email draft schedule meeting calendar weather travel booking flight hotel recipe cooking "
    "math equation solve plot graph audio transcript speech music lyrics poem story sentiment "
    "entity keyword sql database query spreadsheet finance stock price forecast weather map "
    "route address geocode translate document pdf scan ocr photo face object detect label"
).split()
INPUT_PROFILES = (
    ["text/plain"],
    ["text/plain", "application/json"],
    ["text/plain", "image/*"],
    ["text/plain", "image/png", "image/jpeg"],
    ["audio/*", "text/plain"],
    ["*/*"],
)
OUTPUT_PROFILES = (["text/plain"], ["text/plain", "application/json"], ["image/png"])


def _phrase(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_agents(count: int, rng: random.Random) -> list[Agent]:
    agents = []
    for a in range(count):
        skills: list[dict[str, Any]] = []
        for s in range(rng.randint(3, 5)):
            skill: dict[str, Any] = {
                "id": f"skill-{s}",
                "name": _phrase(rng, 2),
                "description": _phrase(rng, 12),
                "tags": rng.sample(WORDS, 3),
                "examples": [_phrase(rng, 6), _phrase(rng, 6)],
            }
            if rng.random() < 0.3:
                skill["inputModes"] = rng.choice(INPUT_PROFILES)
            if rng.random() < 0.2:
                skill["outputModes"] = rng.choice(OUTPUT_PROFILES)
            skills.append(skill)
        inputs = list(rng.choice(INPUT_PROFILES))
        outputs = list(rng.choice(OUTPUT_PROFILES[:2]))
        name = f"agent-{a:03d}"
        card = {"name": name, "description": _phrase(rng, 10), "skills": skills}
        agents.append(
            Agent(
                name=name,
                base_url=f"http://127.0.0.1:9/{name}",
                version="1.0",
                card=card,
                skills=skills,
                input_modes=inputs,
                output_modes=outputs,
                tags=[t for sk in skills for t in sk["tags"]],
                up=rng.random() > 0.05,
            )
        )
    return agents


def make_messages(
    count: int, agents: list[Agent], rng: random.Random
) -> list[tuple[dict[str, Any], set[str] | None, list[str] | None]]:
    names = [a.name for a in agents]
    messages = []
    for i in range(count):
        parts: list[dict[str, Any]] = [{"text": _phrase(rng, rng.randint(4, 40))}]
        kind = rng.random()
        if kind < 0.2:
            parts.append({"raw": "AAAA", "mediaType": rng.choice(["image/png", "image/jpeg"])})
        elif kind < 0.25:
            parts.append({"data": {"rows": [1, 2, 3]}})
        elif kind < 0.28:
            parts.append({"url": "https://example.com/a.wav", "mediaType": "audio/wav"})
        metadata: dict[str, Any] = {}
        if rng.random() < 0.1:
            agent = rng.choice(agents)
            metadata["skillId"] = f"{agent.name}/skill-{rng.randint(0, 2)}"
        if rng.random() < 0.2:
            metadata["tags"] = rng.sample(WORDS, 2)
        message: dict[str, Any] = {"messageId": f"m{i}", "role": "ROLE_USER", "parts": parts}
        if metadata:
            message["metadata"] = metadata
        candidates = set(rng.sample(names, len(names) // 2)) if rng.random() < 0.3 else None
        outputs = ["application/json"] if rng.random() < 0.1 else None
        messages.append((message, candidates, outputs))
    return messages


def measure(agents_count: int, messages_count: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    agents = make_agents(agents_count, rng)
    start = time.perf_counter()
    router = CapabilityRouter(agents)
    build_ms = (time.perf_counter() - start) * 1e3
    messages = make_messages(messages_count, agents, rng)
    for message, candidates, outputs in messages[:500]:  # warm the mode cache and the CPU
        try:
            router.pick(message, candidates, accepted_output_modes=outputs)
        except A2aError:
            pass
    timings: list[float] = []
    errors = 0
    clock = time.perf_counter_ns
    for message, candidates, outputs in messages:
        t0 = clock()
        try:
            router.pick(message, candidates, accepted_output_modes=outputs)
        except A2aError:
            errors += 1
        timings.append((clock() - t0) / 1e6)
    timings.sort()
    return {
        "agents": agents_count,
        "skills": sum(len(a.skills) for a in agents),
        "messages": messages_count,
        "errors": errors,
        "build_ms": build_ms,
        "p50_ms": statistics.median(timings),
        "p99_ms": timings[int(len(timings) * 0.99) - 1],
        "mean_ms": statistics.fmean(timings),
        "max_ms": timings[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    f = measure(args.agents, args.messages, args.seed)
    met = "met" if f["p50_ms"] <= GOAL_P50_MS else "NOT met"
    print(
        f"Router decision time: {f['agents']} agents, {f['skills']} skills, "
        f"{f['messages']} messages ({f['errors']} refused with an A2A error)\n"
    )
    print("| what | ms |\n|---|---|")
    print(f"| build the router (index) | {f['build_ms']:.2f} |")
    print(f"| pick p50 (goal <= {GOAL_P50_MS}: {met}) | {f['p50_ms']:.4f} |")
    print(f"| pick p99 | {f['p99_ms']:.4f} |")
    print(f"| pick mean | {f['mean_ms']:.4f} |")
    print(f"| pick max | {f['max_ms']:.4f} |")


if __name__ == "__main__":
    main()
