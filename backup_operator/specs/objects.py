"""What S3 takes as an object: its key, its tags, its lock. Rules only, so that the
catalog, the API and the store check the same things without depending on each other."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from ..errors import Invalid
from .backup_job import MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS


@dataclass(frozen=True)
class Lock:
    """S3 Object Lock for a new version: a retention mode until a date, and/or a legal hold."""

    mode: str | None  # GOVERNANCE or COMPLIANCE
    retain_until: datetime | None
    legal_hold: bool


def validate_tags(tags: dict[str, str]) -> None:
    if len(tags) > MAX_TAGS:
        raise Invalid(f"at most {MAX_TAGS} tags per object, got {len(tags)}", field="tags")
    for key, value in tags.items():
        if not key or len(key) > MAX_TAG_KEY:
            raise Invalid(
                f"tag key must be 1 to {MAX_TAG_KEY} characters: {key[:40]!r}", field="tags"
            )
        if len(value) > MAX_TAG_VALUE:
            raise Invalid(f"tag value of {key!r} exceeds {MAX_TAG_VALUE} characters", field="tags")
        for text in (key, value):
            if not TAG_TEXT.match(text):
                raise Invalid(
                    f"{text[:40]!r}: S3 tags hold letters, digits, spaces and + - = . _ : / @ only",
                    field=f"tags.{key}",
                )


# The characters S3 accepts in tag keys and values.
TAG_TEXT = re.compile(r"^[\w +\-=.:/@]*$")
MAX_KEY_BYTES = 1024


def validate_key(key: str, *, field: str) -> None:
    """An object key S3 and the SDK take: at most 1,024 bytes, no `.` or `..` segment
    (the SDK and S3 servers normalise those away or refuse them), no empty segment."""
    if len(key.encode()) > MAX_KEY_BYTES:
        raise Invalid(f"the object key would be over {MAX_KEY_BYTES} bytes", field=field)
    if any(part in (".", "..", "") for part in key.split("/")):
        raise Invalid(
            f"{key[:80]!r}: no '.', '..' or empty segment is allowed in an object key",
            field=field,
        )
