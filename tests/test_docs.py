"""The docs state the code's constants: each claim is read from the text and held to the code.

Docs drift when a constant changes and the sentence about it does not (the time
watermarks once moved from a quarter and a half to a sixth and a third, and three
places kept the old words).  Each test here finds one kind of claim in the docs,
the README and the help text, and compares it with the value the code uses.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamserver.config import ServerConfig
from streamserver.media import viewer
from streamserver.options import OPTIONS
from streamserver.policy import PolicyLimits

ROOT = Path(__file__).resolve().parent.parent
BACKPRESSURE = (ROOT / "docs" / "backpressure.md").read_text()
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text()
README = (ROOT / "README.md").read_text()
POLICY_SOURCE = (ROOT / "src" / "streamserver" / "policy.py").read_text()

_FRACTION_WORDS = {"half": 2, "third": 3, "quarter": 4, "fourth": 4, "fifth": 5, "sixth": 6}

#: The divisors of max_lag_ms the code uses for its two time watermarks.
LOW_DIVISOR = 6000 // PolicyLimits(max_lag_ms=6000).low_ms
HIGH_DIVISOR = 6000 // PolicyLimits(max_lag_ms=6000).high_ms


def _help(flag: str) -> str:
    return next(option.help for option in OPTIONS if option.flag == flag)


def _two_fractions(text: str, pattern: str) -> tuple[int, int]:
    found = re.search(pattern, text, re.S)
    assert found is not None, f"no claim matching {pattern!r}"
    return _FRACTION_WORDS[found.group(1)], _FRACTION_WORDS[found.group(2)]


@pytest.mark.parametrize(
    ("where", "text", "pattern"),
    [
        ("README", README, r"drop past a (\w+) of it queued, audio and keyframes past a (\w+)"),
        ("--max-lag-ms", _help("max-lag-ms"), r"above a (\w+) of it queued.*above a (\w+)"),
        ("PolicyLimits", POLICY_SOURCE, r"watermarks are a (\w+) and a (\w+) of it"),
        ("policy.py", POLICY_SOURCE, r"Why a (\w+) and a (\w+):"),
        ("backpressure.md", BACKPRESSURE, r"Why a (\w+) and a (\w+):"),
    ],
)
def test_the_time_watermark_fractions_are_the_code_s(where: str, text: str, pattern: str) -> None:
    """Every sentence naming the time watermarks' fractions names the ones the code uses."""
    assert _two_fractions(text, pattern) == (LOW_DIVISOR, HIGH_DIVISOR), where


def test_the_policy_table_states_the_code_s_divisors() -> None:
    """The levels table of docs/backpressure.md and policy.py divide max_lag_ms as the code does."""
    table = re.findall(r"`--max-lag-ms`/(\d)", BACKPRESSURE.split("## Defaults")[0])
    assert table and set(table) == {str(LOW_DIVISOR), str(HIGH_DIVISOR)}
    module = re.findall(r"max_lag_ms / (\d)", POLICY_SOURCE)
    assert module and set(module) == {str(LOW_DIVISOR), str(HIGH_DIVISOR)}


def _size(text: str) -> int:
    number, unit = text.split()
    return int(float(number) * {"KiB": 1024, "MiB": 1024 * 1024}[unit])


def test_the_defaults_table_of_backpressure_md_is_the_code_s() -> None:
    """docs/backpressure.md's defaults table gives each limit's real default."""
    limits = PolicyLimits()
    config = ServerConfig()
    rows = dict(re.findall(r"^\| `--([a-z-]+)` \| ([^|]+?) \|", BACKPRESSURE, re.M))
    assert _size(rows["drop-low"]) == limits.drop_low
    assert _size(rows["drop-high"]) == limits.drop_high
    assert _size(rows["max-queue"]) == limits.max_queue
    assert float(rows["stall-timeout"].removesuffix(" s")) == limits.stall_timeout
    assert int(rows["max-lag-ms"]) == limits.max_lag_ms
    assert _size(rows["notsent-lowat"]) == config.notsent_lowat


