"""The laptop critic: a small temporal network over real EfficientNet-Lite0 frame features, trained on
plausibility labels (self-supervised ones from ``self_supervised`` or landed ones), CPU, in seconds.

What it sees, per step between consecutive frames a → b of a video (and b → c after it), all of it
order-sensitive (a mean-pooled feature is the same forwards, backwards and shuffled):
- how far the unit 1280-d EfficientNet-Lite0 features move (``1 - cos``), a → b and a → c, and the detour
  ``|a→c| / (|a→b| + |b→c|)``: a smooth trajectory goes on, a shuffled one turns back;
- how far the coarse luma moves, the step's size against the video's own median step (a jump or a
  shuffle is an outlier, a held frame is zero) and whether the frame repeats;
- optical-flow statistics of the coarse luma (Farnebäck): mean horizontal and vertical flow, divergence
  (a camera driving forwards expands the picture, played backwards it contracts), flow magnitude;
- optionally (``projection`` > 0) the feature change ``f(b) - f(a)`` itself through a learned projection.
Two 1-D convolutions over time, then mean- and max-pooling over the steps, give a logit of P(plausible).

The 1-5 rating is ``1 + 4·P(plausible)``, the inverse of the rubric critic's map from its mean rating r to
its [0, 1] score, ``(r - 1) / 4``: a rating here and a rubric rating mean the same score, and P(plausible)
is what the flywheel stores as the score.

Checkpoints are safetensors: ``critic.safetensors`` (weights, input normalisation, and metadata naming the
architecture, the feature extractor, the training set version and the seed), and
``training_state-<step>.safetensors`` every ``save_every`` steps (weights, AdamW moments and step), from
which a crashed run resumes to exactly the result of an uninterrupted one: the batches of step ``s`` are
a function of (seed, epoch) alone, and everything else is restored.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cosmos_assets.common.files import atomic_path
from cosmos_assets.common.knobs import knob
from cosmos_assets.critic_training.self_supervised import PlausibilityExample, SourceClip, coarse_luma

FORMAT = "cosmos-feature-critic/1"
CRITIC_FILE = "critic.safetensors"
STATE_PREFIX = "training_state-"
FEATURE_CACHE = "features"
STEP_STATISTICS = ("feature_step", "feature_skip", "feature_detour", "luma_step", "luma_step_vs_median",
                   "repeated_frame", "flow_x", "flow_y", "flow_divergence", "flow_magnitude")


@dataclass(frozen=True)
class FeatureCriticSettings:
    """The laptop critic's architecture and training."""

    # Measured on the sample videos (bench/RESULTS.md): a learned projection of the 1280-d feature changes
    # overfits the few training videos and lowers held-out accuracy, so it is off by default; the distances
    # along the feature trajectory (feature_step, feature_skip, feature_detour) carry what generalises.
    projection: int = knob(0, "Width of a learned projection of the frame-feature changes (0: none, only distances).")
    hidden: int = knob(32, "Channels of the temporal convolutions.")
    use_flow: bool = knob(True, "Feed optical-flow statistics (direction cues) of consecutive frames.")
    epochs: int = knob(60, "Passes over the training examples.")
    batch_size: int = knob(32, "Examples per optimiser step.")
    learning_rate: float = knob(3e-3, "AdamW learning rate.")
    weight_decay: float = knob(1e-2, "AdamW weight decay.")
    save_every: int = knob(50, "Optimiser steps between saved training states (a crashed run resumes from the last).")
    seed: int = knob(0, "Seed of the initial weights and the batch order.")
    fps: float = knob(10.0, "Frame rate the critic looks at: faster videos are sampled down to it before scoring.")

    def architecture(self) -> dict:
        return {"name": "temporal-conv", "projection": self.projection, "hidden": self.hidden,
                "use_flow": self.use_flow, "statistics": list(self._statistics()), "kernel": 3, "layers": 2}

    def _statistics(self) -> tuple[str, ...]:
        return STEP_STATISTICS if self.use_flow else tuple(s for s in STEP_STATISTICS if not s.startswith("flow_"))


# --- per-clip inputs ---------------------------------------------------------------------------------------


