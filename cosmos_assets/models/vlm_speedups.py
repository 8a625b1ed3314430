"""Speed-ups of the vision-language model (Qwen2.5-VL / Cosmos-Reason1 through transformers), each switchable,
each on the code path the CPU tests run:

- ``StaticDecoder``: the K trials of each prompt decode from one prefill in a static KV cache, with the
  sampling of ``generate`` (repetition penalty, min-new-tokens, temperature, top-k, top-p) done here; on
  CUDA the decode step is captured once as a CUDA graph and replayed per token.
- ``batch_vision_windows``: the vision tower's windowed attention as one padded, masked SDPA call per layer
  instead of one call per window (thousands per video with the sdpa implementation).
- ``fit_frames_on_device``: the frame resize before the processor runs on the model's device (bicubic with
  antialiasing), and the processor normalises and patchifies there too.

The generator's speed-ups are in ``generator_speedups``.
"""

from __future__ import annotations

import logging
import types
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# Preprocessing on the device.


def fit_frames_on_device(frames: np.ndarray, height: int, width: int, device: torch.device) -> torch.Tensor:
    """uint8 T×H×W×3 frames -> uint8 T×3×height×width on ``device``, resized bicubically with antialiasing
    (the filter PIL uses; on real frames the mean difference from PIL is well under one grey level)."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2)
    if tuple(video.shape[-2:]) == (height, width):
        return video.contiguous()
    chunks = []
    for chunk in video.split(32):  # bounds the float copy of a long 720p video
        resized = F.interpolate(chunk.float(), size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        chunks.append(resized.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(chunks)


# ---------------------------------------------------------------------------------------------------------
# The vision tower's windowed attention in one call per layer.


def batch_vision_windows(model, enable: bool = True) -> None:
    """Patch (or restore) every ``Qwen2_5_VLVisionAttention`` of ``model`` to attend all windows in one SDPA call."""
    for module in model.modules():
        if type(module).__name__ == "Qwen2_5_VLVisionAttention":
            if enable:
                module.forward = types.MethodType(_batched_window_attention, module)
                module.__dict__.setdefault("_window_layouts", OrderedDict())
            else:
                module.__dict__.pop("forward", None)


def _window_layout(module, cu_seqlens: torch.Tensor):
    """Gather index [n, m], key mask [n, 1, 1, m] (None when all windows are equal) and the valid rows."""
    layouts: OrderedDict = module.__dict__["_window_layouts"]
    key = id(cu_seqlens)
    hit = layouts.get(key)
    if hit is not None and hit[0] is cu_seqlens:
        return hit[1]
    bounds = cu_seqlens.tolist()
    lengths = np.diff(bounds)
    starts = torch.tensor(bounds[:-1], device=cu_seqlens.device)
    longest = int(lengths.max())
    if int(lengths.min()) == longest:
        layout = (None, None, None, longest)
    else:
        offsets = torch.arange(longest, device=cu_seqlens.device)
        valid = offsets[None, :] < torch.tensor(lengths, device=cu_seqlens.device)[:, None]
        index = torch.where(valid, starts[:, None] + offsets[None, :], starts[:, None])
        layout = (index, valid[:, None, None, :], valid.flatten(), longest)
    layouts[key] = (cu_seqlens, layout)  # the tensor itself is kept, so its id is not reused while cached
    while len(layouts) > 4:
        layouts.popitem(last=False)
    return layout


def _batched_window_attention(self, hidden_states, cu_seqlens, position_embeddings=None, max_seqlen=None, **kwargs):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    if self.config._attn_implementation != "sdpa":
        return type(self).forward(self, hidden_states, cu_seqlens, position_embeddings, max_seqlen, **kwargs)
    seq_length = hidden_states.shape[0]
    query, key, value = self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    query, key = apply_rotary_pos_emb_vision(query, key, cos, sin)  # [S, heads, d]
    index, mask, valid, longest = _window_layout(self, cu_seqlens)
    if index is None:  # equal windows (the full-attention layers: one per frame pair): a plain reshape
        windows = [t.view(-1, longest, self.num_heads, t.shape[-1]).transpose(1, 2) for t in (query, key, value)]
    else:
        windows = [t[index].transpose(1, 2) for t in (query, key, value)]  # [n, heads, m, d]
    out = F.scaled_dot_product_attention(*windows, attn_mask=mask, dropout_p=0.0, scale=self.scaling)
    out = out.transpose(1, 2).reshape(-1, self.num_heads * out.shape[-1])
    if valid is not None:
        out = out[valid]
    return self.proj(out.to(hidden_states.dtype))


# ---------------------------------------------------------------------------------------------------------
# Decoding from a static KV cache, the step captured as a CUDA graph.


class _StaticKV:
    """The cache object the decoder layers see: fixed buffers, written at the shared position ``position``."""

    def __init__(self, layers: int, rows: int, kv_heads: int, length: int, head_dim: int, dtype, device) -> None:
        shape = (rows, kv_heads, length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.position = torch.zeros((), dtype=torch.long, device=device)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        where = torch.arange(key_states.shape[-2], device=key_states.device) + self.position
        self.keys[layer_idx].index_copy_(2, where, key_states)
        self.values[layer_idx].index_copy_(2, where, value_states)
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0):
        return self.position


class _DecodeState:
    """Buffers of one (rows, cache length) shape, and the captured decode step when on CUDA."""

    def __init__(self, model, rows: int, length: int, use_graph: bool) -> None:
        text = model.config.get_text_config()
        device, dtype = model.device, model.dtype
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self.model, self.rows, self.length = model, rows, length
        self.kv = _StaticKV(text.num_hidden_layers, rows, text.num_key_value_heads, length, head_dim, dtype, device)
        self.ids = torch.zeros((rows, 1), dtype=torch.long, device=device)
        self.positions = torch.zeros((3, rows, 1), dtype=torch.long, device=device)
        self.mask = torch.zeros((rows, 1, 1, length), dtype=torch.bool, device=device)
        self.masks = {kind: self.mask for kind in set(getattr(text, "layer_types", None) or ["full_attention"])}
        self.logits = torch.zeros((rows, text.vocab_size), dtype=torch.float32, device=device)
        self.use_graph, self.graph, self.graph_error = use_graph, None, None

    def load(self, cache, trials: int, prompt_mask: torch.Tensor, start_positions: torch.Tensor) -> None:
        """The prefill's cache (B rows) into the static buffers (B·trials rows); positions for the first token."""
        length = prompt_mask.shape[1]
        for layer, (keys, values) in enumerate(_cache_tensors(cache)):
            self.kv.keys[layer][:, :, :length].copy_(keys.repeat_interleave(trials, dim=0))
            self.kv.values[layer][:, :, :length].copy_(values.repeat_interleave(trials, dim=0))
        self.kv.position.fill_(length)
        self.mask.zero_()
        self.mask[:, 0, 0, :length] = prompt_mask.repeat_interleave(trials, dim=0).bool()
        self.positions.copy_(start_positions.repeat_interleave(trials).view(1, -1, 1).expand(3, -1, -1))

    def _step(self) -> None:
        self.mask.index_fill_(3, self.kv.position.view(1), True)  # the slot written now becomes visible
        language = self.model.model.language_model
        out = language(input_ids=self.ids, attention_mask=self.masks, position_ids=self.positions, cache=self.kv,
                       use_cache=True)
        self.logits.copy_(self.model.lm_head(out.last_hidden_state[:, -1]).float())
        self.kv.position.add_(1)
        self.positions.add_(1)

    def step(self) -> None:
        if self.use_graph and self.graph is None and self.graph_error is None:
            self._capture()
        if self.use_graph and self.graph is not None:
            self.graph.replay()
        else:
            self._step()

    def _capture(self) -> None:
        saved = (self.kv.position.clone(), self.positions.clone(), self.mask.clone(), self.ids.clone())
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm-up outside the graph (kernel choice, workspaces)
                    self._step()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._step()
            self.graph = graph
        except Exception as error:  # decoding stays correct without the graph, only slower
            self.graph_error = f"{error.__class__.__name__}: {error}"
            log.warning("CUDA graph capture of the decode step failed; decoding eagerly: %s", self.graph_error)
            torch.cuda.synchronize()
        finally:
            for buffer, value in zip((self.kv.position, self.positions, self.mask, self.ids), saved):
                buffer.copy_(value)


