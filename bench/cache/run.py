"""The LLM cache benchmark: `python -m bench.cache.run [--entries N] [--requests N] [--out FILE]`.

Four measurements, printed as markdown tables (and written to `--out` when given):

1. Threshold: wordllama similarities of labelled paraphrase pairs and of pairs asking different
   things, with precision and recall of a semantic hit at several thresholds (the default,
   `DEFAULT_SEMANTIC_THRESHOLD`, is picked from this table).
2. Embedding cost per prompt (wall and CPU µs) for short and ~1 KB prompts.
3. In-process semantic lookup alone (`LlmCache` index, one partition of N entries): embedding
   plus nearest-vector search, p50/p99.
4. Through the gateway (`crossway serve` in front of `crossway.samples.openai_server`, with N
   entries stored through it first): a miss, an exact hit and a semantic hit, p50/p99, one
   keep-alive connection, requests one after another.

Goal (issue 13): semantic hit p50 <= 2 ms with 10,000 entries. Takes bench/.work/bench.lock.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import orjson

from bench import procs
from crossway.config.llm_cache import DEFAULT_SEMANTIC_THRESHOLD
from crossway.llm.cache.answer import CachedAnswer
from crossway.llm.cache.embedder import WordLlamaEmbedder
from crossway.llm.cache.index import CacheIndex

REPO: Final = Path(__file__).resolve().parents[2]
MODEL: Final = "sample-model"
THRESHOLDS: Final = (0.82, 0.84, 0.86, 0.88, 0.90, 0.92, 0.94)

PARAPHRASES: Final = [
    ("What is the capital of France?", "What's France's capital?"),
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("How do I reverse a list in Python?", "How can I reverse a Python list?"),
    ("How do I reverse a list in Python?", "How to reverse a list in Python?"),
    ("Explain quantum computing in simple terms", "Explain quantum computing simply"),
    ("What is the boiling point of water?", "At what temperature does water boil?"),
    ("Translate 'good morning' into Spanish", "How do you say 'good morning' in Spanish?"),
    ("Give me a recipe for pancakes", "Give me a pancake recipe"),
    ("What time zone is Tokyo in?", "Which time zone is Tokyo in?"),
    ("How many legs does a spider have?", "How many legs do spiders have?"),
    ("Summarize the plot of Hamlet", "Summarise the plot of Hamlet"),
    ("What is the square root of 144?", "What's the square root of 144?"),
    ("Who wrote Pride and Prejudice?", "Who is the author of Pride and Prejudice?"),
    ("How do I center a div in CSS?", "How can I center a div with CSS?"),
    ("What does HTTP stand for?", "What does the acronym HTTP stand for?"),
    ("List the planets of the solar system", "List the planets in the solar system"),
]
DIFFERENT: Final = [
    ("What is the capital of France?", "What is the capital of Germany?"),
    ("How do I reverse a list in Python?", "How do I sort a list in Python?"),
    ("Write a haiku about autumn", "Write a haiku about spring"),
    ("What is the boiling point of water?", "What is the freezing point of water?"),
    ("Translate 'good morning' into Spanish", "Translate 'good morning' into French"),
    ("Give me a recipe for pancakes", "Give me a recipe for waffles"),
    ("What time zone is Tokyo in?", "What time zone is London in?"),
    ("How many legs does a spider have?", "How many legs does an ant have?"),
    ("Summarize the plot of Hamlet", "Summarize the plot of Macbeth"),
    ("What is the square root of 144?", "What is the square root of 169?"),
    ("Who wrote Pride and Prejudice?", "Who wrote Jane Eyre?"),
    ("How do I center a div in CSS?", "How do I hide a div in CSS?"),
    ("What does HTTP stand for?", "What does HTTPS stand for?"),
    ("What is the capital of France?", "How do I bake bread?"),
    ("Explain quantum computing in simple terms", "Explain classical computing in simple terms"),
    ("List the planets of the solar system", "List the moons of Jupiter"),
]
WORDS: Final = (
    "river mountain engine garden violin planet harbor lantern desert forest copper "
    "glacier meadow compiler kernel database network tensor protocol bridge castle "
    "orchard thunder canyon island market library museum rocket satellite volcano "
    "pepper saffron ginger walnut falcon otter badger heron lizard beetle"
).split()
VERBS: Final = ("explain", "describe", "compare", "summarize", "list facts about", "define")


def prompts(n: int, seed: int = 7) -> list[str]:
    """`n` distinct prompts (random topic words in a question template)."""
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        a, b, c = rng.sample(WORDS, 3)
        out.add(f"Please {rng.choice(VERBS)} the {a} of the {b} near the {c} #{len(out)}")
    return sorted(out)


def paraphrase(prompt: str) -> str:
    """A near-paraphrase: another exact key, the same meaning."""
    return prompt.replace("Please ", "Could you ") + "?"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --- 1-3: in process -------------------------------------------------------------------------


def load_embedder() -> WordLlamaEmbedder:
    embedder = WordLlamaEmbedder(None)
    asyncio.run(embedder.load())
    return embedder


def threshold_table(embedder: WordLlamaEmbedder) -> str:
    def sim(pair: tuple[str, str]) -> float:
        return float(embedder.embed_now(pair[0]) @ embedder.embed_now(pair[1]))

    same = [sim(p) for p in PARAPHRASES]
    other = [sim(p) for p in DIFFERENT]
    rows = []
    for t in THRESHOLDS:
        hits = sum(s >= t for s in same)
        wrong = sum(s >= t for s in other)
        precision = hits / (hits + wrong) if hits + wrong else 1.0
        mark = " (default)" if abs(t - DEFAULT_SEMANTIC_THRESHOLD) < 1e-9 else ""
        rows.append(
            [
                f"{t:.2f}{mark}",
                f"{hits}/{len(same)} ({hits / len(same):.0%})",
                f"{wrong}/{len(other)}",
                f"{precision:.0%}",
            ]
        )
    head = (
        f"Paraphrases: similarity {min(same):.3f}-{max(same):.3f} (median "
        f"{statistics.median(same):.3f}); different questions: {min(other):.3f}-"
        f"{max(other):.3f} (median {statistics.median(other):.3f}).\n\n"
    )
    return head + table(
        ["threshold", "paraphrases served (recall)", "wrong answers served", "precision"], rows
    )


def embedding_table(embedder: WordLlamaEmbedder, repeat: int) -> str:
    rows = []
    for label, text in (
        ("short (45 chars)", "What is the capital of France? Answer briefly"),
        ("1 KB", ("The quick brown fox jumps over the lazy dog. " * 23)[:1024]),
    ):
        embedder.embed_now(text)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(repeat):
            embedder.embed_now(text)
        wall_us = (time.perf_counter() - wall) / repeat * 1e6
        cpu_us = (time.process_time() - cpu) / repeat * 1e6
        rows.append([label, f"{wall_us:.1f}", f"{cpu_us:.1f}"])
    return table(["prompt", "wall µs / prompt", "CPU µs / prompt"], rows)


def lookup_table(embedder: WordLlamaEmbedder, entries: int, requests: int) -> str:
    index = CacheIndex(entries, embedder.dim)
    answer = CachedAnswer({"content": "x"}, "stop", None, None)
    stored = prompts(entries)
    expires = time.time() + 3600
    for i, prompt in enumerate(stored):
        index.put(f"k{i}", expires, answer, "p", embedder.embed_now(prompt))
    rng = random.Random(3)
    queries = [paraphrase(rng.choice(stored)) for _ in range(requests)]
    search: list[float] = []
    total: list[float] = []
    hits = 0
    for query in queries:
        started = time.perf_counter()
        vector = embedder.embed_now(query)
        embedded = time.perf_counter()
        key, similarity = index.nearest("p", vector)
        done = time.perf_counter()
        index.get(key or "")
        hits += similarity >= DEFAULT_SEMANTIC_THRESHOLD
        search.append((done - embedded) * 1e3)
        total.append((done - started) * 1e3)
    rows = [
        ["nearest-vector search", f"{percentile(search, 0.5):.3f}", f"{percentile(search, 0.99):.3f}"],
        ["embed + search", f"{percentile(total, 0.5):.3f}", f"{percentile(total, 0.99):.3f}"],
    ]  # fmt: skip
    return (
        f"{entries} entries in one partition, {requests} paraphrased queries "
        f"({hits / requests:.0%} above the default threshold).\n\n"
        + table(["in-process lookup", "p50 ms", "p99 ms"], rows)
    )


# --- 4: through the gateway ------------------------------------------------------------------

GATEWAY_CONFIG: Final = """
listen: {{port: {port}}}
admin: {{port: {admin}}}
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
backends:
  llm:
    type: llm
    cache: {{max_entries: {max_entries}, semantic: {{}}}}
    providers:
      sample: {{type: openai_compatible, base_url: "http://127.0.0.1:{upstream}/v1", api_key: x}}