@dataclass
class ClipInputs:
    """What the critic needs of a clip's frames, computed once: every variant of the clip indexes into it."""

    features: np.ndarray  # N×1280 unit rows, EfficientNet-Lite0
    luma: np.ndarray  # N×h×64 coarse blurred luma
    flows: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (a, b) -> 4 flow statistics

    def flow(self, a: int, b: int) -> np.ndarray:
        if (a, b) not in self.flows:
            if a == b:
                self.flows[(a, b)] = np.zeros(4, np.float32)
            else:
                flow = cv2.calcOpticalFlowFarneback(self.luma[a], self.luma[b], None, pyr_scale=0.5, levels=2,
                                                    winsize=9, iterations=3, poly_n=5, poly_sigma=1.1, flags=0)
                width = self.luma.shape[2]
                u, v = flow[..., 0] / width, flow[..., 1] / width  # in picture widths: any resolution alike
                divergence = (np.gradient(u, axis=1) + np.gradient(v, axis=0)).mean() * width
                self.flows[(a, b)] = np.array([u.mean(), v.mean(), divergence, np.hypot(u, v).mean()], np.float32)
        return self.flows[(a, b)]


def step_inputs(inputs: ClipInputs, indices: Sequence[int], use_flow: bool) -> tuple[np.ndarray, np.ndarray]:
    """(feature changes (T-1)×1280, step statistics (T-1)×S) of the video ``frames[indices]``."""
    idx = np.asarray(indices)
    features, luma = inputs.features[idx], inputs.luma[idx]
    deltas = features[1:] - features[:-1]
    feature_step = 1.0 - (features[1:] * features[:-1]).sum(1)
    after = np.append(idx[2:], idx[-1])  # the last step has no next frame: its detour is measured as none
    feature_skip = 1.0 - (features[:-1] * inputs.features[after]).sum(1)
    next_step = np.append(feature_step[1:], 0.0)
    detour = np.sqrt(np.maximum(feature_skip, 0)) / (np.sqrt(np.maximum(feature_step, 0)) + np.sqrt(np.maximum(next_step, 0)) + 1e-4)
    luma_step = np.abs(np.diff(luma, axis=0)).mean(axis=(1, 2))
    relative = np.log((luma_step + 1e-4) / (np.median(luma_step) + 1e-4))
    repeated = (idx[1:] == idx[:-1]) | (luma_step < 1e-5)
    columns = [feature_step, feature_skip, detour, luma_step * 100, relative, repeated.astype(np.float32)]
    if use_flow:
        flows = np.stack([inputs.flow(int(a), int(b)) for a, b in zip(idx[:-1], idx[1:])])
        columns += [flows[:, 0] * 100, flows[:, 1] * 100, flows[:, 2], flows[:, 3] * 100]
    return deltas.astype(np.float32), np.stack(columns, 1).astype(np.float32)


class FeatureExtractor:
    """EfficientNet-Lite0 frame features (the packaged weights ``models.embedders`` loads), cached per clip in
    memory and, given a folder, on disk (safetensors keyed by the frames' content hash and the model version)."""

    def __init__(self, device: torch.device | str = "cpu", cache_dir: Path | None = None):
        from cosmos_assets.models.embedders import load_efficientnet

        self.embedder = load_efficientnet(torch.device(device))
        self.name, self.version = self.embedder.name, self.embedder.version
        self.cache_dir = cache_dir
        self._memory: dict[str, ClipInputs] = {}

    def clip_inputs(self, clip: SourceClip) -> ClipInputs:
        key = f"{clip.digest}-{self.version}"
        if key in self._memory:
            return self._memory[key]
        path = self.cache_dir / f"{key}.safetensors" if self.cache_dir is not None else None
        if path is not None and path.is_file():
            features = load_file(str(path))["features"].numpy()
        else:
            features = self.frame_features(clip.frames)
            if path is not None:
                with atomic_path(path) as partial:
                    save_file({"features": torch.from_numpy(features)}, str(partial), metadata={"extractor": self.version})
        inputs = ClipInputs(features, coarse_luma(clip.frames))
        self._memory[key] = inputs
        return inputs

    def frame_features(self, frames: np.ndarray) -> np.ndarray:
        features = self.embedder.frame_features([frames])
        return (features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-8)).astype(np.float32)


# --- the network -------------------------------------------------------------------------------------------


