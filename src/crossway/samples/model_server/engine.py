"""The simulated inference engine: a continuous-batching scheduler over a paged KV cache with
prefix caching and LoRA adapter slots, in the shape of vLLM's.

Tokens are characters: every `CHARS_PER_TOKEN` characters of the prompt text are one token (a
prompt given as token ids counts one token per id). One scheduler task per engine runs steps;
each step decodes one token for every running sequence and lasts
`base_itl * (1 + alpha * running)` plus the prefill of the uncached prompt tokens of the
sequences admitted for it. Nothing busy-waits: an idle engine sleeps on an event.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from crossway.samples.model_server.config import SimConfig
from crossway.samples.model_server.stats import EngineStats

CHARS_PER_TOKEN: Final = 4
HASH_SEED: Final = "crossway-sim"

Prompt = str | tuple[int, ...]
FinishReason = Literal["stop", "length", "abort"]


def count_tokens(prompt: Prompt) -> int:
    """Tokens of a prompt: a quarter of its characters (rounded up), or its token ids."""
    if isinstance(prompt, str):
        return (len(prompt) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN
    return len(prompt)


def block_hashes(prompt: Prompt, block_size: int, salt: str) -> list[int]:
    """Chained hashes of the prompt's full token blocks, salted by model (or adapter) name:
    block i's hash covers blocks 0..i, so equal hashes mean equal prefixes."""
    h = hash((HASH_SEED, salt))
    out: list[int] = []
    if isinstance(prompt, str):
        step = block_size * CHARS_PER_TOKEN
        for i in range(0, len(prompt) - step + 1, step):
            h = hash((h, prompt[i : i + step]))
            out.append(h)
    else:
        for i in range(0, len(prompt) - block_size + 1, block_size):
            h = hash((h, prompt[i : i + block_size]))
            out.append(h)
    return out


