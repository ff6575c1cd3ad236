"""Checks of decoded JSON: what relive's own documents (a snapshot's manifest, a run's
record) must hold before anything reads them.

``relive.manifest`` and ``relive.runs`` describe their fields with these checks, and
``problem`` turns the first field that fails into one sentence, so that a document that
decodes but makes no sense is reported as damaged rather than failing deep inside.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeGuard

Check = Callable[[Any], bool]
# field: (required, check, what it must be)
Fields = Mapping[str, tuple[bool, Check, str]]


def optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def is_str(value: Any) -> TypeGuard[str]:
    return isinstance(value, str)


def is_bool(value: Any) -> TypeGuard[bool]:
    return isinstance(value, bool)


def is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_object(**fields: Check) -> Check:
    """A JSON object whose listed fields pass their check; an absent field is checked as None."""
    return lambda value: isinstance(value, dict) and all(check(value.get(name)) for name, check in fields.items())


def is_list_of(check: Check) -> Check:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def is_dict_of(check: Check) -> Check:
    return lambda value: isinstance(value, dict) and all(check(item) for item in value.values())


def is_iso_time(value: Any) -> bool:
    """Whether ``value`` is a time as relive writes them, one that can be shown in local time."""
    try:
        datetime.fromisoformat(value).astimezone()
    except (TypeError, ValueError, OverflowError, OSError):
        return False
    return True


def problem(doc: Any, fields: Fields, what_doc: str, show_value: bool = False) -> str | None:
    """What makes ``doc`` (decoded JSON) not the object ``fields`` describe, or None.

    ``what_doc`` names it in the sentence (``the manifest``); ``show_value`` adds the value
    that failed its check.
    """
    if not isinstance(doc, dict):
        return f"{what_doc} is a JSON {type(doc).__name__}, not an object"
    for name, (required, check, what) in fields.items():
        if name not in doc:
            if required:
                return f"{what_doc} has no {name!r}"
        elif not check(doc[name]):
            return f"{what_doc}'s {name!r} is not {what}" + (f": {shown(doc[name])}" if show_value else "")
    return None


def shown(value: Any) -> str:
    """A value as JSON, cut to fit in a sentence."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
