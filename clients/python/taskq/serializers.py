"""How Python items become task payloads and back.

A payload is bytes on the wire. What it was in Python travels in the task's
header "taskq-encoding", so a reader gets back the type that was put:

    tag       put accepts                       get returns
    (none)    bytes, bytearray, memoryview      bytes   (also what the CLI and C++ put)
    str       str (sent as UTF-8)               str
    json      JSON values (serializer="json")   the decoded value
    pickle    any picklable (serializer="pickle") the unpickled object

Readers decode bytes, str and json whatever their serializer; a pickled item
is unpickled only by a reader that opted in with serializer="pickle", since
unpickling data runs code chosen by whoever put it (anyone holding a
producer credential for the queue). A result message carries the headers of
its task, so a job's result is decoded with its task's tag: a Python handler
encodes its return value with the tag of the task it ran
(`Serializer.encode_like`).

Thread-safety: serializers are stateless and safe from any thread.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Mapping, Optional, Tuple

ENCODING_HEADER = "taskq-encoding"

TAG_BYTES = ""
TAG_STR = "str"
TAG_JSON = "json"
TAG_PICKLE = "pickle"


class Serializer:
    """Encodes items to (payload, tag) and decodes (payload, tag) to items.

    name: "raw" (bytes and str only: the default), "json" or "pickle".
    """

    def __init__(self, name: str):
        if name not in ("raw", "json", "pickle"):
            raise ValueError(f"unknown serializer {name!r}: use 'raw' (bytes and str), 'json' or 'pickle'")
        self.name = name

    def __repr__(self) -> str:
        return f"Serializer({self.name!r})"

    def encode(self, item: Any) -> Tuple[bytes, str]:
        """(payload, tag) for `item`; TypeError if this serializer cannot
        carry it (the message says which serializer would)."""
        if isinstance(item, (bytes, bytearray, memoryview)):
            return bytes(item), TAG_BYTES
        if isinstance(item, str):
            return item.encode("utf-8"), TAG_STR
        if self.name == "json":
            try:
                return json.dumps(item, separators=(",", ":")).encode("utf-8"), TAG_JSON
            except (TypeError, ValueError) as e:
                raise TypeError(f"{type(item).__name__} is not JSON: {e} (serializer='pickle' "
                                "carries any picklable object)") from None
        if self.name == "pickle":
            return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL), TAG_PICKLE
        raise TypeError(f"taskq queues carry bytes and str by default, not {type(item).__name__}: "
                        "pass serializer='json' (JSON values) or serializer='pickle' (any object; "
                        "unpickling runs code, see docs/PYTHON.md)")

    def encode_like(self, item: Any, tag: str) -> bytes:
        """The payload of `item` as a task tagged `tag` expects its result:
        a handler's return value for a task put with that tag. None is an
        empty result."""
        if item is None and tag in (TAG_BYTES, TAG_STR):
            return b""
        if tag == TAG_JSON:
            if isinstance(item, (bytes, bytearray, memoryview)):
                return bytes(item)  # already encoded by the handler
            return json.dumps(item, separators=(",", ":")).encode("utf-8")
        if tag == TAG_PICKLE:
            return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        if isinstance(item, (bytes, bytearray, memoryview)):
            return bytes(item)
        if isinstance(item, str):
            return item.encode("utf-8")
        # A raw task whose handler returned something else: its text.
        return str(item).encode("utf-8")

    def decode(self, payload: bytes, tag: str) -> Any:
        """The item `payload` encodes under `tag` ("" = bytes). Raises
        ValueError for a pickled item unless this is the pickle serializer,
        and for an unknown tag."""
        if tag == TAG_BYTES:
            return bytes(payload)
        if tag == TAG_STR:
            return payload.decode("utf-8", "surrogateescape")
        if tag == TAG_JSON:
            return json.loads(payload.decode("utf-8")) if payload else None
        if tag == TAG_PICKLE:
            if self.name != "pickle":
                raise ValueError("this item was pickled: unpickling runs code chosen by whoever put "
                                 "it, so it needs serializer='pickle' (docs/PYTHON.md)")
            return pickle.loads(payload) if payload else None
        raise ValueError(f"unknown {ENCODING_HEADER} {tag!r}")

    # Helpers for task headers.
    @staticmethod
    def tag_of(headers: Mapping[str, str]) -> str:
        return headers.get(ENCODING_HEADER, TAG_BYTES)

    @staticmethod
    def headers_for(tag: str) -> Optional[dict]:
        return {ENCODING_HEADER: tag} if tag else None


def get_serializer(name: Optional[str]) -> Serializer:
    """The serializer called `name` (None means "raw")."""
    return Serializer(name or "raw")
