"""Critics: a score in [0, 1] per candidate video, with the critic's identity and version.

- ``MetricCritic`` (the ``local`` profile): real signals measured against the source clip. Structure kept
  (Canny-F1 with a small tolerance, and SSIM of blurred frames: the Transfer control-fidelity metrics of the
  cookbook), motion kept (frame-to-frame change like the source's: a frozen or shuffled video fails),
  no added flicker (frame-mean brightness following the source), and sane exposure (not blank, black or
  blown out). The score is the geometric mean of the five, so one broken aspect sinks the candidate.
- ``ReasonCritic`` (``gpu``): Cosmos-Reason1 as the video critic of cosmos-reason1 ``examples/video_critic``:
  K sampled trials of the anomaly question, each answered ``<answer>Yes|No</answer>``; the score is the
  share of parsed trials answering No. In ``rubric`` mode each trial rates physical plausibility 1–5 (the
  VideoPhy-2 rubric of GR00T-Dreams) and the score is the mean rating mapped to [0, 1]. Trials whose text has
  no usable answer are kept with their text and counted; they never count as Yes or No.

Scores are per video; choosing among the candidates of a request is ``selection``'s job.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from cosmos_assets.common.knobs import knob
from cosmos_assets.models.vlm import GenerationSettings, VideoPrompt, parse_reasoned_answer

METRIC_CRITIC_VERSION = "metric-critic/1"
METRIC_COMPONENTS = ("edge_f1", "blur_ssim", "motion_fidelity", "temporal_alignment", "temporal_consistency", "exposure")
CRITIC_MODES = ("metric", "reason", "rubric")


# --- the metric critic -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricCriticConfig:
    """How the metric critic measures a candidate against its source window."""

    analysis_width: int = knob(
        320, "Width in pixels at which frames are measured (the source is resized to the candidate first).")
    edge_tolerance_px: int = knob(2, "An edge within this many pixels of a source edge counts as kept.")
    ssim_blur_sigma: float = knob(
        2.0, "Gaussian blur (sigma, pixels) before SSIM, so it compares structure, not texture or rain streaks.")
    coarse_width: int = knob(64, "Width in pixels at which motion is compared.")
    still_change: float = knob(
        0.002, "Coarse frame-to-frame change (0..1 of the luma range) below which a video counts as still.")
    flicker_scale: float = knob(
        0.01, "Added frame-to-frame brightness change (0..1 of the luma range) that costs the score a factor e.")
    min_mean_luma: float = knob(0.03, "Frames darker on average (0..1) are black (night scenes sit well above this).")
    min_luma_std: float = knob(0.02, "Frames with a flatter luma (standard deviation, 0..1) are blank.")
    max_clipped_fraction: float = knob(0.4, "Frames with a larger share (0..1) of pixels at 0 or 255 are blown out.")

    def version(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]
        return f"{METRIC_CRITIC_VERSION}+{digest}"


@dataclass(frozen=True)
class MetricScore:
    score: float
    edge_f1: float
    blur_ssim: float
    motion_fidelity: float
    temporal_alignment: float
    temporal_consistency: float
    exposure: float

    def components(self) -> dict:
        return {name: getattr(self, name) for name in METRIC_COMPONENTS}


def _analysis_gray(frames: np.ndarray, width: int) -> np.ndarray:
    """Luma at the analysis width, uint8 T×H×W, from RGB (T×H×W×3) or already gray (T×H×W) frames."""
    height = max(16, round(frames.shape[1] * width / frames.shape[2]))
    out = np.empty((len(frames), height, width), np.uint8)
    for index, frame in enumerate(frames):
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
        out[index] = gray if gray.shape == (height, width) else cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA)
    return out


def _levels(gray: np.ndarray, quantile: float) -> np.ndarray:
    """Per frame, the lowest level (0..1) at which ``quantile`` of the pixels are at or below, from a
    256-bin histogram of the uint8 frames (exact for them, and far cheaper than sorting)."""
    frames = len(gray)
    offsets = (np.arange(frames, dtype=np.int64) * 256)[:, None]
    counts = np.bincount((gray.reshape(frames, -1) + offsets).ravel(), minlength=256 * frames).reshape(frames, 256)
    cumulative = counts.cumsum(axis=1) / counts.sum(axis=1, keepdims=True)
    return (cumulative < quantile).sum(axis=1).astype(np.float32)[:, None, None] / 255.0


def _normalised(gray: np.ndarray) -> np.ndarray:
    """Per frame, the 2nd..98th percentile stretched to [0, 1]: a night or fog grade keeps its structure."""
    low, high = _levels(gray, 0.02), _levels(gray, 0.98)
    return np.clip((gray / np.float32(255) - low) / np.maximum(high - low, 0.02), 0, 1)


def _edges(normalised: np.ndarray) -> np.ndarray:
    return np.stack([cv2.Canny(cv2.GaussianBlur((f * 255).astype(np.uint8), (0, 0), 1.0), 60, 140) > 0 for f in normalised])


def _edge_f1(candidate: np.ndarray, source: np.ndarray, tolerance: int) -> float:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
    scores = []
    for c, s in zip(candidate, source):
        if not c.any() and not s.any():
            scores.append(1.0)
            continue
        if not c.any() or not s.any():
            scores.append(0.0)
            continue
        near_source = cv2.dilate(s.astype(np.uint8), kernel) > 0
        near_candidate = cv2.dilate(c.astype(np.uint8), kernel) > 0
        precision = (c & near_source).sum() / c.sum()
        recall = (s & near_candidate).sum() / s.sum()
        scores.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    return float(np.mean(scores))


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Gaussian window, sigma 1.5) of two images in [0, 1]."""
    c1, c2 = 0.01**2, 0.03**2
    blur = lambda x: cv2.GaussianBlur(x, (0, 0), 1.5)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim.mean())


