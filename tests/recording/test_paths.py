"""Recording paths: whatever a stream's name holds, its files stay inside the directory."""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamserver.recording.paths import (
    MAX_COMPONENT,
    recording_name,
    resolve_recording,
    safe_component,
    stream_dir,
)

SAFE = set(string.ascii_letters + string.digits + "._%-~")

HOSTILE = [
    "..",
    ".",
    "../../etc/passwd",
    "/etc/passwd",
    "a/../../b",
    "nul\0byte",
    "back\\slash",
    ".hidden",
    "",
    "x" * 5000,
    "%2e%2e",
    "é" * 300,
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_stay_inside(tmp_path: Path, name: str) -> None:
    directory = stream_dir(tmp_path, name, name)
    assert directory.parent.parent == tmp_path
    for part in (directory.parent.name, directory.name):
        assert part not in ("", ".", "..")
        assert not part.startswith(".")
        assert len(part) <= MAX_COMPONENT
        assert set(part) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%-~"
        )
    directory.mkdir(parents=True)  # the file system takes it
    file_name = recording_name(name, 0, "mp4", 3)
    (directory / (file_name + ".part")).write_bytes(b"")
    assert file_name.endswith("-19700101T000000Z-3.mp4")


@given(st.text(max_size=300))
def test_components_are_distinct_and_safe(name: str) -> None:
    component = safe_component(name)
    assert "/" not in component and "\\" not in component and "\0" not in component
    assert not component.startswith(".")
    assert len(component) <= MAX_COMPONENT
    assert component != safe_component(name + "x")


def test_recording_name_counter_and_time() -> None:
    assert recording_name("cam", 1764590400, "flv") == "cam-20251201T120000Z.flv"
    assert recording_name("cam", 1764590400, "flv", 1) == "cam-20251201T120000Z-1.flv"


def test_resolve_only_finished_files_inside(tmp_path: Path) -> None:
    directory = stream_dir(tmp_path, "live", "cam")
    directory.mkdir(parents=True)
    (directory / "cam-1.mp4").write_bytes(b"x")
    (directory / "cam-2.mp4.part").write_bytes(b"x")
    (directory / "cam-3.txt").write_bytes(b"x")
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"s")
    os.symlink(outside, directory / "link.mp4")
    assert resolve_recording(tmp_path, "live", "cam", "cam-1.mp4") == directory / "cam-1.mp4"
    for bad in (
        "cam-2.mp4.part",
        "cam-3.txt",
        "link.mp4",
        "../secret.mp4",
        "..",
        ".mp4",
        "a\0.mp4",
        "missing.mp4",
        "x" * 300 + ".mp4",
        "..\\secret.mp4",
    ):
        assert resolve_recording(tmp_path, "live", "cam", bad) is None, bad
    assert resolve_recording(tmp_path, "live/../..", "cam", "cam-1.mp4") is None