def _cache_tensors(cache):
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))  # older transformers


@dataclass(frozen=True)
class Sampling:
    """The logits processing of ``generate`` for the settings the VLM uses (same order, same arithmetic)."""

    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    min_new_tokens: int

    @property
    def sampling(self) -> bool:
        return self.temperature > 0


def _next_tokens(logits: torch.Tensor, seen: torch.Tensor | None, sampling: Sampling, produced: int,
                 eos: torch.Tensor) -> torch.Tensor:
    scores = logits
    if seen is not None:  # RepetitionPenaltyLogitsProcessor: once per token present in the prompt or the output
        penalised = torch.where(scores < 0, scores * sampling.repetition_penalty, scores / sampling.repetition_penalty)
        scores = torch.where(seen, penalised, scores)
    if produced < sampling.min_new_tokens:  # MinNewTokensLengthLogitsProcessor
        scores = scores.index_fill(1, eos, -float("inf"))
    if not sampling.sampling:
        return torch.argmax(scores, dim=-1)
    if sampling.temperature != 1.0:
        scores = scores / sampling.temperature
    if sampling.top_k:
        top_k = min(sampling.top_k, scores.shape[-1])
        scores = scores.masked_fill(scores < torch.topk(scores, top_k)[0][..., -1, None], -float("inf"))
    if sampling.top_p < 1.0:
        sorted_logits, sorted_indices = torch.sort(scores, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - sampling.top_p)
        remove[..., -1:] = False
        scores = scores.masked_fill(remove.scatter(1, sorted_indices, remove), -float("inf"))
    return torch.multinomial(F.softmax(scores, dim=-1), num_samples=1).squeeze(1)


