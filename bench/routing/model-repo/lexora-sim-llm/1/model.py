"""lexora-sim-llm: a decoupled Triton Python-backend model that behaves like one LLM replica.

Same tensors as the chat models (text_input, max_tokens, stream, ... -> text_output,
num_input_tokens, num_output_tokens, finish_reason, stop_word), so the real router drives it like a
real engine. It computes nothing; time is spent in sleeps, so many replicas fit on a small machine:

- `batch_slots` sequences run at once; requests beyond wait in a FIFO queue (TensorRT-LLM's
  "waiting" requests).
- Prefill takes `prefill_ms_per_token` per prompt token NOT found in the prefix cache. The prompt
  (its bytes; `bytes_per_token` bytes make a token) is cut into blocks of `block_tokens` tokens,
  each named by a hash of the block and every block before it, as paged KV caches do. The leading
  blocks present in the cache are hits; after the prefill every full block of the prompt is put in
  the cache, an LRU holding at most `prefix_cache_blocks` blocks.
- Then one token per decode step of `decode_ms_per_step`, longer by `decode_growth_per_sequence`
  for every other sequence decoding at the same time.
- Its load is exported as Triton custom metrics under TensorRT-LLM's names, which the router reads:
  nv_trt_llm_request_metrics{request_type="waiting"|"active"|"max"} and
  nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"|"used"|"max"} (blocks held by
  running sequences out of `kv_cache_blocks`); and the prefix cache's effect as counters of prompt
  tokens, lexora_sim_prompt_tokens_total{cache="hit"|"miss"}, which the benchmark reads.

max_tokens=0 only counts the prompt's tokens (one final response at once), as the chat models do.
A request whose client went away (cancelled) stops at its next step and frees its slot.
"""

import collections
import hashlib
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
WORDS = (" sim", "ulated", " token", "s", " flow", " from", " one", " replica", ".")
DEFAULTS = {
    "batch_slots": 4,
    "prefill_ms_per_token": 0.5,
    "decode_ms_per_step": 40.0,
    "decode_growth_per_sequence": 0.05,
    "block_tokens": 64,
    "prefix_cache_blocks": 48,
    "kv_cache_blocks": 256,
    "bytes_per_token": 4,
}
METRICS_INTERVAL_S = 0.2  # how often the gauges are brought up to date


def _array(value, dtype):
    return np.array([value], dtype=dtype)


def _scalar(request, name, default=None):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    values = tensor.as_numpy().reshape(-1)
    if values.size == 0:
        return default
    value = values[0]
    return value.item() if isinstance(value, np.generic) else value


def parameters(config):
    """The simulation's parameters: config.pbtxt's `parameters`, else the defaults."""
    given = {key: value.get("string_value") for key, value in config.get("parameters", {}).items()}
    out = {}
    for key, default in DEFAULTS.items():
        raw = given.get(key)
        out[key] = type(default)(raw) if raw not in (None, "") else default
    return out


def block_hashes(prompt, block_bytes):
    """The names of the prompt's full blocks: each hashes its bytes and all the blocks before it."""
    out, running = [], hashlib.blake2b(digest_size=16)
    for start in range(0, len(prompt) - block_bytes + 1, block_bytes):
        running.update(prompt[start : start + block_bytes])
        out.append(running.copy().digest())
    return out


class PrefixCache:
    """An LRU of prompt blocks. `match` counts the leading blocks present; `insert` adds them all."""

    def __init__(self, capacity):
        self.capacity = capacity
        self._blocks = collections.OrderedDict()

    def match(self, hashes):
        hits = 0
        for name in hashes:
            if name not in self._blocks:
                break
            self._blocks.move_to_end(name)
            hits += 1
        return hits

    def insert(self, hashes):
        for name in hashes:
            self._blocks[name] = None
            self._blocks.move_to_end(name)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)


