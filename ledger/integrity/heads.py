"""The log head a computation saw, as recorded with it (e.g. in a verdict's ``details_json``).

:func:`head_record` returns::

    {"tree_size": N, "root_hash": "<64 hex>", "sth": {<signed tree head>} | null,
     "unsigned": null | "<why there is no signature>"}

``tree_size`` / ``root_hash`` are the RFC 9162 head of the log in the caller's snapshot
(:func:`.log.log_head_session`), i.e. *before* anything the computation itself appends. ``sth``
is that head signed now with the signing key (:func:`.sth.signing_key_path`) when a key file
exists; without one, or when it cannot be read, ``sth`` is null and ``unsigned`` says why (a
verdict never fails for want of a signature). Reads only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ..errors import UserError
from .log import log_head_session
from .sth import load_private_key, sign_tree_head, signing_key_path

__all__ = ["head_record"]


def head_record(session: Session) -> dict[str, Any]:
    """The current head, signed when a key is available (module docstring)."""
    head = log_head_session(session)
    out: dict[str, Any] = {
        "tree_size": head.tree_size,
        "root_hash": head.root_hash.hex(),
        "sth": None,
        "unsigned": None,
    }
    path = signing_key_path()
    if not path.exists():
        out["unsigned"] = f"no signing key at {path}"
        return out
    try:
        key = load_private_key(path)
    except UserError as exc:
        out["unsigned"] = str(exc)
        return out
    out["sth"] = sign_tree_head(head.tree_size, head.root_hash, key)
    return out
