"""A simulated self-hosted model server (like llm-d's inference simulator):
`python -m crossway.samples.model_server --port 0 [--model sim-model] [--lora a,b] ...`.

OpenAI-compatible chat and completions (streamed or not, with usage and cached tokens),
vLLM-named Prometheus metrics, continuous batching, a paged KV cache with prefix caching and
LRU eviction, LoRA adapter slots with a load cost, and a time factor so several run in real
time on a small machine. `--help` lists the flags; docs/inference-routing.md describes it.
"""

from crossway.samples.model_server.config import SimConfig
from crossway.samples.model_server.engine import CHARS_PER_TOKEN, Engine, count_tokens
from crossway.samples.model_server.server import SimServer

__all__ = ["CHARS_PER_TOKEN", "Engine", "SimConfig", "SimServer", "count_tokens"]
