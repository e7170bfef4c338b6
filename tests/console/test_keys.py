"""The console's keys: authorized_keys parsing, fingerprints, and the host key on disk."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from streamserver.console.errors import ConsoleError
from streamserver.console.keys import (
    HOST_KEY_NAME,
    fingerprint,
    load_or_create_host_key,
    parse_authorized_keys,
)
from tests.console_support import make_client_key


def test_authorized_keys_accepts_common_types_and_skips_options_and_junk(tmp_path: Path) -> None:
    """Ed25519, RSA and ECDSA lines are read; comments, option-prefixed and bad lines are not."""
    ed = make_client_key(tmp_path, "ed", "ed25519")
    rsa = make_client_key(tmp_path, "rsa", "rsa")
    ecdsa = make_client_key(tmp_path, "ec", "ecdsa")
    restricted = make_client_key(tmp_path, "restricted")
    text = "\n".join(
        [
            "# console keys",
            "",
            ed.public_line,
            f'from="10.0.0.0/8",no-pty {restricted.public_line}',
            "   " + rsa.public_line,
            "ssh-ed25519 AAAAnot-base64",
            "ssh-ed25519",
            ecdsa.public_line,
        ]
    )
    found, skipped = parse_authorized_keys(text)
    assert [(k.key_type, k.comment, k.line) for k in found] == [
        ("ssh-ed25519", "ed@test", 3),
        ("ssh-rsa", "rsa@test", 5),
        ("ecdsa-sha2-nistp256", "ec@test", 8),
    ]
    assert [message.split(":")[0] for message in skipped] == ["line 4", "line 6", "line 7"]
    assert "options are not supported" in skipped[0]


def test_fingerprint_is_the_one_openssh_and_paramiko_print(tmp_path: Path) -> None:
    """``fingerprint()`` gives ``SHA256:`` and unpadded base64, as ``ssh-keygen -l``."""
    import paramiko

    key = make_client_key(tmp_path)
    found, _ = parse_authorized_keys(key.public_line)
    expected = paramiko.Ed25519Key.from_private_key_file(str(key.private_path)).fingerprint
    assert found[0].fingerprint == expected
    assert fingerprint(found[0].key) == expected


def test_host_key_is_created_owner_only_and_reused(tmp_path: Path) -> None:
    """The first start makes an Ed25519 key, mode 0600 in a 0700 directory; later ones reuse it."""
    data_dir = tmp_path / "state" / "streamserver"
    key, path, created = load_or_create_host_key(data_dir)
    assert created
    assert path == data_dir / HOST_KEY_NAME
    assert key.type() == "Ed25519"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert (data_dir / (HOST_KEY_NAME + ".pub")).read_text().startswith("ssh-ed25519 ")
    again, _, created_again = load_or_create_host_key(data_dir)
    assert not created_again
    assert fingerprint(again) == fingerprint(key)


def test_host_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    """An existing host key with group or other permissions is refused, as sshd does."""
    _, path, _ = load_or_create_host_key(tmp_path)
    path.chmod(0o644)
    with pytest.raises(ConsoleError, match="chmod 600"):
        load_or_create_host_key(tmp_path)