class StaticDecoder:
    """K sampled continuations of each of B prompts: one prefill per prompt, a static KV cache, and on CUDA
    a CUDA graph per decode step. Keeps the buffers (and graph) of the last two shapes for reuse."""

    def __init__(self, model, cuda_graphs: bool = True, length_multiple: int = 256) -> None:
        self.model, self.cuda_graphs, self.length_multiple = model, cuda_graphs, length_multiple
        self.states: OrderedDict[tuple[int, int], _DecodeState] = OrderedDict()
        self.last: dict = {}

    @property
    def use_graph(self) -> bool:
        return self.cuda_graphs and self.model.device.type == "cuda"

    def _state(self, rows: int, length: int) -> _DecodeState:
        key = (rows, length)
        if key in self.states:
            self.states.move_to_end(key)
        else:
            while len(self.states) >= 2:
                self.states.popitem(last=False)
                if self.model.device.type == "cuda":
                    torch.cuda.empty_cache()
            self.states[key] = _DecodeState(self.model, rows, length, self.use_graph)
        self.states[key].use_graph = self.use_graph
        return self.states[key]

    def special_tokens(self) -> tuple[list[int], int]:
        config = self.model.generation_config
        eos = config.eos_token_id
        if eos is None:
            eos = self.model.config.get_text_config().eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else 0)
        return eos, pad

    def generate(self, inputs, trials: int, sampling: Sampling, max_new_tokens: int, clock: PhaseClock | None = None) -> torch.Tensor:
        """New token ids, ``[B·trials, n]`` (rows of one prompt together, finished rows padded)."""
        model = self.model
        clock = clock or PhaseClock(model.device, None)
        prompt_mask = inputs["attention_mask"]
        batch, length = prompt_mask.shape
        rows = batch * trials
        out = model(**inputs, use_cache=True, logits_to_keep=1)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        first_logits = out.logits[:, -1].float()
        rope_deltas = model.model.rope_deltas
        if rope_deltas is None:
            rope_deltas = torch.zeros((batch, 1), dtype=torch.long, device=model.device)
        start = prompt_mask.long().sum(-1) + rope_deltas.view(-1).to(prompt_mask.device)
        clock.lap("prefill_s")

        total = -(-(length + max_new_tokens) // self.length_multiple) * self.length_multiple
        state = self._state(rows, total)
        state.load(cache, trials, prompt_mask, start)
        del cache, out
        eos_list, pad = self.special_tokens()
        eos = torch.tensor(eos_list or [pad], device=model.device)
        seen = None
        if sampling.repetition_penalty != 1.0:
            seen = torch.zeros((rows, state.logits.shape[1]), dtype=torch.bool, device=model.device)
            prompt_ids = inputs["input_ids"].repeat_interleave(trials, dim=0)
            seen.scatter_(1, prompt_ids, prompt_mask.repeat_interleave(trials, dim=0).bool())
        produced = torch.full((rows, max_new_tokens), pad, dtype=torch.long, device=model.device)
        unfinished = torch.ones(rows, dtype=torch.bool, device=model.device)
        logits = first_logits.repeat_interleave(trials, dim=0)
        steps = 0
        for step in range(max_new_tokens):
            tokens = _next_tokens(logits, seen, sampling, step, eos)
            tokens = torch.where(unfinished, tokens, pad)
            produced[:, step] = tokens
            steps = step + 1
            unfinished &= ~torch.isin(tokens, eos)
            if seen is not None:
                seen.scatter_(1, tokens[:, None], True)
            if step == max_new_tokens - 1 or (step % 16 == 15 and not bool(unfinished.any())):
                break
            state.ids.copy_(tokens[:, None])
            state.step()
            logits = state.logits
        clock.lap("decode_s")
        self.last = {"rows": rows, "cache_length": total, "steps": steps, "cuda_graph": state.graph is not None,
                     "graph_error": state.graph_error}
        return produced[:, :steps]


class PhaseClock:
    """Phase timings (device-synchronised) when a dict is given; nothing otherwise."""

    def __init__(self, device: torch.device, timings: dict | None) -> None:
        import time

        self.device, self.timings, self.time = device, timings, time
        if timings is not None:
            self._sync()
            self.start = time.perf_counter()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def lap(self, name: str) -> None:
        if self.timings is None:
            return
        self._sync()
        now = self.time.perf_counter()
        self.timings[name] = round(self.timings.get(name, 0.0) + now - self.start, 4)
        self.start = now