class TemporalCritic(torch.nn.Module):
    """Feature changes (projected) and step statistics, normalised, through two 1-D convolutions over time;
    mean and max over the steps; one logit of P(plausible)."""

    def __init__(self, feature_dim: int, statistics: int, projection: int, hidden: int):
        super().__init__()
        self.projection = torch.nn.Linear(feature_dim, projection, bias=False) if projection else None
        width = projection + statistics
        self.conv1 = torch.nn.Conv1d(width, hidden, 3, padding=1)
        self.conv2 = torch.nn.Conv1d(hidden, hidden, 3, padding=1)
        self.head = torch.nn.Linear(2 * hidden, 1)
        # Input normalisation, measured on the training set and saved with the weights.
        self.register_buffer("statistics_mean", torch.zeros(statistics))
        self.register_buffer("statistics_std", torch.ones(statistics))
        self.register_buffer("delta_scale", torch.ones(()))

    def forward(self, deltas: torch.Tensor, statistics: torch.Tensor) -> torch.Tensor:
        """``deltas`` B×T×D, ``statistics`` B×T×S → logits B."""
        parts = [(statistics - self.statistics_mean) / self.statistics_std]
        if self.projection is not None:
            parts.insert(0, self.projection(deltas * self.delta_scale))
        x = torch.cat(parts, -1).transpose(1, 2)
        x = torch.nn.functional.gelu(self.conv1(x))
        x = torch.nn.functional.gelu(self.conv2(x))
        return self.head(torch.cat([x.mean(-1), x.amax(-1)], -1)).squeeze(-1)


def _build(settings: FeatureCriticSettings, feature_dim: int = 1280) -> TemporalCritic:
    return TemporalCritic(feature_dim, len(settings._statistics()), settings.projection, settings.hidden)


# --- the critic --------------------------------------------------------------------------------------------


