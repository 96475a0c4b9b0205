"""Keep database passwords out of messages, whatever shape the URL is in.

A generated password often holds characters a URL reserves (``/ # ? @ % :``). Unescaped, they make
parsers split the URL in the wrong place: libpq or ``urlsplit`` then read part of the password as the
host, the port or the database name, and echo it in their errors. So nothing derived from a URL is
trusted to be password-free: :func:`scrub` removes every fragment of the URL's credentials from a
text before it is logged or raised.
"""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[/#?@%:\s=&]+")


def secret_fragments(dsn: str) -> list[str]:
    """Pieces of ``dsn`` that may be (part of) its password, longest first.

    URL form: what follows the user name up to the *last* ``@`` (the password, however it is
    written), and its pieces between URL separators. Key/value form: the ``password=`` value.
    """
    secrets: list[str] = []
    _, sep, rest = dsn.partition("://")
    if sep and "@" in rest:
        password = rest.rpartition("@")[0].partition(":")[2]
        if password:
            secrets.append(password)
    for match in re.finditer(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn):
        secrets.append(match.group(1).strip("'"))
    fragments = {dsn} if secrets else set()  # the whole URL too: it holds the password
    for secret in secrets:
        fragments.add(secret)
        fragments.update(p for p in _SEPARATORS.split(secret) if len(p) >= 3)
    return sorted(fragments, key=len, reverse=True)


def scrub(text: str, dsn: str) -> str:
    """``text`` with every fragment of ``dsn``'s password replaced by ``***``."""
    for fragment in secret_fragments(dsn):
        text = text.replace(fragment, "***")
    return text
