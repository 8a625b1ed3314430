"""H.264 encoder settings that make an encoded file a function of its frames and settings alone.

Clips (exact de-duplication compares their bytes) and synthetic candidates (a regenerated candidate must
reproduce the one it replaces) are content-addressed, so their bytes must not depend on the machine, its
load or the process. libx264 as PyAV ships it is not, by default, on two counts (measured on this
project's clips, bench/RESULTS.md "Deterministic H.264"):

- macroblock-tree rate control (``mbtree``) gave a different bitstream in roughly one encode out of five,
  with the same frames, in the same or a fresh process, whatever the thread count (``threads=1`` too).
  Without it, every encode was identical, and identical across x264's SSE4.2, AVX, AVX2 and AVX-512 code
  paths (only SSE2-only CPUs, pre-2008, choose differently).
- the number of frame threads changes the motion-vector range each thread may search, so ``threads=auto``
  (1.5 per core) encodes differently on a laptop and on a 16-core box: the count is fixed instead.
"""

from __future__ import annotations

# Frame threads of every encoder; fixed so a file's bytes do not depend on the machine's core count.
ENCODER_THREADS = 4


def h264_options(preset: str, crf: int) -> dict[str, str]:
    """libx264 options for a reproducible encode at ``preset`` / ``crf`` (PyAV ``stream.options``)."""
    return {"preset": preset, "crf": str(crf), "threads": str(ENCODER_THREADS), "x264-params": "mbtree=0"}
