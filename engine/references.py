"""References: the one grammar of those callers give, and the references the flows derive for
their own steps, in a namespace no caller can write.

A caller's reference (hold, top-up, withdrawal, deposit, swap, buy, sell) is 1-128 characters
of letters, digits and `_ . : @ / + = -` (ASCII), no part between slashes being "." or "..".
Every layer takes the grammar from here: the engine's checks, the API's routes (every route
reaches every such reference, "/" included: api.convertors) and the OpenAPI schema.

A flow's steps use references made by `flow_reference` alone. They start with `~`, which the
public grammar refuses, so a caller's deposit or hold can never be taken for a flow's step; their
length is bounded whatever the flow's reference, so no step can become invalid half-way. They
exist only as `InternalReference` objects: JSON decodes to plain `str`, which must pass the
public grammar, so no request can hand the engine one.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from engine import limits
from engine.errors import InvalidRequest

CHARACTERS = "A-Za-z0-9_.:@/+=-"  # a regex character class body, ASCII only
# No part between slashes may be "." or "..": HTTP clients rewrite such paths (RFC 3986 dot
# segments), so GET /wallet/reserves/holds/a/../b could never reach hold "a/../b".
PATTERN = r"^(?!(.*/)?\.\.?(/|$))[%s]{1,%d}$" % (CHARACTERS, limits.reference_length_max)
RULE = (f"1-{limits.reference_length_max} characters of letters, digits and _ . : @ / + = -, "
        "with no part between slashes that is . or ..")

INTERNAL_PREFIX = "~"
_PUBLIC = re.compile(PATTERN[1:-1], re.ASCII)  # fullmatch: a final "$" lets a "\n" end one
_KIND = re.compile(r"[a-z]{1,8}")
_LEG = re.compile(r"[a-z][a-z_]{0,23}")
_DIGEST_BYTES = 16
# ~<kind>.<leg>.<32 hex>.<head of the flow's reference>: at most 68 characters before the head
_HEAD_LENGTH_MAX = limits.reference_length_max - (1 + 8 + 1 + 24 + 1 + 2 * _DIGEST_BYTES + 1)
_INTERNAL = re.compile(r"~[a-z]{1,8}\.[a-z][a-z_]{0,23}\.[0-9a-f]{%d}\.[%s]{1,%d}"
                       % (2 * _DIGEST_BYTES, CHARACTERS, _HEAD_LENGTH_MAX), re.ASCII)


class InternalReference(str):
    """A reference a flow derived for one of its steps (see flow_reference); the engine's
    operations accept it where they refuse any plain string outside the public grammar."""

    kind: str
    flow_reference: str  # "" when read back from a record (stored_reference)
    leg: str

    def sibling(self, suffix: str) -> InternalReference:
        """The reference of a step about this one (its refund, its late debit)."""
        assert self.flow_reference, self
        return flow_reference(self.kind, self.flow_reference, f"{self.leg}_{suffix}")


def flow_reference(kind: str, reference_id: str, leg: str) -> InternalReference:
    """The reference of step `leg` of flow `kind` with caller reference `reference_id`: the same
    every time (a re-run finds its earlier steps), distinct for every (kind, reference, leg) (a
    128-bit digest of the three), valid whatever the caller's valid reference is."""
    assert _KIND.fullmatch(kind), kind
    assert _LEG.fullmatch(leg), leg
    check_reference(reference_id)
    digest = hashlib.blake2b(f"{kind}\n{leg}\n{reference_id}".encode(),
                             digest_size=_DIGEST_BYTES).hexdigest()
    ref = InternalReference(
        f"{INTERNAL_PREFIX}{kind}.{leg}.{digest}.{reference_id[:_HEAD_LENGTH_MAX]}")
    assert len(ref) <= limits.reference_length_max, ref
    assert _INTERNAL.fullmatch(ref), ref
    ref.kind, ref.flow_reference, ref.leg = kind, reference_id, leg
    return ref


def stored_reference(text: str) -> str:
    """A reference the engine read back from its own records (a saga's legs), never from a
    request: a flow's reference is accepted again as one."""
    if not _INTERNAL.fullmatch(text):
        return text
    ref = InternalReference(text)
    ref.kind, ref.leg, _ = text[len(INTERNAL_PREFIX):].split(".", 2)
    ref.flow_reference = ""
    return ref


def check_reference(reference_id: Any, field: str = "reference_id") -> str:
    """reference_id if a caller may use it (or a flow derived it), else InvalidRequest."""
    if type(reference_id) is InternalReference and _INTERNAL.fullmatch(reference_id):
        return reference_id
    if type(reference_id) is not str or not _PUBLIC.fullmatch(reference_id):
        raise InvalidRequest(f"{field} must be {RULE}", code="invalid_reference")
    return reference_id