def _coarse(normalised: np.ndarray, width: int) -> np.ndarray:
    height = max(4, round(normalised.shape[1] * width / normalised.shape[2]))
    return np.stack([cv2.GaussianBlur(cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA), (0, 0), 1.0)
                     for f in normalised])


def _motion_fidelity(candidate: np.ndarray, source: np.ndarray, still: float) -> float:
    """How much of the source's frame-to-frame change the candidate makes, at the same times.

    The candidate's changes are projected on the source's (sum of products over the sum of squares): change the
    source does not have (rain streaks, snowflakes) is uncorrelated with it and adds nothing, a frozen video has
    no change (ratio 0), a shuffled or reversed one changes at the wrong times (ratio near 0 or negative). The
    ratio r becomes exp(-|log r|): 1 when the candidate moves like the source. ``still`` is a change level
    added to both sides, so two still videos agree."""
    if len(source) < 2:
        return 1.0
    candidate_change, source_change = np.diff(candidate, axis=0), np.diff(source, axis=0)
    floor = still**2 * source_change.size
    ratio = (float((candidate_change * source_change).sum()) + floor) / (float((source_change**2).sum()) + floor)
    return float(np.exp(-abs(np.log(max(ratio, 1e-3)))))


def _temporal_alignment(candidate: np.ndarray, source: np.ndarray, still: float) -> float:
    """Is each candidate frame closest to the source frame of its own time?

    On frames minus their temporal mean (a grade or a static overlay cancels out), the correlation of candidate
    frame i with every source frame j: 1 when j = i is the best match, 0 when it is no better than the median.
    A still source (nothing to align against) gives 1."""
    candidate_dynamic = (candidate - candidate.mean(axis=0)).reshape(len(candidate), -1)
    source_dynamic = (source - source.mean(axis=0)).reshape(len(source), -1)
    if np.abs(source_dynamic).mean() < still:
        return 1.0
    candidate_dynamic /= np.linalg.norm(candidate_dynamic, axis=1, keepdims=True) + 1e-6
    source_dynamic /= np.linalg.norm(source_dynamic, axis=1, keepdims=True) + 1e-6
    correlation = candidate_dynamic @ source_dynamic.T
    own, median, best = np.diag(correlation), np.median(correlation, axis=1), correlation.max(axis=1)
    return float(np.clip((own - median) / (best - median + 1e-6), 0, 1).mean())


