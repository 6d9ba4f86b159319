"""The generated protobuf and gRPC modules (taskq.v1), with a clear error when
they were not generated. Import `pb` and `pb_grpc` from here, never the
generated modules directly."""

try:
    from taskq.v1 import join_bundle_pb2 as bundle_pb  # noqa: F401
    from taskq.v1 import taskq_pb2 as pb  # noqa: F401
    from taskq.v1 import taskq_pb2_grpc as pb_grpc  # noqa: F401
except ImportError as e:  # pragma: no cover - a set-up error, reported as such
    raise ImportError(
        "taskq's generated stubs (taskq.v1.taskq_pb2) are missing: build them "
        "(cmake --preset release && cmake --build --preset release) and put "
        "build/release/python on PYTHONPATH next to clients/python, or install "
        "the package: pip install --no-build-isolation --no-deps clients/python "
        f"({e})"
    ) from e
