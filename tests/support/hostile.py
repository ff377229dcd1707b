"""Hostile files a member could upload under an innocent name: manifests and scripts that make a bare ffmpeg
read other local files, and still formats whose decoders Pillow would reach (EPS runs Ghostscript)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

from PIL import Image


def dash_manifest(target: Path) -> bytes:
    """A DASH manifest whose <BaseURL> is a local absolute path: a bare ffmpeg decodes `target` through it."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT1S" '
        'minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">\n'
        '  <Period><AdaptationSet mimeType="video/mp4">\n'
        '    <Representation id="1" bandwidth="100000" width="64" height="48" codecs="avc1.64000a">\n'
        f"      <BaseURL>{target}</BaseURL><SegmentBase/>\n"
        "    </Representation>\n"
        "  </AdaptationSet></Period>\n"
        "</MPD>\n"
    ).encode()


def hls_playlist(target: Path) -> bytes:
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{target}\n#EXT-X-ENDLIST\n".encode()


def ffconcat_script(target: Path) -> bytes:
    return f"ffconcat version 1.0\nfile '{target}'\n".encode()


def eps_picture() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(buffer, "EPS")
    return buffer.getvalue()


def psd_picture(width: int = 16, height: int = 16) -> bytes:
    """A minimal RGB Photoshop file (header, empty sections, raw planes) that Pillow itself opens."""
    header = b"8BPS" + struct.pack(">H", 1) + b"\0" * 6 + struct.pack(">HIIHH", 3, height, width, 8, 3)
    sections = struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0)
    return header + sections + bytes([200]) * (width * height) + bytes(width * height) * 2
