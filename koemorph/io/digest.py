"""The one short-hash helper: config hashes, dataset fingerprints, cache keys."""

from __future__ import annotations

import hashlib
import json


def short_hash(value) -> str:
    """First 16 hex digits of the sha256 of ``value``: a ``str`` is hashed as its UTF-8 bytes, anything
    else as canonical JSON (sorted keys, no spaces), so equal values always give equal hashes."""
    if not isinstance(value, str):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(value.encode()).hexdigest()[:16]
