"""The simulator's settings (one `SimConfig` per server, filled from the command line)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

DEFAULT_MODEL: Final = "sim-model"
DEFAULT_MAX_NUM_SEQS: Final = 8
DEFAULT_KV_BLOCKS: Final = 8192
DEFAULT_BLOCK_SIZE: Final = 16
DEFAULT_PREFILL_MS_PER_TOKEN: Final = 0.3
DEFAULT_BASE_ITL_MS: Final = 10.0
DEFAULT_ITL_ALPHA: Final = 0.1
DEFAULT_OUTPUT_TOKENS: Final = 64
DEFAULT_MAX_OUTPUT_TOKENS: Final = 4096
DEFAULT_MAX_MODEL_LEN: Final = 32768
DEFAULT_MAX_LORAS: Final = 2
DEFAULT_LORA_LOAD_MS: Final = 200.0
DEFAULT_TIME_FACTOR: Final = 1.0
DEFAULT_STREAM_INTERVAL: Final = 1
DEFAULT_GPU_MEMORY_MIB: Final = 81559  # an H100 80GB, as DCGM reports it


@dataclass(frozen=True, kw_only=True, slots=True)
class SimConfig:
    """How one simulated model server behaves. Durations are simulated milliseconds; the
    server waits `duration * time_factor` of real time."""

    model: str = DEFAULT_MODEL
    """The base model's name (`model` in requests, `model_name` in metrics)."""
    loras: tuple[str, ...] = ()
    """Known LoRA adapters (requests name them as `model`)."""
    lora_any: bool = False
    """Any other model name is an adapter (like vLLM with runtime-loaded adapters)."""
    max_loras: int = DEFAULT_MAX_LORAS
    """Adapter slots: adapters loaded at once."""
    lora_load_ms: float = DEFAULT_LORA_LOAD_MS
    """Time to load an adapter into a slot; the sequence that needs it waits that long."""
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    """Sequences decoded at once (continuous batching); the rest wait in a FIFO queue."""
    kv_blocks: int = DEFAULT_KV_BLOCKS
    """KV-cache blocks in total."""
    block_size: int = DEFAULT_BLOCK_SIZE
    """Tokens per KV block (also the prefix cache's unit)."""
    prefill_ms_per_token: float = DEFAULT_PREFILL_MS_PER_TOKEN
    """Prefill time per prompt token not found in the prefix cache."""
    base_itl_ms: float = DEFAULT_BASE_ITL_MS
    """Time of one decode step with an empty batch."""
    itl_alpha: float = DEFAULT_ITL_ALPHA
    """Step time grows with the batch: `base_itl_ms * (1 + itl_alpha * running)`."""
    output_tokens: int = DEFAULT_OUTPUT_TOKENS
    """Tokens generated when the request sets no `max_tokens` / `max_completion_tokens`."""
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    """Cap on a request's `max_tokens`."""
    max_model_len: int = DEFAULT_MAX_MODEL_LEN
    """Longest prompt + output accepted (longer: 400, as vLLM answers)."""
    time_factor: float = DEFAULT_TIME_FACTOR
    """Every simulated duration is multiplied by this (0.1: ten times faster than simulated)."""
    stream_interval: int = DEFAULT_STREAM_INTERVAL
    """Tokens per streamed write (vLLM's `--stream-interval`); the first token goes at once."""
    legacy_metrics: bool = False
    """Emit the older `vllm:gpu_cache_usage_perc` instead of `vllm:kv_cache_usage_perc`."""
    gpu_memory_mib: int = DEFAULT_GPU_MEMORY_MIB
    """Framebuffer size the DCGM page reports."""

    def __post_init__(self) -> None:
        positive = {
            "max_loras": self.max_loras,
            "max_num_seqs": self.max_num_seqs,
            "kv_blocks": self.kv_blocks,
            "block_size": self.block_size,
            "base_itl_ms": self.base_itl_ms,
            "output_tokens": self.output_tokens,
            "max_output_tokens": self.max_output_tokens,
            "max_model_len": self.max_model_len,
            "time_factor": self.time_factor,
            "stream_interval": self.stream_interval,
            "gpu_memory_mib": self.gpu_memory_mib,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, not {value}")
        for name, value in {
            "lora_load_ms": self.lora_load_ms,
            "prefill_ms_per_token": self.prefill_ms_per_token,
            "itl_alpha": self.itl_alpha,
        }.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, not {value}")
        if not self.model:
            raise ValueError("model must not be empty")

    @property
    def lora_enabled(self) -> bool:
        """Whether requests may name adapters."""
        return self.lora_any or bool(self.loras)
