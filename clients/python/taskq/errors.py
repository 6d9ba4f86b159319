"""TaskqError: a call the master refused or could not be made, with the gRPC
status code and the master's message (which never holds a secret)."""

from __future__ import annotations

from typing import Any

import grpc


class TaskqError(Exception):
    """A taskq call failed.

    `code` is the grpc.StatusCode (UNAUTHENTICATED, PERMISSION_DENIED,
    NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE, ...; the
    meanings are in proto/taskq/v1/taskq.proto), `details` the master's text.
    `owner` (cluster mode, docs/CLUSTER.md): the taskq.v1.QueueOwner a master
    named, e.g. for UNAVAILABLE "queue "q": owner m2 is down" (owner.down);
    else None.
    """

    def __init__(self, code: grpc.StatusCode, details: str, owner: Any = None):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.owner = owner

    @classmethod
    def from_rpc_error(cls, e: grpc.RpcError) -> "TaskqError":
        code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
        details = e.details() if hasattr(e, "details") else str(e)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "")

    def args_pair(self) -> "tuple[grpc.StatusCode, str]":
        return self.code, self.details
