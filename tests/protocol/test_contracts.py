"""The mixins' contracts (``protocol/contracts.py``) make a composition without a mixin fail mypy.

One mypy run checks a generated module holding the server's composition and
variants of it that leave one mixin out, each checked as ``protocol/server.py``
checks ``RTMPServerProtocol``.  It uses the project's configuration and the
default incremental cache, so a rerun only checks the generated module.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from typing_extensions import get_protocol_members

from streamserver.protocol import contracts
from streamserver.protocol.chat import ChatMixin
from streamserver.protocol.chunking import ChunkingMixin
from streamserver.protocol.contracts import Chatting, Composition, Messaging, Session
from streamserver.protocol.server import RTMPServerProtocol
from streamserver.protocol.session import SessionMixin

ROOT = Path(__file__).resolve().parents[2]

MODULE = "compositions_without_a_mixin"

#: The mixins left out, with the contract each offers: two that other mixins need
#: (the composition becomes abstract) and one that no other mixin needs.
LEFT_OUT: dict[type, type] = {
    ChunkingMixin: Messaging,
    SessionMixin: Session,
    ChatMixin: Chatting,
}


def _class_name(left_out: type | None) -> str:
    return "Complete" if left_out is None else f"Without{left_out.__name__}"


def _compositions_source() -> tuple[str, dict[str, int]]:
    """The module to check, and the line of each class's check, by class name."""
    mixins = RTMPServerProtocol.__bases__
    lines = ["from __future__ import annotations", ""]
    lines += [f"from {mixin.__module__} import {mixin.__name__}" for mixin in mixins]
    lines += ["from streamserver.protocol.contracts import Composition", ""]
    check_lines: dict[str, int] = {}
    for left_out in (None, *LEFT_OUT):
        name = _class_name(left_out)
        bases = ", ".join(mixin.__name__ for mixin in mixins if mixin is not left_out)
        lines += ["", f"class {name}({bases}): ...", ""]
        lines.append(f"_{name.lower()}: Composition = {name}()")
        check_lines[name] = len(lines)
    return "\n".join(lines) + "\n", check_lines


@pytest.fixture(scope="module")
def mypy_messages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """mypy's errors and notes on the generated module, by the class whose check they are on."""
    source, check_lines = _compositions_source()
    path = tmp_path_factory.mktemp("contracts") / f"{MODULE}.py"
    path.write_text(source)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr
    classes = {line: name for name, line in check_lines.items()}
    messages: dict[str, list[str]] = defaultdict(list)
    for line in result.stdout.splitlines():
        match = re.match(rf".*\b{MODULE}\.py:(\d+): (.*)", line)
        if match is not None:
            messages[classes.get(int(match[1]), f"line {match[1]}")].append(match[2])
        elif not line.startswith(("Found ", "Success: ")):
            messages["elsewhere"].append(line)
    return messages


def _reported_members(messages: list[str]) -> tuple[set[str], int]:
    """The members *messages* name as missing, and how many mypy says are missing."""
    named: set[str] = set()
    count = 0
    for message in messages:
        abstract = re.search(
            r"with abstract attributes? (.*?)(?: \((\d+) methods suppressed\))?  \[abstract\]",
            message,
        )
        if abstract is not None:
            listed = re.findall(r'"(\w+)"', abstract[1])
            named.update(listed)
            count += len(listed) + int(abstract[2] or 0)
        elif re.fullmatch(r"note:\s+\w+", message):  # a missing protocol member, listed
            named.add(message.split()[-1])
            count += 1
    return named, count


def test_the_full_composition_type_checks(mypy_messages: dict[str, list[str]]) -> None:
    """mypy accepts the server's composition and reports nothing but the variants' checks."""
    variants = {_class_name(left_out) for left_out in LEFT_OUT}
    assert "Complete" not in mypy_messages
    assert set(mypy_messages) <= variants, dict(mypy_messages)


@pytest.mark.parametrize("left_out", list(LEFT_OUT), ids=lambda mixin: mixin.__name__)
def test_a_composition_without_a_mixin_fails_mypy(
    mypy_messages: dict[str, list[str]], left_out: type
) -> None:
    """Leaving a mixin out is a type error that names the members of the contract it offers."""
    messages = mypy_messages.get(_class_name(left_out), [])
    assert any(message.startswith("error: ") for message in messages), messages
    members = get_protocol_members(LEFT_OUT[left_out])
    named, count = _reported_members(messages)
    assert named, messages
    assert named <= members, messages
    assert count == len(members), messages


def test_composition_holds_every_contract() -> None:
    """``Composition``, which server.py checks the composed class against, has every contract."""
    every = {
        value
        for value in vars(contracts).values()
        if isinstance(value, type)
        and value.__module__ == contracts.__name__
        and value is not Composition
    }
    assert every <= set(Composition.__mro__)
    assert get_protocol_members(Composition) == set().union(
        *(get_protocol_members(contract) for contract in every)
    )
