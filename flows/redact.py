"""No secret in any output: what the CLI prints, logs or lets escape passes through
:data:`REDACTOR` first, which blots out every secret it was told of.

The messages Pulse writes itself name servers without credentials already; this is the
net under them, for texts Pulse does not write (a library's exception, a traceback, a
log line of librdkafka). The CLI registers the secrets of its settings as soon as it
has them and installs the redactor on the log handlers, on ``sys.excepthook`` and on
``threading.excepthook``.

>>> r = Redactor()
>>> r.add("pa ss/word")
>>> r("AUTH pa ss/word, or rediss://u:pa%20ss%2Fword@h")
'AUTH ***, or rediss://u:***@h'
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from typing import Iterable, Optional
from urllib.parse import quote, quote_plus

MASK = "***"


class Redactor:
    """Replaces each secret it holds (as it is, and as a URL would quote it) with
    :data:`MASK`. Longer secrets go first, so one that contains another is blotted whole."""

    def __init__(self) -> None:
        self._secrets: list[str] = []

    def add(self, *secrets: Optional[str]) -> None:
        forms = set(self._secrets)
        for secret in secrets:
            if secret:
                forms |= {secret, quote(secret, safe=""), quote_plus(secret, safe="")}
        self._secrets = sorted(forms, key=len, reverse=True)

    def extend(self, secrets: Iterable[str]) -> None:
        self.add(*secrets)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def install(self) -> None:
        """Redact every log handler's output (tracebacks included) and uncaught
        exceptions, of the main thread and of every other."""
        for handler in logging.getLogger().handlers:
            handler.setFormatter(_RedactingFormatter(handler.formatter, self))

        def excepthook(kind, value, tb) -> None:
            sys.stderr.write(self("".join(traceback.format_exception(kind, value, tb))))

        def thread_excepthook(args) -> None:
            if args.exc_type is SystemExit:
                return
            name = args.thread.name if args.thread is not None else "?"
            text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
            sys.stderr.write(self(f"Exception in thread {name}:\n{text}"))

        sys.excepthook = excepthook
        threading.excepthook = thread_excepthook


class _RedactingFormatter(logging.Formatter):
    def __init__(self, inner: Optional[logging.Formatter], redactor: Redactor) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor(self.inner.format(record))


#: The process's redactor: what the CLI registers secrets with.
REDACTOR = Redactor()
