"""The access log never holds a credential: values of query parameters that look like
one (token, key, secret, password, signature…) are written as `***`. The API reads
tokens only from the Authorization header, but clients do put them in URLs."""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode

SENSITIVE = re.compile(r"token|key|secret|passw|auth|sig|credential", re.IGNORECASE)


def redact(path: str) -> str:
    """`path?query` with the values of sensitive parameters replaced."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    return (
        base
        + "?"
        + urlencode([(k, "***" if SENSITIVE.search(k) else v) for k, v in pairs], safe="*")
    )


class RedactQueryCredentials(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access records: (client, method, path with query, http version, status)
        if isinstance(record.args, tuple) and len(record.args) >= 3:
            args = list(record.args)
            if isinstance(args[2], str):
                args[2] = redact(args[2])
                record.args = tuple(args)
        return True


def install() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQueryCredentials) for f in access.filters):
        access.addFilter(RedactQueryCredentials())
