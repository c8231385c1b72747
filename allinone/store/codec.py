"""How a stored object is written as bytes, shared by the etcd store and its in-memory twin.

Invariants: values are compact JSON objects without ``metadata.resourceVersion`` (the
revision of a write is only known once it commits; readers get it from the key's mod
revision); NaN and Infinity are refused; every decode yields a fresh object, so no
caller can mutate a store's state through an object it got back.
"""

from __future__ import annotations

import json

from allinone.store.base import Conflict, Obj, StoreError

__all__ = ["decode_listed", "decode_object", "encode_object", "parse_resource_version"]


def encode_object(obj: Obj) -> str:
    """The JSON stored for ``obj``, without ``metadata.resourceVersion``.

    The revision of a write is only known once it commits, so storing a version in the
    value would always be stale; readers get it from the key's mod revision instead.
    """
    if not isinstance(obj, dict):
        raise TypeError(f"store objects are JSON objects (dicts), got {type(obj).__name__}")
    metadata = obj.get("metadata")
    if isinstance(metadata, dict) and "resourceVersion" in metadata:
        metadata = {k: v for k, v in metadata.items() if k != "resourceVersion"}
        obj = {**obj, "metadata": metadata}
    # allow_nan=False: NaN and Infinity are not JSON, and other etcd readers choke on them.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def decode_object(value: str | bytes, revision: int) -> Obj:
    """A fresh object parsed from stored JSON, with ``resourceVersion = str(revision)``."""
    try:
        obj = json.loads(value)
    except ValueError as e:
        raise StoreError(f"stored value is not JSON ({e}): {str(value)[:80]!r}") from None
    if not isinstance(obj, dict):
        raise StoreError(f"stored value is not a JSON object: {str(value)[:80]!r}")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        metadata = obj["metadata"] = {}
    metadata["resourceVersion"] = str(revision)
    return obj


def decode_listed(value: str | bytes, revision: int, key: str) -> Obj:
    """Like :func:`decode_object`, for lists and watches: never raises.

    One malformed value must not make a whole list (or watch) fail, or every consumer
    of the prefix would stop. The object is named after its key (``metadata.name``
    when it has none) so consumers can report it; a value that is not a JSON object
    becomes an object with only metadata and ``malformed``, which shape checks reject.
    """
    try:
        obj = decode_object(value, revision)
    except StoreError as exc:
        obj = {"metadata": {"resourceVersion": str(revision)}, "malformed": str(exc)}
    if not isinstance(obj["metadata"].get("name"), str):
        obj["metadata"]["name"] = key.rsplit("/", 1)[-1]
    return obj


def parse_resource_version(obj_or_version: Obj | str | None) -> int:
    """The revision an object (or a resourceVersion string) was read at.

    A version that cannot be a revision can never match the stored one, so it is a
    :class:`Conflict`, the same answer as a stale one (the HTTP layer turns it into 409).
    """
    if isinstance(obj_or_version, dict):
        metadata = obj_or_version.get("metadata")
        version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    else:
        version = obj_or_version
    if version is None or version == "":
        raise Conflict(
            "metadata.resourceVersion is missing: read the object first and send back the "
            "resourceVersion you read"
        )
    try:
        revision = int(version)
    except (TypeError, ValueError):
        raise Conflict(
            f"metadata.resourceVersion {version!r} is not a revision number; re-read the "
            "object and retry"
        ) from None
    if revision < 0:
        raise Conflict(f"metadata.resourceVersion {version!r} is negative; re-read and retry")
    return revision
