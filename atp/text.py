"""Making text storable: whatever a handler or a program produced may hold anything.

PostgreSQL refuses a NUL character in text and JSON (psycopg2 raises ``ValueError: A string
literal cannot contain NUL``, not a ``DatabaseError``), and no database here can encode a
lone surrogate such as ``"\\ud800"`` as UTF-8 (``UnicodeEncodeError``). Raised while the
tracker recorded an outcome, either error stopped the daemon and left the task RUNNING, so
every string ATP stores goes through ``storable`` (or ``storable_json``) where it is written.
"""

import json
import re

#: What no database here can store: NUL, and surrogate code points (UTF-8 cannot encode
#: them; a Python str holds even a valid pair as two such characters).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: The same characters as ``json.dumps`` (ASCII output) writes them. A false match (an
#: escaped backslash followed by such text) only costs a needless clean-up.
_UNSTORABLE_DUMPED = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def _escape(match: re.Match) -> str:
    char = match.group()
    return "\\x00" if char == "\x00" else f"\\u{ord(char):04x}"


def storable(text):
    """``text`` with NUL and surrogates written as visible escapes (``\\x00``, ``\\ud800``).

    Anything that is not a str comes back as it is; so does text that needs no change (one
    regex search: the common case costs almost nothing).
    """
    if isinstance(text, str) and _UNSTORABLE.search(text):
        return _UNSTORABLE.sub(_escape, text)
    return text


def storable_json(value):
    """A copy of the JSON-like ``value`` with every string, keys included, made storable."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(key): storable_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(item) for item in value]
    return value


def dumps_storable(value) -> str:
    """``json.dumps(value)`` with every string made storable, for SQL that binds JSON text.

    Dumps once and searches the text (both in C); only a value that needs it is cleaned.
    """
    dumped = json.dumps(value)
    if _UNSTORABLE_DUMPED.search(dumped):
        dumped = json.dumps(storable_json(value))
    return dumped
