"""Where a stream's recordings go: ``DIR/APP/NAME/NAME-START[-N].EXT``, never outside ``DIR``.

Plain Python, no Twisted.  The layout is fixed so that whoever lists or serves
the recordings (the API, ``/recordings/APP/NAME/FILE``) finds them from the
stream's names alone:

- ``DIR`` is ``--record``;
- ``APP`` and ``NAME`` are the application and stream name, each made one safe
  path component by :func:`safe_component` (a multi-segment application such
  as ``live/sub`` is one directory, ``live%2Fsub``);
- the file is ``NAME-START.EXT``: ``START`` the UTC time the file was opened,
  ``YYYYmmddTHHMMSSZ``, with ``-1``, ``-2``… when a file of that second exists;
  ``EXT`` is ``mp4`` or ``flv``;
- a file being written carries :data:`PART_SUFFIX` after its name and loses it
  when it is finished.

Whatever a name holds (``../``, an absolute path, NUL, a backslash, a leading
dot, thousands of characters), the component is made of ``[A-Za-z0-9._%-]``
only, never starts with a dot, and is at most :data:`MAX_COMPONENT` characters.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from urllib.parse import quote

__all__ = [
    "EXTENSIONS",
    "MAX_COMPONENT",
    "PART_SUFFIX",
    "recording_name",
    "resolve_recording",
    "safe_component",
    "stream_dir",
]

#: The suffix of a file being written; renamed away when the file is finished.
PART_SUFFIX = ".part"

#: The extensions of finished recordings, by format.
EXTENSIONS = {"fmp4": "mp4", "flv": "flv"}

#: Longest path component made from a name.  File systems allow 255 bytes; the
#: file name adds the start time, a counter, the extension and the part suffix
#: (about 40 more), so a component stays well below that.
MAX_COMPONENT = 120

#: Characters of a hash that end a component cut to :data:`MAX_COMPONENT`, so two
#: long names that share their beginning still get two directories.
_HASH_CHARS = 16


def safe_component(text: str) -> str:
    """*text* as one path component that cannot leave its directory.

    Percent-encodes every byte of its UTF-8 but ASCII letters, digits, ``.``,
    ``_``, ``-`` and ``~`` (so ``/``, ``\\``, NUL and ``%`` itself are encoded and
    different names stay different), encodes a leading dot (no ``.``, ``..`` or
    hidden file), and cuts a long result, ending it with a hash of *text*.
    """
    encoded = quote(text, safe="", errors="surrogatepass")
    if not encoded:
        return "%"  # the empty name: "%" alone is what no encoded name can be
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    if len(encoded) > MAX_COMPONENT:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        head = encoded[: MAX_COMPONENT - _HASH_CHARS - 1]
        # never cut inside a %XX escape
        cut = head.rfind("%", len(head) - 2)
        if cut != -1:
            head = head[:cut]
        encoded = f"{head}-{digest[:_HASH_CHARS]}"
    return encoded


def stream_dir(root: Path, app: str, name: str) -> Path:
    """The directory of the recordings of stream *app*/*name* under *root*."""
    return root / safe_component(app) / safe_component(name)


def recording_name(name: str, start: float, extension: str, counter: int = 0) -> str:
    """The file name of a recording of *name* opened at *start* (Unix seconds), finished.

    :param counter: 0 for the first file of that second, then 1, 2…
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start))
    suffix = f"-{counter}" if counter else ""
    return f"{safe_component(name)}-{stamp}{suffix}.{extension}"


def resolve_recording(root: Path, app: str, name: str, filename: str) -> Path | None:
    """The finished recording *filename* of *app*/*name* under *root*, or ``None``.

    ``None`` unless *filename* is a plain file name of a finished recording
    (no separator, no leading dot, no NUL, an extension of :data:`EXTENSIONS`,
    not a part file) that exists as a regular file whose real path (symlinks
    resolved) is inside the stream's directory.
    """
    if (
        not filename
        or len(filename) > 255
        or filename.startswith(".")
        or any(c in filename for c in "/\\\0")
        or filename.rpartition(".")[2] not in EXTENSIONS.values()
    ):
        return None
    directory = stream_dir(root, app, name)
    candidate = directory / filename
    try:
        real = candidate.resolve(strict=True)
        real_dir = directory.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if real.parent != real_dir or not real.is_file():
        return None
    return candidate
