"""Control videos a user brings (from a simulator or a sensor rig) instead of extracted ones.

Naming rule: beside the RGB video ``<stem>.<ext>`` in the landing zone, a file ``<stem>.<kind>.mp4`` (also
``.mov`` / ``.mkv``) with ``kind`` one of ``depth``, ``seg``, ``edge``, ``blur``, ``hdmap``, ``lidar`` is that
video's control of that kind: ``drive_01.mp4`` + ``drive_01.depth.mp4`` + ``drive_01.seg.mp4``. Such files are
never ingested as raw videos of their own (the landing zone skips them), and a user-supplied control is used
in place of the extracted one of the same kind.

A control must line up with its RGB video frame for frame: the same number of frames (``ControlLengthMismatch``),
the same picture size (``ControlSizeMismatch``) and the same frame rate (``ControlRateMismatch``); one that
cannot be decoded is ``ControlUnreadable``. Each is recorded on its row and set aside; the other controls and
clips go on.

Names from the landing zone are data, never paths: a control is looked up by listing the RGB video's own folder
inside the zone and matching names there (``common.drop_zone`` refuses anything that resolves outside).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cosmos_assets.common.drop_zone import OutsideDropZone, assert_inside

USER_CONTROL_KINDS = ("depth", "seg", "edge", "blur", "hdmap", "lidar")
CONTROL_SUFFIXES = (".mp4", ".mov", ".mkv")
_NAME = re.compile(rb"^(?P<stem>.+)\.(?P<kind>" + b"|".join(k.encode() for k in USER_CONTROL_KINDS) + rb")"
                   rb"(?P<ext>" + b"|".join(re.escape(s.encode()) for s in CONTROL_SUFFIXES) + rb")$", re.IGNORECASE)
FPS_TOLERANCE = 0.01  # relative: 29.97 and 30000/1001 are the same rate


class ControlVideoError(ValueError):
    """A user-supplied control video that cannot stand in for its RGB video's control."""

    @property
    def error_class(self) -> str:
        return type(self).__name__


class ControlLengthMismatch(ControlVideoError):
    pass


class ControlSizeMismatch(ControlVideoError):
    pass


class ControlRateMismatch(ControlVideoError):
    pass


class ControlUnreadable(ControlVideoError):
    pass


def control_name_kind(name: bytes | str) -> tuple[bytes, str] | None:
    """(stem, kind) when a file name (a zone-relative path's last part is used) follows the naming rule."""
    base = os.path.basename(os.fsencode(name))
    match = _NAME.match(base)
    if match is None:
        return None
    return match["stem"], match["kind"].decode().lower()


def is_control_video(relative_path: bytes | str) -> bool:
    """Whether a landed file is a control video beside an RGB video (not a raw video of its own)."""
    return control_name_kind(relative_path) is not None


def controls_beside(root: Path, rgb_relative: bytes | str) -> dict[str, bytes]:
    """kind -> zone-relative path of every user-supplied control beside the RGB video ``rgb_relative``.

    The RGB video itself may be gone (landed files are removed once ingested): its folder is listed, not it."""
    rgb = os.fsencode(rgb_relative)
    folder_relative = os.path.dirname(rgb)
    folder = os.path.join(os.fsencode(root), folder_relative)
    try:
        assert_inside(root, os.path.join(folder, b"x"))
        names = sorted(os.listdir(folder))
    except (OutsideDropZone, FileNotFoundError, NotADirectoryError):
        return {}
    stem = os.path.splitext(os.path.basename(rgb))[0]
    found: dict[str, bytes] = {}
    for name in names:
        parsed = control_name_kind(name)
        full = os.path.join(folder, name)
        if parsed and parsed[0] == stem and os.path.isfile(full) and not os.path.islink(full):
            found.setdefault(parsed[1], os.path.join(folder_relative, name))
    return found


@dataclass(frozen=True)
class VideoFacts:
    frames: int
    width: int
    height: int
    fps: float


def check_control(control: VideoFacts, rgb: VideoFacts, kind: str) -> None:
    """Raise the ``ControlVideoError`` that says how a control does not line up with its RGB video."""
    if (control.width, control.height) != (rgb.width, rgb.height):
        raise ControlSizeMismatch(f"the {kind} control is {control.width}x{control.height}; its RGB video is "
                                  f"{rgb.width}x{rgb.height}")
    if abs(control.fps - rgb.fps) > FPS_TOLERANCE * max(rgb.fps, 1e-6):
        raise ControlRateMismatch(f"the {kind} control runs at {control.fps:.3f} fps; its RGB video at {rgb.fps:.3f} fps")
    if control.frames != rgb.frames:
        raise ControlLengthMismatch(f"the {kind} control has {control.frames} frames; its RGB video has {rgb.frames}")


def probe_control(path: str | os.PathLike) -> VideoFacts:
    """Frames, size and rate of a control video (every frame decoded: a control is short and must be whole)."""
    from cosmos_assets.curation.probe import VideoRejected, probe_video

    try:
        probe = probe_video(path)
    except VideoRejected as rejected:
        raise ControlUnreadable(f"{rejected.error_class}: {rejected.message}") from None
    return VideoFacts(probe.frames, probe.width, probe.height, probe.average_fps)
