"""Secrets taken out of what fercore prints: the password of a URL (`postgresql://user:PASSWORD@host/db`,
`s3://KEY:SECRET@bucket`) and secret query options (`?secret_key=...`, `password=...`, `session_token=...`).

`fersweep` writes every line through RedactingStream (stdout and stderr, Ray's driver-side log lines and the lines it
forwards from trials included), so an Optuna storage URL or a storage URI with credentials never reaches a terminal or
a CI log whatever message carries it; code that builds a message with a URL also calls redact() itself, for callers
that are not `fersweep`.
"""
from __future__ import annotations

import re
from typing import TextIO

MASK = "***"
# scheme://user:password@ - the password runs to the last '@' of the word: AWS secret keys hold '/' and '+', and users
# write them into s3:// URIs unencoded. (A port followed by a path with an '@' in it is masked too: safe side.)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@?#]*:)(?P<secret>[^\s@]+)@")
_QUERY_SECRET = re.compile(r"(?P<head>[?&;](?:password|passwd|pwd|secret|secret_key|secret_access_key|access_key|"
                           r"session_token|token|sas_token|credentials?)=)(?P<secret>[^&\s'\"]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """TEXT with every URL password and secret query option replaced by ***."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['head']}{MASK}", text)


class RedactingStream:
    """A text stream that passes what is written to STREAM through redact(). Writes are buffered to the end of the
    line, so a URL that arrives in two writes is still seen whole; flush() passes on what is buffered."""

    def __init__(self, stream: TextIO):
        self._stream, self._pending = stream, ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            done, _, self._pending = self._pending.rpartition("\n")
            self._stream.write(redact(done + "\n"))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(redact(self._pending))
            self._pending = ""
        self._stream.flush()

    def __getattr__(self, name):  # fileno, isatty, encoding, ... of the stream underneath
        return getattr(self._stream, name)