def test_the_time_watermark_example_is_the_code_s() -> None:
    """ "At 0.5 Mbit/s the time watermark (N ms ≈ K KB)" uses the real first watermark."""
    found = re.search(r"At 0\.5 Mbit/s the time watermark \((\d+) ms ≈ (\d+) KB\)", BACKPRESSURE)
    assert found is not None
    low_ms = PolicyLimits().low_ms
    assert int(found.group(1)) == low_ms
    assert int(found.group(2)) == round(500_000 / 8 * low_ms / 1000 / 1000)


def test_the_notsent_lowat_and_kernel_watch_claims_are_the_code_s() -> None:
    """TCP_NOTSENT_LOWAT's default and the kernel-watch threshold are stated as set."""
    lowat = re.search(r"`TCP_NOTSENT_LOWAT` = (\d+) KiB", BACKPRESSURE)
    assert lowat is not None and int(lowat.group(1)) * 1024 == ServerConfig().notsent_lowat
    for text in (BACKPRESSURE, ARCHITECTURE):
        watch = re.search(r"worth more than (?:`KERNEL_WATCH_MS` \()?(\d+) ms", text)
        assert watch is not None and int(watch.group(1)) == viewer.KERNEL_WATCH_MS


_PATH = re.compile(r"`((?:tests|src|bench|docs|\.ci)/[\w./-]+\.(?:py|md|sh|png|json))`")


def _named_paths(text: str) -> set[str]:
    """Repository paths a text names in backticks: tests/…, src/…, bench/…, docs/…, .ci/….

    ``bench/results/`` is left out: it is where the documented commands write their
    output (git-ignored), not something the repository holds.
    """
    return {path for path in _PATH.findall(text) if not path.startswith("bench/results/")}


@pytest.mark.parametrize(
    "document", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))
)
def test_every_path_a_doc_names_exists(document: str) -> None:
    """Each file a doc names by its repository path is there."""
    missing = sorted(
        p for p in _named_paths((ROOT / document).read_text()) if not (ROOT / p).exists()
    )
    assert not missing, f"{document} names files that do not exist: {missing}"


def test_every_path_the_readme_and_ci_name_exists() -> None:
    """README.md and .ci/run name only files that exist."""
    ci = (ROOT / ".ci" / "run").read_text()
    named = _named_paths(README) | set(re.findall(r"(tests/[\w/]+\.py)", ci))
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, missing


def test_stream_bytes_out_is_counted() -> None:
    """Stream.bytes_out, documented as the bytes written to viewers, is really counted."""
    from tests.media.test_viewer import Server, _play
    from tests.protocol import media

    server = Server()
    stream, played, _ = _play(server)
    stream.broadcast(media.video(1, 0, key=True))
    assert stream.bytes_out == played.bytes_sent > 0


#: The options docs/security.md must name: every limit and timeout, and every option of
#: the HTTP, HLS-bound, IRC and recording listeners (or the page it points to for them).
_SECURITY = (ROOT / "docs" / "security.md").read_text()


def _security_pages() -> str:
    """docs/security.md and every docs page it points to (``docs/NAME.md``)."""
    pages = sorted(set(re.findall(r"docs/([a-z-]+)\.md", _SECURITY)))
    return _SECURITY + "".join((ROOT / "docs" / f"{page}.md").read_text() for page in pages)


def _is_limit(flag: str) -> bool:
    return "max-" in flag or flag.endswith(("-timeout", "-grace", "-wait", "-rate", "-length"))


def test_security_md_names_every_limit_and_every_listener_option() -> None:
    """A limit or timeout is in docs/security.md itself; the other http-, hls-max, irc and
    record options are there or in a page it points to."""
    pointed = _security_pages()
    missing_limits = [
        o.flag for o in OPTIONS if _is_limit(o.flag) and f"`--{o.flag}`" not in _SECURITY
    ]
    assert not missing_limits, missing_limits
    listeners = ("http-", "hls-max", "irc", "record")
    missing = [
        o.flag for o in OPTIONS if o.flag.startswith(listeners) and f"--{o.flag}" not in pointed
    ]
    assert not missing, missing
