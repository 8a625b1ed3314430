"""Where models run: device and dtype choice, and the one process-wide cache of loaded models."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Hashable
from typing import Any

import torch

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def choose_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} was configured but this machine has no CUDA device")
    return device


def choose_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    """CUDA: bfloat16. CPU: float32 — bf16 matmuls on CPUs without AMX are several times slower."""
    if requested == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[requested]
    except KeyError:
        raise ValueError(f"dtype {requested!r}; expected auto or one of {', '.join(_DTYPES)}") from None


class ModelCache:
    """Loaded models by key, so a model is loaded once per process and shared by every asset.

    ``release`` drops them all (called when a run ends, so a long-lived process gives memory back).
    """

    def __init__(self) -> None:
        self._models: dict[Hashable, Any] = {}
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Lock] = {}  # one lock per key being loaded

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """The model under ``key``, loaded once. Two threads asking for one key load it once; different keys load
        at the same time (a step loads its text model on a thread while it loads and runs its video model)."""
        with self._lock:
            if key in self._models:
                return self._models[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._models:
                    return self._models[key]
            model = load()
            with self._lock:
                self._models[key] = model
                self._loading.pop(key, None)
            return model

    def __contains__(self, key: Hashable) -> bool:
        return key in self._models

    def __len__(self) -> int:
        return len(self._models)

    def release(self) -> None:
        with self._lock:
            self._models.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


MODELS = ModelCache()