class SimEngine:
    """The replica's scheduler state; every method is called with no lock held."""

    def __init__(self, params):
        self.p = params
        self.cache = PrefixCache(params["prefix_cache_blocks"])
        self._lock = threading.Lock()
        self._queue = collections.deque()  # threading.Event per waiting request, in arrival order
        self.running = 0
        self.blocks_held = {}  # request key -> KV blocks its sequence holds
        self.hit_tokens = 0
        self.miss_tokens = 0

    @property
    def waiting(self):
        return len(self._queue)

    def acquire(self, is_cancelled):
        """Wait (FIFO) for a batch slot; False when the request was cancelled meanwhile."""
        turn = threading.Event()
        with self._lock:
            if self.running < self.p["batch_slots"] and not self._queue:
                self.running += 1
                return True
            self._queue.append(turn)
        while not turn.wait(0.05):
            if is_cancelled():
                with self._lock:
                    if turn in self._queue:
                        self._queue.remove(turn)
                        return False
                # The slot was handed over just now: take it, the caller releases it.
                return True
        return True

    def release(self, key):
        with self._lock:
            self.blocks_held.pop(key, None)
            if self._queue:
                self._queue.popleft().set()  # the slot passes to the next waiting request
            else:
                self.running -= 1

    def prefill(self, key, prompt, n_in):
        """Seconds the prefill takes, counting the cache's hits; the blocks enter the cache after."""
        block_tokens = self.p["block_tokens"]
        hashes = block_hashes(prompt, block_tokens * self.p["bytes_per_token"])
        with self._lock:
            hit = min(self.cache.match(hashes) * block_tokens, n_in)
            self.hit_tokens += hit
            self.miss_tokens += n_in - hit
            self.blocks_held[key] = -(-n_in // block_tokens)
        time.sleep((n_in - hit) * self.p["prefill_ms_per_token"] / 1000.0)
        with self._lock:
            self.cache.insert(hashes)

    def step_seconds(self):
        extra = max(self.running - 1, 0)
        return self.p["decode_ms_per_step"] * (1.0 + self.p["decode_growth_per_sequence"] * extra) / 1000.0

    def grew(self, key, tokens):
        with self._lock:
            if key in self.blocks_held:
                self.blocks_held[key] = -(-tokens // self.p["block_tokens"])

    def snapshot(self):
        with self._lock:
            used = sum(self.blocks_held.values())
            return {
                "waiting": len(self._queue),
                "active": self.running,
                "used": used,
                "hit": self.hit_tokens,
                "miss": self.miss_tokens,
            }


class _Metrics:
    """The custom metric families, named as TensorRT-LLM's backend names its own."""

    def __init__(self, model, version, params):
        labels = {"model": model, "version": version}
        requests = pb_utils.MetricFamily(
            name="nv_trt_llm_request_metrics",
            description="TensorRT-LLM request metrics (simulated)",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        blocks = pb_utils.MetricFamily(
            name="nv_trt_llm_kv_cache_block_metrics",
            description="TensorRT-LLM KV cache block metrics (simulated)",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        tokens = pb_utils.MetricFamily(
            name="lexora_sim_prompt_tokens_total",
            description="Prompt tokens found in the prefix cache (hit) or prefilled (miss)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self._families = (requests, blocks, tokens)
        self.waiting = requests.Metric(labels={**labels, "request_type": "waiting"})
        self.active = requests.Metric(labels={**labels, "request_type": "active"})
        self.max_requests = requests.Metric(labels={**labels, "request_type": "max"})
        self.fraction = blocks.Metric(labels={**labels, "kv_cache_block_type": "fraction"})
        self.used = blocks.Metric(labels={**labels, "kv_cache_block_type": "used"})
        self.max_blocks = blocks.Metric(labels={**labels, "kv_cache_block_type": "max"})
        self.hit = tokens.Metric(labels={**labels, "cache": "hit"})
        self.miss = tokens.Metric(labels={**labels, "cache": "miss"})
        self.max_requests.set(params["batch_slots"])
        self.max_blocks.set(params["kv_cache_blocks"])
        self._counted = {"hit": 0, "miss": 0}
        self._capacity = params["kv_cache_blocks"]

    def update(self, snap):
        self.waiting.set(snap["waiting"])
        self.active.set(snap["active"])
        self.used.set(snap["used"])
        self.fraction.set(min(snap["used"] / self._capacity, 1.0))
        for name, metric in (("hit", self.hit), ("miss", self.miss)):
            delta = snap[name] - self._counted[name]
            if delta:
                metric.increment(delta)
                self._counted[name] = snap[name]


class TritonPythonModel:
    def initialize(self, args):
        import json

        config = json.loads(args["model_config"])
        self.params = parameters(config)
        self.engine = SimEngine(self.params)
        self.metrics = _Metrics(args["model_name"], args["model_version"], self.params)
        self._words = [w.encode() for w in WORDS]
        self._empty = _array(b"", np.object_)
        self._length = _array(b"length", np.object_)
        self._stop = _array(b"stop", np.object_)
        self._closing = threading.Event()
        self._threads = set()
        self._threads_lock = threading.Lock()
        self._next_key = 0
        self._reporter = threading.Thread(target=self._report, daemon=True)
        self._reporter.start()

    def _report(self):
        while not self._closing.wait(METRICS_INTERVAL_S):
            self.metrics.update(self.engine.snapshot())

    def _response(self, text, n_in, n_out, finish=None, stop_word=b""):
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("text_output", _array(text, np.object_)),
                pb_utils.Tensor("num_input_tokens", _array(n_in, np.int32)),
                pb_utils.Tensor("num_output_tokens", _array(n_out, np.int32)),
                pb_utils.Tensor("finish_reason", self._empty if finish is None else finish),
                pb_utils.Tensor("stop_word", _array(stop_word, np.object_)),
            ]
        )

    def execute(self, requests):
        # Each request runs in its own thread, so execute() returns at once and the next requests
        # join the simulated batch or its queue (the decoupled "repeat" pattern).
        for request in requests:
            self._next_key += 1
            thread = threading.Thread(target=self._run, args=(request, self._next_key), daemon=True)
            with self._threads_lock:
                self._threads.add(thread)
            thread.start()
        return None

    def _run(self, request, key):
        sender = request.get_response_sender()
        try:
            self._serve(request, sender, key)
        except Exception as exc:  # never let one request take the model down
            try:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)
            except Exception:
                pass
        finally:
            with self._threads_lock:
                self._threads.discard(threading.current_thread())

    def _serve(self, request, sender, key):
        text_input = _scalar(request, "text_input")
        if text_input is None:
            raise ValueError("text_input is required")
        max_tokens = _scalar(request, "max_tokens")
        if max_tokens is None or int(max_tokens) < 0:
            raise ValueError("max_tokens must be at least 0 (0 counts the prompt's tokens only)")
        max_tokens = int(max_tokens)
        prompt = text_input if isinstance(text_input, bytes) else str(text_input).encode()
        n_in = max(1, len(prompt) // self.params["bytes_per_token"])
        if max_tokens == 0:
            sender.send(self._response(b"", n_in, 0, self._length), flags=FINAL)
            return
        stop_tensor = pb_utils.get_input_tensor_by_name(request, "stop_words")
        stops = [] if stop_tensor is None else [s for s in stop_tensor.as_numpy().reshape(-1) if s]
        stream = bool(_scalar(request, "stream", False))

        engine = self.engine
        if not engine.acquire(request.is_cancelled):
            sender.send(self._response(b"", n_in, 0, self._length), flags=FINAL)
            return
        try:
            engine.prefill(key, prompt, n_in)
            produced, finish, stop_word = [], self._length, b""
            for i in range(max_tokens):
                if request.is_cancelled() or self._closing.is_set():
                    break
                time.sleep(engine.step_seconds())
                word = self._words[i % len(self._words)]
                hit = next((s for s in stops if s in word), None)
                if hit is not None:
                    finish, stop_word = self._stop, hit
                    break
                produced.append(word)
                engine.grew(key, n_in + len(produced))
                if stream:
                    sender.send(self._response(word, n_in, len(produced)))
        finally:
            engine.release(key)
        text = b"" if stream else b"".join(produced)
        sender.send(self._response(text, n_in, len(produced), finish, stop_word), flags=FINAL)

    def finalize(self):
        self._closing.set()
        with self._threads_lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)