def _exposure(gray: np.ndarray, config: MetricCriticConfig) -> float:
    """1 for normally exposed frames; the worst tenth of the frames decides (one blank stretch is enough)."""
    mean = gray.mean(axis=(1, 2))
    std = gray.std(axis=(1, 2))
    clipped = ((gray <= 2 / 255) | (gray >= 253 / 255)).mean(axis=(1, 2))
    per_frame = (
        np.clip(mean / config.min_mean_luma, 0, 1)
        * np.clip((1 - mean) / config.min_mean_luma, 0, 1)
        * np.clip(std / config.min_luma_std, 0, 1)
        * np.clip(1 - np.maximum(0, clipped - config.max_clipped_fraction) / (1 - config.max_clipped_fraction), 0, 1)
    )
    return float(np.percentile(per_frame, 10))


def align_source(source: np.ndarray, source_fps: float, candidate_frames: int, candidate_fps: float) -> np.ndarray:
    """The source frame shown at each candidate frame's time (nearest earlier frame)."""
    times = np.arange(candidate_frames) / candidate_fps
    indices = np.minimum(np.floor(times * source_fps + 1e-6).astype(int), len(source) - 1)
    return source[indices]


class MetricCritic:
    """Scores a candidate against the source frames shown at the same times (see ``align_source``)."""

    mode = "metric"

    def __init__(self, config: MetricCriticConfig = MetricCriticConfig()):
        self.config = config

    @property
    def identity(self) -> dict:
        return {"critic": "metric", "critic_version": self.config.version(), "critic_model": None, "tiny_random": False}

    def score(self, candidate: np.ndarray, source: np.ndarray) -> MetricScore:
        """``candidate`` and ``source``: uint8 frames, RGB (T×H×W×3) or luma (T×H×W), the same count and times."""
        if len(candidate) != len(source):
            raise ValueError(f"{len(candidate)} candidate frames but {len(source)} source frames; align them first")
        config = self.config
        width = min(config.analysis_width, candidate.shape[2])
        c_u8 = _analysis_gray(candidate, width)
        s_u8 = _analysis_gray(source, width)
        if s_u8.shape != c_u8.shape:
            s_u8 = np.stack([cv2.resize(f, c_u8.shape[2:0:-1], interpolation=cv2.INTER_AREA) for f in s_u8])
        c_norm, s_norm = _normalised(c_u8), _normalised(s_u8)
        c_gray, s_gray = c_u8 / np.float32(255), s_u8 / np.float32(255)

        edge_f1 = _edge_f1(_edges(c_norm), _edges(s_norm), config.edge_tolerance_px)
        sigma = config.ssim_blur_sigma
        c_blur = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in c_norm])
        s_blur = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in s_norm])
        blur_ssim = float(np.mean([max(0.0, _ssim(c, s)) for c, s in zip(c_blur, s_blur)]))

        # Motion, on coarse frames where thin overlays (rain streaks, snowflakes) average out: the candidate
        # changes from frame to frame as much as the source does (a frozen video far less, a shuffled one far
        # more), and each frame is closest to the source frame of its own time (shuffled or reversed ones are not).
        c_coarse, s_coarse = _coarse(c_norm, config.coarse_width), _coarse(s_norm, config.coarse_width)
        motion_fidelity = _motion_fidelity(c_coarse, s_coarse, config.still_change)
        temporal_alignment = _temporal_alignment(c_coarse, s_coarse, config.still_change)

        # Flicker: frame-mean brightness steps beyond the source's own (scaled by the grade's brightness).
        c_mean, s_mean = c_gray.mean(axis=(1, 2)), s_gray.mean(axis=(1, 2))
        gain = c_mean.mean() / max(s_mean.mean(), 1e-3)
        excess = np.abs(np.diff(c_mean) - gain * np.diff(s_mean)).mean() if len(c_mean) > 1 else 0.0
        temporal_consistency = float(np.exp(-excess / config.flicker_scale))

        exposure = _exposure(c_gray, config)
        components = np.array([edge_f1, blur_ssim, motion_fidelity, temporal_alignment, temporal_consistency, exposure])
        score = float(np.exp(np.log(np.clip(components, 1e-4, 1.0)).mean()))
        return MetricScore(round(score, 6), *(round(float(c), 6) for c in components))


