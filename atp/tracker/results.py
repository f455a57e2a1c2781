"""A handler's return value as the task's JSON result: what can be stored, and how."""

import json

#: Marks "no JSON result" apart from a handler that returned None (JSON null).
NO_RESULT = object()


def json_text(value) -> str | None:
    """``value`` as JSON text if both databases can store it as JSON, else None.

    Not JSON: anything ``json.dumps`` refuses, NaN and infinities (not JSON), and strings
    that PostgreSQL's jsonb refuses (NUL characters, lone surrogates). Such a value keeps
    only its repr, in the task's ``task-succeeded`` event.
    """
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")  # lone surrogates cannot be stored
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError):
        return None
    if "\\u0000" in text:
        return None
    return text


def stored_result(result=NO_RESULT, result_json=None):
    """The value to store in ``TaskInstance.result`` for a success, or ``NO_RESULT``.

    ``result`` is the handler's own return value (in-process callers); ``result_json`` the
    JSON text a worker made of it where the handler ran (it crossed a process pipe).
    """
    if result_json is not None:
        return json.loads(result_json)
    if result is not NO_RESULT:
        text = json_text(result)
        if text is not None:
            return json.loads(text)
    return NO_RESULT
