"""Named fixes: small, documented repairs a replay may apply to a dead letter's payload.

A fix gets the event's inner object (e.g. the dict under "user_interaction") and returns it,
repaired where it knows how and untouched otherwise; it never invents a value. A fixed event is
validated again like any other, so a fix that does not help just yields a new dead letter.

Adding one::

    @named_fix("trim_ids", "Strips whitespace around every *_id.")
    def trim_ids(event_type: str, payload: dict) -> dict:
        ...
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

FixFunction = Callable[[str, dict], dict]


@dataclass(frozen=True)
class NamedFix:
    name: str
    description: str
    apply: FixFunction


FIXES: dict[str, NamedFix] = {}


def named_fix(name: str, description: str) -> Callable[[FixFunction], FixFunction]:
    def register(function: FixFunction) -> FixFunction:
        FIXES[name] = NamedFix(name, description, function)
        return function

    return register


def get_fix(name: str) -> NamedFix:
    try:
        return FIXES[name]
    except KeyError:
        raise ValueError(f"no fix named {name!r}; known fixes: {', '.join(sorted(FIXES))}") from None


@named_fix("lowercase_action", "Lower-cases `action` and trims whitespace: ' Play ' -> 'play'.")
def lowercase_action(event_type: str, payload: dict) -> dict:
    if isinstance(payload.get("action"), str):
        payload["action"] = payload["action"].strip().lower()
    return payload


@named_fix("clean_action", "Lower-cases `action` and drops everything but letters: 'PLAY!' -> 'play'.")
def clean_action(event_type: str, payload: dict) -> dict:
    if isinstance(payload.get("action"), str):
        payload["action"] = re.sub(r"[^a-z]", "", payload["action"].lower())
    return payload


# Formats seen from older clients, tried in order; a time without a zone is taken as UTC (as the
# gateway does for ISO 8601).
_ODD_FORMATS = ("%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M",
                "%d.%m.%Y %H:%M:%S", "%Y%m%dT%H%M%SZ", "%Y-%m-%d %H:%M:%S %Z")


@named_fix("parse_odd_timestamp", "Rewrites a `timestamp` in a known non-ISO form (epoch seconds or "
           "milliseconds, 'DD/MM/YYYY HH:MM[:SS]', 'YYYY/MM/DD HH:MM[:SS]', 'DD.MM.YYYY HH:MM:SS', "
           "basic ISO 'YYYYMMDDTHHMMSSZ', RFC 2822) as ISO 8601 UTC.")
def parse_odd_timestamp(event_type: str, payload: dict) -> dict:
    value = payload.get("timestamp")
    if isinstance(value, str):
        parsed = parse_odd_instant(value.strip())
        if parsed is not None:
            payload["timestamp"] = parsed.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return payload


def parse_odd_instant(text: str) -> datetime | None:
    if re.fullmatch(r"\d{9,10}(\.\d+)?", text):
        return datetime.fromtimestamp(float(text), tz=timezone.utc)
    if re.fullmatch(r"\d{12,13}", text):
        return datetime.fromtimestamp(int(text) / 1000, tz=timezone.utc)
    for fmt in _ODD_FORMATS:
        try:
            return _utc(datetime.strptime(text, fmt))
        except ValueError:
            continue
    try:
        return _utc(email.utils.parsedate_to_datetime(text))
    except (TypeError, ValueError, IndexError):
        return None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
