"""S3's rules for a bucket's name, written once: the catalog checks them, the CRDs carry
them (a pattern in the RE2 the API server speaks, the rest as CEL rules)."""

from __future__ import annotations

import re

from .fields import Bound, JsonSchema

# Lowercase DNS-like names of 3 to 63 characters, no '..', not an IP address.
BUCKET_NAME = re.compile(
    r"^(?!xn--)(?!.*\.\.)(?!\d+\.\d+\.\d+\.\d+$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
)
# Prefixes and suffixes S3 reserves for its own kinds of buckets and access points.
RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", "--x-s3", ".mrap")
SHAPE = (
    "must be 3-63 characters of lowercase letters, digits, '.' and '-', starting and "
    "ending with a letter or digit, with no '..', and not an IP address"
)
RESERVED = (
    f"S3 reserves names starting {', '.join(RESERVED_PREFIXES)} or ending "
    f"{', '.join(RESERVED_SUFFIXES)}"
)


def bucket_name_problem(name: str) -> str | None:
    if not BUCKET_NAME.match(name):
        return SHAPE
    if name.startswith(RESERVED_PREFIXES) or name.endswith(RESERVED_SUFFIXES):
        return RESERVED
    return None


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{item}'" for item in items) + "]"


class BucketName(Bound):
    def schema(self) -> JsonSchema:
        return {
            "minLength": 3,
            "maxLength": 63,
            "pattern": "^[a-z0-9][a-z0-9.-]*[a-z0-9]$",
            "x-kubernetes-validations": [
                {"rule": "!self.contains('..')", "message": SHAPE},
                {"rule": r"!self.matches('^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$')", "message": SHAPE},
                {
                    "rule": f"!{_cel_list(RESERVED_PREFIXES)}.exists(p, self.startsWith(p))"
                    f" && !{_cel_list(RESERVED_SUFFIXES)}.exists(s, self.endsWith(s))",
                    "message": RESERVED,
                },
            ],
        }

    def problem(self, value: str) -> str | None:
        return bucket_name_problem(value)