# --- the Reason critic -----------------------------------------------------------------------------------

# After cosmos-reason1 examples/video_critic: overview, per-component analysis, a final Yes/No.
ANOMALY_SYSTEM_PROMPT = (
    "You are a helpful video analyzer. The goal is to identify artifacts and anomalies in the video. Watch carefully "
    "and focus on the following details:\n"
    "* Physical accuracy (gravity, collision, object interaction, fluid dynamics, object permanence)\n"
    "* Common sense\n* Cause and effect\n* Temporal consistency\n* Spatial consistency\n* Human motion\n"
    "* Material and texture realism\n\n"
    "Commonly found artifacts in generated videos: objects penetrating each other, entities appearing out of nowhere "
    "or disappearing, changes of shape, size, colour or texture without cause, motion that breaks physics, "
    "flickering, warping or melting surfaces.\n\n"
    "First give an overview of the video. Then, for each component above, describe what you see and say whether it "
    "shows an anomaly (Yes or No). Think inside <think></think> tags, then give the final answer inside "
    "<answer></answer> tags."
)
ANOMALY_QUESTION = "Does the video contain any anomalies or artifacts? Answer Yes or No."

# The VideoPhy-2 physical-commonsense rubric used by GR00T-Dreams to score rollouts 1-5.
RUBRIC_SYSTEM_PROMPT = (
    "You are a helpful video analyzer who rates how well a generated video follows physical commonsense.\n"
    "5: fully plausible; objects, motion and interactions obey physics throughout.\n"
    "4: plausible with minor glitches that do not change what happens.\n"
    "3: noticeable violations (warping, objects changing shape or size) but the action is recognisable.\n"
    "2: major violations (objects appearing, disappearing or passing through each other).\n"
    "1: physically impossible or incoherent throughout.\n"
    "Think inside <think></think> tags, then give the rating inside <answer></answer> tags."
)
RUBRIC_QUESTION = "Rate the physical commonsense of this video from 1 to 5."

_YES_NO = re.compile(r"^\W*(yes|no)\b", re.I)
_RATING = re.compile(r"(?<![\d.])([1-5])(?![\d.])")


@dataclass(frozen=True)
class Trial:
    text: str
    thinking: str
    answer: str  # "Yes" / "No" / "1".."5" when parsed, else the raw answer tag content (maybe empty)
    parsed: bool
    problem: str | None = None  # why an answer was not parsed


def parse_verdict(text: str) -> Trial:
    """A Reason trial: the last ``<answer>`` must start with Yes or No."""
    reasoned = parse_reasoned_answer(text)
    if not reasoned.parsed:
        return Trial(text, reasoned.thinking, "", False, "no <answer> tag")
    match = _YES_NO.match(reasoned.answer)
    if not match:
        return Trial(text, reasoned.thinking, reasoned.answer, False, "answer is neither Yes nor No")
    return Trial(text, reasoned.thinking, match.group(1).capitalize(), True)