class FeatureCritic:
    """A trained feature critic: ``score_videos`` gives a 1-5 rating and P(plausible) per video."""

    mode = "feature"

    def __init__(self, model: TemporalCritic, settings: FeatureCriticSettings, extractor: FeatureExtractor, metadata: dict):
        self.model, self.settings, self.extractor, self.metadata = model.eval(), settings, extractor, metadata

    @property
    def identity(self) -> dict:
        """Which critic scored a row: the architecture, the feature extractor, the training set and the weights."""
        return {"critic": "feature", "critic_model": f"{self.metadata['feature_extractor']}+temporal-conv",
                "critic_version": f"{FORMAT}+{self.metadata['weights_digest']}",
                "feature_extractor": self.metadata["feature_extractor"],
                "feature_extractor_version": self.metadata["feature_extractor_version"],
                "training_set_version": self.metadata["training_set_version"],
                "tiny_random": False, "random_weights": False}

    def _resampled(self, frames: np.ndarray, fps: float) -> np.ndarray:
        # Down to the critic's rate by time; a slower video is left as it is (repeating its frames would look
        # like the stutter the critic learned to reject).
        if fps <= self.settings.fps * 1.01:
            return frames
        times = np.arange(0, len(frames) / fps, 1 / self.settings.fps)
        return frames[np.unique(np.minimum(np.floor(times * fps + 1e-6).astype(int), len(frames) - 1))]

    def probabilities(self, inputs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """P(plausible) of prepared (feature changes, statistics) pairs (videos may differ in length)."""
        with torch.inference_mode():
            return np.array([torch.sigmoid(self.model(torch.from_numpy(d)[None], torch.from_numpy(s)[None]))[0].item()
                             for d, s in inputs])

    def score_videos(self, videos: list[tuple[np.ndarray, float]]) -> list[tuple[float, float]]:
        """(rating 1-5, P(plausible)) per (uint8 T×H×W×3 frames, fps); a video needs at least 3 frames."""
        prepared = []
        for frames, fps in videos:
            frames = self._resampled(frames, fps)
            if len(frames) < 3:
                raise ValueError(f"a video of {len(frames)} frames at the critic's {self.settings.fps} fps; need 3")
            clip = SourceClip("scored", "scored", np.ascontiguousarray(frames), self.settings.fps)
            inputs = ClipInputs(self.extractor.frame_features(clip.frames), coarse_luma(clip.frames))
            prepared.append(step_inputs(inputs, range(len(frames)), self.settings.use_flow))
        return [(round(1 + 4 * p, 4), round(float(p), 6)) for p in self.probabilities(prepared)]


def load_feature_critic(path: str | Path, device: torch.device | str = "cpu") -> FeatureCritic:
    """A critic from its ``critic.safetensors`` (or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / CRITIC_FILE
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: not a feature critic (format {metadata.get('format')!r}, expected {FORMAT!r})")
    settings = FeatureCriticSettings(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in json.loads(metadata["settings"]).items()})
    extractor = FeatureExtractor(device)
    if extractor.version != metadata["feature_extractor_version"]:
        raise ValueError(f"{path}: trained on {metadata['feature_extractor_version']} features, this machine has {extractor.version}")
    model = _build(settings)
    model.load_state_dict(load_file(str(path)), strict=True)
    decoded = {k: v for k, v in metadata.items()}
    return FeatureCritic(model.to(device), settings, extractor, decoded)


# --- training ----------------------------------------------------------------------------------------------


@dataclass
class TrainingResult:
    path: Path  # critic.safetensors
    steps: int
    loss_curve: list[float]  # mean loss of every optimiser step
    resumed_from: int  # 0 when training started from scratch
    train_accuracy: float
    examples: int
    seconds: float
    identity: dict
    critic: FeatureCritic = field(repr=False)


def _examples_fingerprint(examples: Sequence[PlausibilityExample], settings: FeatureCriticSettings, version: str) -> str:
    rows = [(e.clip.digest, e.kind, e.plausible, e.indices) for e in examples]
    return hashlib.sha256(json.dumps([rows, asdict(settings), version]).encode()).hexdigest()[:16]


def _batches(step: int, count: int, batch_size: int, seed: int) -> np.ndarray:
    """The examples of optimiser step ``step``: a fresh permutation per epoch, from (seed, epoch) alone."""
    per_epoch = math.ceil(count / batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(count)
    return order[position * batch_size:(position + 1) * batch_size]


def _save_state(checkpoint_dir: Path, step: int, model: TemporalCritic, optimizer: torch.optim.Optimizer,
                losses: list[float], fingerprint: str) -> None:
    tensors = {f"model/{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for index, state in optimizer_state["state"].items():
        for name, value in state.items():
            tensors[f"optimizer/{index}/{name}"] = torch.as_tensor(value).detach().clone().contiguous()
    meta = {"step": step, "losses": losses, "fingerprint": fingerprint, "param_groups": optimizer_state["param_groups"]}
    with atomic_path(checkpoint_dir / f"{STATE_PREFIX}{step:08d}.safetensors") as partial:
        save_file(tensors, str(partial), metadata={"training": json.dumps(meta)})
    for older in sorted(checkpoint_dir.glob(f"{STATE_PREFIX}*.safetensors"))[:-2]:  # the last two are enough
        older.unlink()


def _restore_state(checkpoint_dir: Path, model: TemporalCritic, optimizer: torch.optim.Optimizer,
                   fingerprint: str) -> tuple[int, list[float]]:
    """The latest saved state of a run on these very examples and settings, restored; (0, []) if none."""
    for path in sorted(checkpoint_dir.glob(f"{STATE_PREFIX}*.safetensors"), reverse=True):
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads(handle.metadata()["training"])
        if meta["fingerprint"] != fingerprint:
            continue  # another training set's state: resuming from it would mix two runs
        tensors = load_file(str(path))
        model.load_state_dict({k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")})
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, index, name = key.split("/", 2)
                state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        return meta["step"], meta["losses"]
    return 0, []


def prepare_examples(examples: Sequence[PlausibilityExample], extractor: FeatureExtractor,
                     use_flow: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """(feature changes, step statistics) of every example; frames' features are computed once per clip."""
    return [step_inputs(extractor.clip_inputs(e.clip), e.indices, use_flow) for e in examples]


def train_feature_critic(examples: Sequence[PlausibilityExample], settings: FeatureCriticSettings,
                         checkpoint_dir: str | Path, training_set_version: str = "unversioned", resume: bool = True,
                         progress: Callable[[int, int, float], None] | None = None,
                         extractor: FeatureExtractor | None = None) -> TrainingResult:
    """Train a critic on ``examples`` (all of one window length) and write ``critic.safetensors``.

    ``resume``: continue from the latest training state in ``checkpoint_dir`` saved for the same examples and
    settings. ``progress(step, total_steps, loss)`` is called after every step (raising there stops the run
    as a crash would; the next call resumes). Features are cached under ``checkpoint_dir/features``.
    """
    started = time.perf_counter()
    if not examples:
        raise ValueError("no training examples")
    lengths = {len(e.indices) for e in examples}
    if len(lengths) != 1:
        raise ValueError(f"examples of several lengths {sorted(lengths)}: train on windows of one length")
    labels = torch.tensor([float(e.plausible) for e in examples])
    if labels.min() == labels.max():
        raise ValueError("all examples carry the same label: nothing to learn")
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    extractor = extractor or FeatureExtractor("cpu", checkpoint_dir / FEATURE_CACHE)
    prepared = prepare_examples(examples, extractor, settings.use_flow)
    deltas = torch.from_numpy(np.stack([d for d, _ in prepared]))
    statistics = torch.from_numpy(np.stack([s for _, s in prepared]))

    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)  # initial weights from the seed: runs repeat
        model = _build(settings, deltas.shape[-1])
    model.statistics_mean.copy_(statistics.mean((0, 1)))
    model.statistics_std.copy_(statistics.std((0, 1)).clamp_min(1e-3))
    model.delta_scale.fill_(1.0 / float(deltas.std().clamp_min(1e-6)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    # Classes weighted to count alike: a critic that calls everything implausible must not look good.
    positive = float(labels.mean())
    weights = torch.where(labels > 0.5, 0.5 / positive, 0.5 / (1 - positive))

    fingerprint = _examples_fingerprint(examples, settings, training_set_version)
    step, losses = _restore_state(checkpoint_dir, model, optimizer, fingerprint) if resume else (0, [])
    resumed_from = step
    total = settings.epochs * math.ceil(len(examples) / settings.batch_size)
    model.train()
    while step < total:
        batch = torch.from_numpy(_batches(step, len(examples), settings.batch_size, settings.seed))
        logits = model(deltas[batch], statistics[batch])
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[batch], reduction="none")
                * weights[batch]).sum() / weights[batch].sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(round(loss.item(), 6))
        step += 1
        if step % settings.save_every == 0 or step == total:
            _save_state(checkpoint_dir, step, model, optimizer, losses, fingerprint)
        if progress is not None:
            progress(step, total, losses[-1])
    model.eval()
    with torch.inference_mode():
        train_accuracy = float(((model(deltas, statistics) > 0) == (labels > 0.5)).float().mean())

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()[:12]
    metadata = {"format": FORMAT, "architecture": json.dumps(settings.architecture()), "settings": json.dumps(asdict(settings)),
                "feature_extractor": extractor.name, "feature_extractor_version": extractor.version,
                "training_set_version": training_set_version, "seed": str(settings.seed), "random_weights": "false",
                "steps": str(step), "examples": str(len(examples)), "window_frames": str(lengths.pop()),
                "weights_digest": digest}
    path = checkpoint_dir / CRITIC_FILE
    with atomic_path(path) as partial:
        save_file(state, str(partial), metadata=metadata)
    critic = FeatureCritic(model, settings, extractor, metadata)
    return TrainingResult(path, step, losses, resumed_from, round(train_accuracy, 4), len(examples),
                          round(time.perf_counter() - started, 2), critic.identity, critic)


def evaluate(critic: FeatureCritic, examples: Sequence[PlausibilityExample]) -> dict:
    """Held-out accuracy (P ≥ 0.5 means plausible) overall, balanced, per kind, and the majority-class chance."""
    p = critic.probabilities(prepare_examples(examples, critic.extractor, critic.settings.use_flow))
    truth = np.array([e.plausible for e in examples])
    correct = (p >= 0.5) == truth
    kinds = sorted({e.kind for e in examples})
    per_kind = {k: round(float(correct[[e.kind == k for e in examples]].mean()), 4) for k in kinds}
    return {"examples": len(examples), "accuracy": round(float(correct.mean()), 4),
            "balanced_accuracy": round(float((correct[truth].mean() + correct[~truth].mean()) / 2), 4)
            if truth.any() and (~truth).any() else None,
            "chance": round(float(max(truth.mean(), 1 - truth.mean())), 4), "per_kind": per_kind,
            "per_kind_count": {k: int(sum(e.kind == k for e in examples)) for k in kinds}}
