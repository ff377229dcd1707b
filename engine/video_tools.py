"""The seed package's `video_tools` under its own name; the code is `engine.media.video_tools`."""

from __future__ import annotations

from engine.media.video_tools import (
    copy_video_audio,
    count_video_frames,
    encode_video,
    extract_video_frames,
    list_stills,
    make_timelapse,
    video_duration,
)

__all__ = [
    "copy_video_audio",
    "count_video_frames",
    "encode_video",
    "extract_video_frames",
    "list_stills",
    "make_timelapse",
    "video_duration",
]
