"""Redis's glob patterns (``PSUBSCRIBE``, ``PUBSUB CHANNELS``) as compiled regexes.

``*`` any run of bytes, ``?`` one byte, ``[abc]``/``[a-z]``/``[^a]`` a class,
``\\x`` the byte ``x`` literally. Matching is on bytes, case-sensitive, as in
Redis's ``stringmatchlen``.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["glob_match", "is_pattern"]


@lru_cache(maxsize=4096)
def _compile(pattern: bytes) -> re.Pattern[bytes]:
    out = [b"(?s)"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i : i + 1]
        if ch == b"*":
            out.append(b".*")
        elif ch == b"?":
            out.append(b".")
        elif ch == b"\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i : i + 1]))
        elif ch == b"[":
            j = pattern.find(b"]", i + 2 if pattern[i + 1 : i + 2] in (b"^", b"]") else i + 1)
            if j < 0:  # an unclosed class matches the rest literally, like Redis
                out.append(re.escape(pattern[i:]))
                break
            body = pattern[i + 1 : j]
            negate = body.startswith(b"^")
            if negate:
                body = body[1:]
            cls = b"".join(
                b"-"
                if body[k : k + 1] == b"-" and 0 < k < len(body) - 1
                else re.escape(body[k : k + 1])
                for k in range(len(body))
            )
            out.append(b"[" + (b"^" if negate else b"") + cls + b"]")
            i = j
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile(b"".join(out) + b"\\Z")


def glob_match(pattern: bytes, subject: bytes) -> bool:
    """Whether ``subject`` matches the Redis glob ``pattern``."""
    return _compile(pattern).match(subject) is not None


def is_pattern(name: bytes) -> bool:
    """Whether ``name`` holds a glob metacharacter."""
    return any(c in name for c in (b"*", b"?", b"["))