def parse_rating(text: str) -> Trial:
    """A rubric trial: the last ``<answer>`` holds exactly one rating 1-5 (``4``, ``4/5``, ``Score: 4``)."""
    reasoned = parse_reasoned_answer(text)
    if not reasoned.parsed:
        return Trial(text, reasoned.thinking, "", False, "no <answer> tag")
    ratings = {m.group(1) for m in _RATING.finditer(reasoned.answer.replace("/5", "").replace("out of 5", ""))}
    if len(ratings) != 1:
        return Trial(text, reasoned.thinking, reasoned.answer, False,
                     "no rating 1-5 in the answer" if not ratings else "several ratings in the answer")
    return Trial(text, reasoned.thinking, ratings.pop(), True)


@dataclass
class Critique:
    score: float | None  # None when no trial could be parsed
    trials: list[Trial] = field(default_factory=list)
    rating_mean: float | None = None  # rubric mode

    @property
    def parsed(self) -> int:
        return sum(t.parsed for t in self.trials)

    @property
    def parse_failures(self) -> int:
        return len(self.trials) - self.parsed


def reason_score(trials: list[Trial]) -> float | None:
    answers = [t.answer for t in trials if t.parsed]
    return round(answers.count("No") / len(answers), 6) if answers else None


def rubric_score(trials: list[Trial]) -> tuple[float | None, float | None]:
    ratings = [int(t.answer) for t in trials if t.parsed]
    if not ratings:
        return None, None
    mean = float(np.mean(ratings))
    return round((mean - 1) / 4, 6), round(mean, 4)


def critic_prompts(mode: str) -> tuple[str, str]:
    """(system prompt, question) of a Reason critic mode."""
    return (ANOMALY_SYSTEM_PROMPT, ANOMALY_QUESTION) if mode == "reason" else (RUBRIC_SYSTEM_PROMPT, RUBRIC_QUESTION)


def critic_prompt(mode: str, frames: np.ndarray, fps: float) -> VideoPrompt:
    """What the critic in ``mode`` asks about one video; critic training builds its examples with it too, so a
    tuned critic is trained on exactly the prompt it is asked at inference."""
    system, question = critic_prompts(mode)
    return VideoPrompt(frames, fps, question, system)


class ReasonCritic:
    """A vision-language model (``TransformersVLM`` or ``EndpointVLM``) as critic, K trials per video."""

    def __init__(self, vlm, settings: GenerationSettings, mode: str = "reason"):
        if mode not in ("reason", "rubric"):
            raise ValueError(f"ReasonCritic mode {mode!r}; expected reason or rubric")
        self.vlm, self.settings, self.mode = vlm, settings, mode

    @property
    def prompts(self) -> tuple[str, str]:
        return critic_prompts(self.mode)

    @property
    def identity(self) -> dict:
        model = self.vlm.identity
        recipe = json.dumps({"prompts": self.prompts, "settings": asdict(self.settings), "model_version": model["model_version"]},
                            sort_keys=True)
        return {"critic": f"{self.mode}:{model['model']}", "critic_model": model["model"],
                "critic_version": f"{model['model_version']}+{hashlib.sha256(recipe.encode()).hexdigest()[:8]}",
                "tiny_random": bool(model["tiny_random"])}

    def critique(self, videos: list[tuple[np.ndarray, float]]) -> list[Critique]:
        """One critique per (frames, fps); the videos go to the model as one batch."""
        texts = self.vlm.generate([critic_prompt(self.mode, frames, fps) for frames, fps in videos], self.settings)
        return [judge_trials(self.mode, trial_texts) for trial_texts in texts]


def judge_trials(mode: str, trial_texts: list[str]) -> Critique:
    """One critique from the K trial texts of a ``reason`` or ``rubric`` critic (the image critic's too)."""
    if mode == "reason":
        trials = [parse_verdict(t) for t in trial_texts]
        return Critique(reason_score(trials), trials)
    trials = [parse_rating(t) for t in trial_texts]
    score, mean = rubric_score(trials)
    return Critique(score, trials, mean)


def trials_json(trials: list[Trial]) -> str:
    """Every trial's text, reasoning and answer, for the table (nothing is dropped)."""
    return json.dumps([asdict(t) for t in trials], ensure_ascii=False)
