"""Prompt embeddings for the semantic cache: wordllama (bundled in its wheel: no download), or
an embeddings model of the same backend called through its own routing.

Vectors are float32 and of unit length, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import orjson

from crossway.llm.cache.index import Vector

WORDLLAMA_DIM: Final = 256
"""The dimension of the weights the wordllama wheel ships (`l2_supercat_256`)."""
MAX_PROMPT_CHARS: Final = 16_384
"""Characters of a prompt that are embedded (its start: a longer one is rarely a paraphrase)."""
INLINE_CHARS: Final = 1024
"""Prompts up to this long are embedded on the event loop (at most ~0.35 ms); longer ones in a
thread, so a long prompt never holds up other requests."""


class Embedder(Protocol):
    """Turns one prompt into a unit vector."""

    dim: int

    async def load(self) -> None: ...

    async def embed(self, text: str) -> Vector: ...


_IS: Final = re.compile(r"\b(what|that|it|who|where|how|there|here|when|why|which)'s\b")
_CONTRACTIONS: Final = (
    ("n't", " not"),
    ("'re", " are"),
    ("'m", " am"),
    ("'ll", " will"),
    ("'ve", " have"),
    ("'d", " would"),
)
_POSSESSIVE: Final = re.compile(r"'s\b")
_PUNCTUATION: Final = re.compile(r"[?!.,;:\"'`()\[\]{}]+")
"""Sentence punctuation only: symbols that change a question's meaning (`+ - * / = %`) stay."""


def normalize_prompt(text: str) -> str:
    """The prompt as a static embedding model should see it: lower case, contractions spelled
    out, possessives and sentence punctuation dropped, whitespace collapsed. wordllama's token
    vectors are case-sensitive and it averages them, so without this "France" and "france"
    (0.78) or "What's" and "What is" differ more than "HTTP" and "HTTPS" do (bench/cache)."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    text = _IS.sub(r"\1 is", text)
    for short, long in _CONTRACTIONS:
        text = text.replace(short, long)
    text = _PUNCTUATION.sub(" ", _POSSESSIVE.sub("", text))
    return " ".join(text.split())


def _unit(vector: Any) -> Vector:
    out = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(out))
    if not norm or not np.isfinite(norm):
        raise ValueError("the embedding is zero or not finite")
    return out / norm


class WordLlamaEmbedder:
    """wordllama's static token embeddings, average-pooled, of the normalized prompt
    (`normalize_prompt`; bench/cache: ~40 µs for a short prompt, ~0.33 ms per KB)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.dim = WORDLLAMA_DIM
        self._model: Any = None

    async def load(self) -> None:
        self._model = await asyncio.to_thread(self._load)

    def _load(self) -> Any:
        import wordllama  # only when the semantic cache is on: it pulls in safetensors, tokenizers

        directory = self.directory or Path(wordllama.__file__).parent
        return wordllama.WordLlama.load(cache_dir=directory, disable_download=True)

    async def embed(self, text: str) -> Vector:
        if len(text) > INLINE_CHARS:
            return await asyncio.to_thread(self.embed_now, text)
        return self.embed_now(text)

    def embed_now(self, text: str) -> Vector:
        """The embedding, computed in the caller's thread."""
        prompt = normalize_prompt(text[:MAX_PROMPT_CHARS]) or text[:MAX_PROMPT_CHARS]
        return _unit(self._model.embed([prompt], norm=True)[0])


EmbeddingsCall = Callable[[bytes], Awaitable[bytes]]
"""Sends an OpenAI Embeddings request body through the backend and returns the answer body."""


class BackendEmbedder:
    """An embeddings model served by this backend (`semantic.embedding.model`)."""

    def __init__(self, model: str, call: EmbeddingsCall) -> None:
        self.model = model
        self.dim = 0  # known after the first embedding (`load`)
        self._call = call

    async def load(self) -> None:
        self.dim = len(await self.embed("dimension probe"))

    async def embed(self, text: str) -> Vector:
        body = orjson.dumps({"model": self.model, "input": [text[:MAX_PROMPT_CHARS]]})
        answer = orjson.loads(await self._call(body))
        vector = _unit(answer["data"][0]["embedding"])
        if self.dim and len(vector) != self.dim:
            raise ValueError(f"the embedding has {len(vector)} dimensions, not {self.dim}")
        return vector