@dataclass(slots=True, eq=False)
class Sequence:
    """One request inside the engine."""

    id: int
    adapter: str | None
    prompt_tokens: int
    hashes: list[int]
    max_new: int
    length_limited: bool  # the request set max_tokens: finish_reason "length"
    arrival: float  # loop.time()
    state: Literal["waiting", "running", "done"] = "waiting"
    generated: int = 0
    want: int = 0  # wake the handler once this many tokens exist (0: nobody waits)
    cached_tokens: int | None = None  # prefix-cache hit tokens at the first admission
    held: list[int] = field(default_factory=list)  # prompt block hashes referenced
    anon: int = 0  # other blocks held (the partial prompt block, generated tokens)
    prefill_tokens: int = 0  # of the latest admission
    admitted_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    finish_reason: FinishReason | None = None
    waiter: asyncio.Future[None] | None = None

    def blocks_for(self, tokens: int, block_size: int) -> int:
        return -(-tokens // block_size)


class KVCache:
    """Paged KV blocks. Full prompt blocks are named by their chained hash and shared; when no
    sequence references one any more it stays cached (refcount 0) until evicted, least recently
    released first."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.refs: dict[int, int] = {}  # hash -> refcount > 0
        self.cached: OrderedDict[int, None] = OrderedDict()  # refcount 0, LRU first
        self.anon_used = 0
        self.evictions = 0

    @property
    def used(self) -> int:
        """Blocks referenced by sequences (cached-but-free blocks count as free, as in vLLM)."""
        return len(self.refs) + self.anon_used

    def usage(self) -> float:
        return self.used / self.total

    def hit_blocks(self, hashes: list[int], limit: int) -> int:
        """How many leading blocks of a prompt are in the cache (at most `limit`)."""
        n = 0
        for h in hashes[:limit]:
            if h not in self.refs and h not in self.cached:
                break
            n += 1
        return n

    def try_acquire(self, hashes: list[int], anon: int) -> bool:
        """Reference a sequence's prompt blocks and `anon` more blocks, evicting cached blocks
        as needed; False (and nothing changed) when they do not fit."""
        need = anon
        for h in hashes:
            if h not in self.refs:
                need += 1  # taken from the cache or allocated: one more block in use
        if self.used + need > self.total:
            return False
        for h in hashes:
            count = self.refs.get(h)
            if count is not None:
                self.refs[h] = count + 1
                continue
            if h in self.cached:
                del self.cached[h]
            else:
                self._make_room(1)
            self.refs[h] = 1
        self._make_room(anon)
        self.anon_used += anon
        return True

    def try_grow(self, blocks: int) -> bool:
        """`blocks` more anonymous blocks for a running sequence."""
        if self.used + blocks > self.total:
            return False
        self._make_room(blocks)
        self.anon_used += blocks
        return True

    def release(self, hashes: list[int], anon: int) -> None:
        """Drop a sequence's references; its prompt blocks stay cached. They are released tail
        first, so a prompt's last blocks are evicted before its first (as vLLM does)."""
        for h in reversed(hashes):
            count = self.refs[h] - 1
            if count:
                self.refs[h] = count
            else:
                del self.refs[h]
                self.cached[h] = None
        self.anon_used -= anon

    def _make_room(self, blocks: int) -> None:
        free = self.total - self.used - len(self.cached)
        while free < blocks:
            self.cached.popitem(last=False)
            self.evictions += 1
            free += 1


class LoraSlots:
    """`max_loras` adapter slots. Loading takes time; a loaded adapter no running sequence uses
    can be evicted (least recently used first) to make room."""

    def __init__(self, max_loras: int, load_seconds: float, on_loaded: Callable[[], None]) -> None:
        self.max_loras = max_loras
        self.load_seconds = load_seconds  # real seconds
        self.on_loaded = on_loaded
        self.loaded: OrderedDict[str, None] = OrderedDict()
        self.loading: set[str] = set()
        self.active: Counter[str] = Counter()  # running sequences per adapter
        self.loads = 0
        self.evictions = 0

    def ready(self, name: str) -> bool:
        """Whether `name` is loaded; if not, start loading it when a slot is free or idle."""
        if name in self.loaded:
            return True
        if name in self.loading:
            return False
        if len(self.loaded) + len(self.loading) >= self.max_loras:
            victim = next((a for a in self.loaded if not self.active[a]), None)
            if victim is None:
                return False
            del self.loaded[victim]
            self.evictions += 1
        self.loading.add(name)
        self.loads += 1
        asyncio.get_running_loop().call_later(self.load_seconds, self._finish_load, name)
        return False

    def acquire(self, name: str) -> None:
        self.active[name] += 1
        self.loaded.move_to_end(name)

    def release(self, name: str) -> None:
        self.active[name] -= 1
        if not self.active[name]:
            del self.active[name]

    def _finish_load(self, name: str) -> None:
        self.loading.discard(name)
        self.loaded[name] = None
        self.on_loaded()


class Engine:
    """One simulated model server's scheduler. Call `start()` on the running loop, `submit()`
    a request, then `wait()` for its tokens."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.kv = KVCache(config.kv_blocks)
        self.lora = LoraSlots(
            config.max_loras, config.lora_load_ms / 1000 * config.time_factor, self._wake_up
        )
        self.stats = EngineStats()
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.adapters_seen: dict[str, None] = dict.fromkeys(config.loras)
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.busy_seconds = 0.0  # simulated time spent in steps

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def fits(self, prompt_tokens: int, max_new: int) -> bool:
        """Whether a sequence of this size can ever run (alone, in the whole KV cache)."""
        return -(-(prompt_tokens + max_new) // self.config.block_size) <= self.kv.total

    def submit(
        self, prompt: Prompt, *, adapter: str | None, max_new: int, length_limited: bool
    ) -> Sequence:
        """Queue a request; it is admitted at the start of a coming step."""
        salt = adapter if adapter is not None else self.config.model
        seq = Sequence(
            id=next(self._ids),
            adapter=adapter,
            prompt_tokens=count_tokens(prompt),
            hashes=block_hashes(prompt, self.config.block_size, salt),
            max_new=max_new,
            length_limited=length_limited,
            arrival=asyncio.get_running_loop().time(),
        )
        if adapter is not None:
            self.adapters_seen[adapter] = None
        self.waiting.append(seq)
        self._wake.set()
        return seq

    async def wait(self, seq: Sequence, seen: int) -> None:
        """Return once `seq` has more than `seen` tokens to stream, or is done: the first
        token at once, then `stream_interval` tokens at a time."""
        step = 1 if seen == 0 else self.config.stream_interval
        await self._wait(seq, seen + step)

    async def wait_done(self, seq: Sequence) -> None:
        """Return once `seq` is done."""
        await self._wait(seq, seq.max_new + 1)

    async def _wait(self, seq: Sequence, want: int) -> None:
        seq.want = want
        while seq.generated < want and seq.state != "done":
            seq.waiter = asyncio.get_running_loop().create_future()
            await seq.waiter
        seq.want = 0

    def abort(self, seq: Sequence) -> None:
        """Drop a sequence whose client went away."""
        if seq.state == "waiting":
            self.waiting.remove(seq)
        elif seq.state == "running":
            self.running.remove(seq)
            self._release(seq)
        else:
            return
        self._done(seq, "abort", asyncio.get_running_loop().time())

    # -- the scheduler ------------------------------------------------------------------

    def _wake_up(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        factor = self.config.time_factor
        clock = loop.time()
        while True:
            self._grow_running()
            prefill = self._admit(loop.time())
            if not self.running:
                self._wake.clear()
                await self._wake.wait()
                continue
            duration = self._step_seconds(len(self.running), prefill)
            now = loop.time()
            # An absolute schedule: a late wake-up shortens the next sleep instead of drifting.
            clock = max(clock, now) + duration * factor
            await asyncio.sleep(clock - now)
            self.busy_seconds += duration
            self._end_step(loop.time(), duration, prefill)

    def _step_seconds(self, running: int, prefill_tokens: int) -> float:
        c = self.config
        itl_ms = c.base_itl_ms * (1 + c.itl_alpha * running)
        return (itl_ms + c.prefill_ms_per_token * prefill_tokens) / 1000

    def _grow_running(self) -> None:
        """Give every running sequence the blocks its next token needs; when the cache is full,
        preempt the youngest sequence (recomputed later, as vLLM does)."""
        bs = self.config.block_size
        for seq in list(self.running):
            if seq.state != "running":
                continue  # preempted in this loop
            need = seq.blocks_for(seq.prompt_tokens + seq.generated + 1, bs) - (
                len(seq.held) + seq.anon
            )
            if need <= 0:
                continue
            while not self.kv.try_grow(need):
                victim = self.running[-1]
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                seq.anon += need

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._release(seq)
        seq.state = "waiting"
        self.waiting.appendleft(seq)
        self.stats.preemptions += 1

    def _admit(self, now: float) -> int:
        """Move waiting sequences into the batch (FIFO; one whose adapter is not loaded is
        skipped, one whose blocks do not fit stops admission). The prefill tokens admitted."""
        c = self.config
        skipped: list[Sequence] = []
        prefill = 0
        while self.waiting and len(self.running) < c.max_num_seqs:
            seq = self.waiting[0]
            if seq.adapter is not None and not self.lora.ready(seq.adapter):
                skipped.append(self.waiting.popleft())
                continue
            tokens = seq.prompt_tokens + seq.generated
            max_hit = (seq.prompt_tokens - 1) // c.block_size
            hit = self.kv.hit_blocks(seq.hashes, max_hit)
            anon = seq.blocks_for(tokens + 1, c.block_size) - len(seq.hashes)
            if not self.kv.try_acquire(seq.hashes, anon):
                break
            self.waiting.popleft()
            seq.held = seq.hashes
            seq.anon = anon
            hit_tokens = hit * c.block_size
            seq.prefill_tokens = tokens - hit_tokens
            if seq.cached_tokens is None:
                seq.cached_tokens = hit_tokens
                seq.admitted_at = now
                self.stats.prompt_tokens += seq.prompt_tokens
                self.stats.queue_time.observe((now - seq.arrival) / c.time_factor)
            self.stats.prefix_queries += seq.prompt_tokens
            self.stats.prefix_hits += hit_tokens
            prefill += seq.prefill_tokens
            if seq.adapter is not None:
                self.lora.acquire(seq.adapter)
            seq.state = "running"
            self.running.append(seq)
        if skipped:
            self.waiting.extendleft(reversed(skipped))
        return prefill

    def _end_step(self, now: float, duration: float, prefill: int) -> None:
        still: list[Sequence] = []
        decoded = 0
        batch = len(self.running)
        for seq in self.running:
            seq.generated += 1
            if seq.first_token_at is None:
                seq.first_token_at = now
                self.stats.ttft.observe((now - seq.arrival) / self.config.time_factor)
                if seq.admitted_at is not None:
                    self.stats.prefill_time.observe(
                        (now - seq.admitted_at) / self.config.time_factor
                    )
            else:
                decoded += 1
            if seq.generated >= seq.max_new:
                self._release(seq)
                self._done(seq, "length" if seq.length_limited else "stop", now)
                continue
            still.append(seq)
            if seq.want and seq.generated >= seq.want:
                self._notify(seq)
        self.running = still
        self.stats.generation_tokens += batch
        if decoded:
            self.stats.itl.observe(duration, decoded)
        self.stats.iteration_tokens.observe(float(prefill + batch))

    def _release(self, seq: Sequence) -> None:
        self.kv.release(seq.held, seq.anon)
        seq.held = []
        seq.anon = 0
        if seq.adapter is not None:
            self.lora.release(seq.adapter)

    def _done(self, seq: Sequence, reason: FinishReason, now: float) -> None:
        seq.state = "done"
        seq.finish_reason = reason
        seq.finished_at = now
        self.stats.finished(seq, self.config.time_factor)
        self._notify(seq)

    def _notify(self, seq: Sequence) -> None:
        if seq.waiter is not None and not seq.waiter.done():
            seq.waiter.set_result(None)
