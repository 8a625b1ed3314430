"""The laptop critic, measured: self-supervised plausibility labels from the packaged real sample videos,
a feature critic trained on some source videos and tested on the others (never one video on both sides).

Every source video is held out once (leave-one-video-out): the critic is trained on the clips of the other
four and tested on the held-out one's. Prints held-out accuracy against chance (the majority class),
balanced accuracy, accuracy per variant kind, and times; ``--ablations`` also trains the critic without
the feature changes and without optical flow, to see what each input buys.

    .venv/bin/python bench/feature_critic.py [--ablations] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cosmos_assets.critic_training.feature_critic import (
    FeatureCriticSettings, FeatureExtractor, evaluate, load_feature_critic, train_feature_critic)
from cosmos_assets.critic_training.self_supervised import (
    SelfSupervisedSettings, SourceClip, clip_from_file, plausibility_variants)

SAMPLES = Path(__file__).resolve().parents[1] / "cosmos_assets" / "samples"
CLIP_FRAMES = 32  # long videos are cut into clips of 3.2 s at 10 fps, as curation would cut them into shots


def sample_clips(settings: SelfSupervisedSettings, max_frames: int = 400) -> list[SourceClip]:
    clips = []
    for path in sorted(p for p in SAMPLES.iterdir() if p.suffix in (".mp4", ".mkv")):
        whole = clip_from_file(path, path.stem, path.stem, settings, max_frames=max_frames)
        pieces = max(1, len(whole.frames) // CLIP_FRAMES)
        for k in range(pieces):
            frames = whole.frames if pieces == 1 else whole.frames[k * CLIP_FRAMES:(k + 1) * CLIP_FRAMES]
            clips.append(SourceClip(f"{path.stem}#{k}", path.stem, frames, whole.fps))
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ablations", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per fold")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    labels = SelfSupervisedSettings()
    started = time.perf_counter()
    clips = sample_clips(labels)
    variants = [plausibility_variants(clip, labels) for clip in clips]
    examples = [e for v in variants for e in v.examples]
    skipped = [s for v in variants for s in v.skipped]
    print(f"{len(clips)} clips from {len({c.video for c in clips})} videos, {len(examples)} examples "
          f"({sum(e.plausible for e in examples)} plausible), {len(skipped)} variants skipped as not visibly "
          f"implausible; decode + labels {time.perf_counter() - started:.1f} s")
    for s in skipped[:4]:
        print(f"  skipped {s.clip_id} {s.kind}: {s.reason}")

    extractor = FeatureExtractor("cpu")
    started = time.perf_counter()
    for clip in clips:
        extractor.clip_inputs(clip)
    frames = sum(len(c.frames) for c in clips)
    print(f"features of {frames} frames: {time.perf_counter() - started:.1f} s "
          f"({1000 * (time.perf_counter() - started) / frames:.0f} ms/frame, {args.threads} thread(s))")

    configurations = {"default: trajectory statistics + flow": FeatureCriticSettings()}
    if args.ablations:
        configurations["statistics, no flow"] = FeatureCriticSettings(use_flow=False)
        configurations["statistics + flow + projected feature changes (16)"] = FeatureCriticSettings(projection=16)
        configurations["statistics + projected feature changes (16), no flow"] = FeatureCriticSettings(projection=16, use_flow=False)
    videos = sorted({c.video for c in clips})
    for name, settings in configurations.items():
        print(f"\n== {name}")
        pooled_correct, pooled_truth, kinds, balanced = [], [], {}, []
        train_seconds = []
        for held_out in videos:
            train = [e for e in examples if e.video != held_out]
            test = [e for e in examples if e.video == held_out]
            for seed in range(args.seeds):
                with tempfile.TemporaryDirectory() as folder:
                    result = train_feature_critic(train, replace(settings, seed=seed), folder, "bench", extractor=extractor)
                    critic = load_feature_critic(result.path)
                    critic.extractor = extractor  # same features, already cached
                    report = evaluate(critic, test)
                train_seconds.append(result.seconds)
                print(f"  held out {held_out:28s} seed {seed}: train {result.examples:3d} ex, acc {result.train_accuracy:.2f}, "
                      f"{result.seconds:4.1f} s | test {report['examples']:3d} ex: accuracy {report['accuracy']:.3f} "
                      f"(chance {report['chance']:.3f}), balanced {report['balanced_accuracy']}")
                for kind, accuracy in report["per_kind"].items():
                    count = report["per_kind_count"][kind]
                    right, seen = kinds.get(kind, (0.0, 0))
                    kinds[kind] = (right + accuracy * count, seen + count)
                balanced.append(report["balanced_accuracy"])
                pooled_correct.append(report["accuracy"] * report["examples"])
                pooled_truth.append((report["examples"], sum(e.plausible for e in test)))
        total = sum(n for n, _ in pooled_truth)
        plausible = sum(p for _, p in pooled_truth)
        print(f"  pooled held-out accuracy {sum(pooled_correct) / total:.3f} over {total} examples; "
              f"chance (majority class) {max(plausible, total - plausible) / total:.3f}; "
              f"mean balanced accuracy over folds {np.mean(balanced):.3f} (chance 0.5); "
              f"training {np.mean(train_seconds):.1f} s per fold")
        print("  per kind: " + ", ".join(f"{k} {r / n:.2f} ({n})" for k, (r, n) in sorted(kinds.items())))


if __name__ == "__main__":
    main()
