"""The Manhole console: a Python prompt inside the running server, over SSH.

``--manhole ENDPOINT`` (off unless given) serves an SSH server whose only
service is an interactive Python console running in the reactor thread, with a
curated namespace for finding where memory goes (:class:`Console`):
``streams()``, ``viewers()``, ``buffers()``, ``memory()``, ``chain()``, the
moderation helpers ``kick()``, ``mute()``, ``unmute()``, ``clear_history()``,
``policy()``/``set_policy()``, and the objects ``factory``, ``registry`` and
``reactor``.

Security contract:

- Public-key authentication only.  The portal has one checker, for
  ``ISSHPrivateKey``, so the SSH server offers no ``password`` nor
  ``keyboard-interactive`` method at all.
- The keys are the ones listed in ``--manhole-keys``, an OpenSSH
  ``authorized_keys`` file, re-read when it changes (removing a line revokes
  that key for the next login).  Lines with options (``from=``, ``command=``,
  ``restrict``...) are skipped with a warning: the console cannot honour them,
  and accepting such a key without its restrictions would grant more than the
  file says.  The key decides; any user name is accepted with a listed key and
  logged.
- The host key is Ed25519, generated on first start in ``--data-dir`` with
  mode 0600 (the directory 0700) and reused after; an existing key readable by
  others is refused, as sshd does.
- Every login, every line typed and every state-changing helper call is logged
  with the user name and the key's SHA256 fingerprint (as ``ssh-keygen -l``
  prints it), so the log says who did what.

Built from conch's pieces (``../shared/TWISTED-FACTS.md`` §3), not from
``manhole_tap``, whose host key is world-readable and whose only
authentication is a password file.

Helpers return their data and show it as a table: each returns a
:class:`Table` (a list of row dicts) or a :class:`Report` (a dict) whose
``repr`` is the rendered text, so typing ``buffers()`` at the prompt shows the
table and ``buffers()[0]["id"]`` is scriptable.

The console runs code in the reactor thread: while a line runs, nothing else
does.  ``memory()`` walks every gc-tracked object and takes about 0.2 s per million.

The package, one idea per module:

- :mod:`~streamserver.console.keys`: the host key, the ``authorized_keys``
  file and the public-key checker;
- :mod:`~streamserver.console.tables`: tables and reports that show
  themselves (pure presentation);
- :mod:`~streamserver.console.helpers`: :class:`Console`, the helpers of a
  session, and the :class:`RateSampler` behind their bit rates;
- :mod:`~streamserver.console.service`: the SSH glue (realm, session,
  factory) and :class:`ConsoleService`;
- :mod:`~streamserver.console.errors`: :class:`ConsoleError`.

The names below are re-exported here: ``from streamserver.console import
ConsoleService`` is the way in.
"""

from __future__ import annotations

from streamserver.console.errors import ConsoleError
from streamserver.console.helpers import (
    MIN_RATE_WINDOW,
    RATE_SAMPLE_INTERVAL,
    Console,
    RateSampler,
)
from streamserver.console.keys import (
    HOST_KEY_NAME,
    AuthorizedKey,
    AuthorizedKeysChecker,
    AuthorizedKeysFile,
    ConsoleLogin,
    check_keys_file,
    default_data_dir,
    fingerprint,
    load_or_create_host_key,
    parse_authorized_keys,
)
from streamserver.console.service import (
    ConsoleManhole,
    ConsoleRealm,
    ConsoleService,
    ConsoleSession,
    ConsoleSSHFactory,
    console_factory,
    loopback_only,
)
from streamserver.console.tables import (
    Column,
    Report,
    Table,
    Text,
    plural,
    render_table,
    show_bytes,
    show_duration,
    show_size,
    show_value,
)

__all__ = [
    "HOST_KEY_NAME",
    "MIN_RATE_WINDOW",
    "RATE_SAMPLE_INTERVAL",
    "AuthorizedKey",
    "AuthorizedKeysChecker",
    "AuthorizedKeysFile",
    "Column",
    "Console",
    "ConsoleError",
    "ConsoleLogin",
    "ConsoleManhole",
    "ConsoleRealm",
    "ConsoleSSHFactory",
    "ConsoleService",
    "ConsoleSession",
    "RateSampler",
    "Report",
    "Table",
    "Text",
    "check_keys_file",
    "console_factory",
    "default_data_dir",
    "fingerprint",
    "load_or_create_host_key",
    "loopback_only",
    "parse_authorized_keys",
    "plural",
    "render_table",
    "show_bytes",
    "show_duration",
    "show_size",
    "show_value",
]