"""


@contextmanager
def stack(entries: int) -> Iterator[int]:
    """The sample upstream and a gateway with the cache in front of it; yields the port."""
    work = Path(tempfile.mkdtemp(prefix="crossway-cache-bench-"))
    upstream, port, admin = procs.free_port(), procs.free_port(), procs.free_port()
    config = work / "config.yaml"
    config.write_text(
        GATEWAY_CONFIG.format(
            port=port, admin=admin, upstream=upstream, max_entries=max(entries * 2, 16)
        )
    )
    env = {"CROSSWAY_DATA_DIR": str(work / "data")}
    sample = procs.start_pinned(
        "upstream",
        [sys.executable, "-m", "crossway.samples.openai_server", "--port", str(upstream)],
        cpu=1,
        env=env,
        cwd=REPO,
        log=work / "upstream.log",
    )
    gateway = None
    try:
        gateway = procs.start_pinned(
            "gateway",
            [sys.executable, "-m", "crossway", "serve", "--config", str(config), "--workers", "1"],
            cpu=0,
            env=env,
            cwd=REPO,
            log=work / "gateway.log",
        )
        probe = _body("readiness probe")
        procs.wait_ready(gateway, port, "/v1/chat/completions", probe, {}, timeout_s=60)
        yield port
    finally:
        if gateway is not None:
            gateway.stop()
        sample.stop()


def _body(prompt: str) -> bytes:
    return orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": prompt}]})


def timed(conn: http.client.HTTPConnection, prompt: str) -> tuple[float, str]:
    started = time.perf_counter()
    conn.request(
        "POST", "/v1/chat/completions", _body(prompt), {"content-type": "application/json"}
    )
    resp = conn.getresponse()
    resp.read()
    elapsed = (time.perf_counter() - started) * 1e3
    if resp.status != 200:
        raise RuntimeError(f"status {resp.status}")
    return elapsed, resp.getheader("x-crossway-cache") or ""


def gateway_table(entries: int, requests: int) -> str:
    stored = prompts(entries)
    rng = random.Random(5)
    with stack(entries) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for prompt in stored:  # the entries, stored through the gateway (these are misses)
            timed(conn, prompt)
        fresh = [f"{p} (new)" for p in prompts(requests, seed=11)]
        kinds: dict[str, tuple[Callable[[int], str], str]] = {
            "miss (sample upstream)": (lambda i: fresh[i], "miss"),
            "exact hit": (lambda i: rng.choice(stored), "hit"),
            "semantic hit": (lambda i: paraphrase(rng.choice(stored)), "hit"),
        }
        rows = []
        for label, (make, expected) in kinds.items():
            times: list[float] = []
            seen = 0
            for i in range(requests):
                ms, header = timed(conn, make(i))
                times.append(ms)
                seen += header == expected
            rows.append(
                [
                    label,
                    f"{percentile(times, 0.5):.2f}",
                    f"{percentile(times, 0.99):.2f}",
                    f"{seen}/{requests}",
                ]
            )
        conn.close()
    return f"{entries} entries stored through the gateway first.\n\n" + table(
        ["through the gateway", "p50 ms", "p99 ms", "answered as expected"], rows
    )


def run(entries: int, requests: int, repeat: int) -> str:
    embedder = load_embedder()
    parts = [
        "## Semantic threshold (wordllama, 256 dims)\n\n" + threshold_table(embedder),
        "## Embedding cost\n\n" + embedding_table(embedder, repeat),
        "## Semantic lookup in process\n\n" + lookup_table(embedder, entries, requests),
        "## Through the gateway\n\n" + gateway_table(entries, requests),
    ]
    return "# LLM cache bench\n\n" + "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5000, help="embeddings timed per size")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    with procs.bench_lock("cache"):
        report = run(args.entries, args.requests, args.repeat)
    print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
