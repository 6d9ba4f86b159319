"""Reaching a taskq master: the address, TLS and the credential, found as the
CLI finds them, and calls that ride out a master restart or a network cut.

Precedence, as for `taskq` and `taskq-worker` (docs/CLI.md): arguments, then
a join bundle (`join=` or $TASKQ_JOIN), then $TASKQ_MASTER, $TASKQ_TOKEN_FILE
and $TASKQ_TLS_CA, then the defaults (127.0.0.1:5000 and
~/.config/taskq/token).

Thread-safety: a Connection is safe to share between threads (its gRPC
channel is); connect() and the helpers are stateless.
"""

from __future__ import annotations

import logging
import os
import random
import stat
import threading
import time
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

import grpc
from google.protobuf import text_format

from taskq._stubs import bundle_pb, pb, pb_grpc
from taskq.errors import TaskqError

log = logging.getLogger("taskq")

DEFAULT_MASTER = "127.0.0.1:5000"
MAX_TOKEN_BYTES = 4096
MAX_JOIN_BUNDLE_BYTES = 256 * 1024
# gRPC's message limit on both sides (common/limits.h: kMaxGrpcMessageBytes).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Cluster mode (docs/CLUSTER.md): most redirects one call follows, and
# where a refusal names the queue's (or task's) owner.
MAX_REDIRECTS = 3
STATUS_DETAILS_KEY = "grpc-status-details-bin"
MAX_REMEMBERED_QUEUES = 100_000
# Calls about the master itself (not a queue or task): only the given one.
_MASTER_CALLS = frozenset({"ListQueues", "ListWorkers", "CreateCredential", "ListCredentials",
                           "RevokeCredential", "GetCluster"})

# How a call is sent again after UNAVAILABLE (common/call_retry.h):
RETRY_ALWAYS = "always"  # idempotent: reads, lease gets, acks, keyed puts
RETRY_IF_NOT_SENT = "if_not_sent"  # only if the request surely never left
RETRY_NEVER = "never"


def default_token_path() -> str:
    """$TASKQ_TOKEN_FILE, else $XDG_CONFIG_HOME/taskq/token, else
    ~/.config/taskq/token (the master's default too)."""
    env = os.environ.get("TASKQ_TOKEN_FILE")
    if env:
        return env
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg:
        return os.path.join(xdg, "taskq", "token")
    return os.path.join(os.environ.get("HOME") or ".", ".config", "taskq", "token")


def read_private_file(path: str, what: str, limit: int) -> bytes:
    """Reads a file that holds a secret, refusing it when group or others may
    read it (as the CLI does), or when it is larger than `limit`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TaskqError(grpc.StatusCode.NOT_FOUND, f"cannot open {what} {path}: no such file")
    except OSError as e:
        raise TaskqError(grpc.StatusCode.FAILED_PRECONDITION,
                         f"cannot open {what} {path}: {e.strerror}")
    try:
        st = os.fstat(fd)
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise TaskqError(grpc.StatusCode.FAILED_PRECONDITION,
                             f"{what} {path} is accessible by group or others; run: chmod 600 {path}")
        data = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return data
            data += chunk
            if len(data) > limit:
                raise TaskqError(grpc.StatusCode.INVALID_ARGUMENT, f"{what} {path} is too large")
    finally:
        os.close(fd)


def load_token(path: str) -> str:
    data = read_private_file(path, "token file", MAX_TOKEN_BYTES).decode("utf-8", "replace").strip()
    if not data:
        raise TaskqError(grpc.StatusCode.INVALID_ARGUMENT, f"token file {path} is empty")
    return data


def read_join_bundle(path: str) -> "bundle_pb.JoinBundle":
    """Reads and checks a join bundle (common/join_bundle.h): text format of
    taskq.v1.JoinBundle, mode 0600, at least one master and a credential."""
    data = read_private_file(path, "join bundle", MAX_JOIN_BUNDLE_BYTES)
    bundle = bundle_pb.JoinBundle()
    try:
        text_format.Parse(data.decode("utf-8"), bundle)
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise TaskqError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"join bundle {path} is not a JoinBundle in text format: {e}")
    if not bundle.master:
        raise TaskqError(grpc.StatusCode.INVALID_ARGUMENT, f"join bundle {path} names no master")
    has_cert = bool(bundle.client_cert_pem) or bool(bundle.client_key_pem)
    if has_cert and not (bundle.client_cert_pem and bundle.client_key_pem):
        raise TaskqError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"join bundle {path} holds half a client certificate (cert and key go together)")
    if not bundle.token and not has_cert:
        raise TaskqError(grpc.StatusCode.INVALID_ARGUMENT, f"join bundle {path} holds no credential")
    return bundle


def _read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TaskqError(grpc.StatusCode.FAILED_PRECONDITION, f"cannot read {what} {path}: {e.strerror}")


def _never_reached(details: str) -> bool:
    # The same reading of gRPC's messages as common/call_retry.cc.
    return any(s in details for s in (
        "failed to connect", "Failed to connect", "DNS resolution failed", "Connection refused",
        "Handshake", "handshake", "before receiving SETTINGS frame"))


def _not_carried_out(details: str) -> bool:
    # Never sent, or the master said it did nothing: it was shutting down
    # (common/call_retry.h, MasterShuttingDown). Safe to send again.
    return _never_reached(details) or "master is shutting down" in details


def _tls_refused(details: str) -> bool:
    # Something only the user can fix: never retried (common/call_retry.h).
    return any(s in details for s in (
        "certificate verify failed", "CERTIFICATE_VERIFY_FAILED", "not in peer certificate",
        "SSL_ERROR_SSL", "WRONG_VERSION_NUMBER", "wrong version number"))


def owner_of(error: grpc.RpcError) -> "Optional[pb.QueueOwner]":
    """The QueueOwner a cluster master's refusal names (in the
    grpc-status-details-bin trailer: an RpcStatus holding an Any of
    taskq.v1.QueueOwner), or None."""
    try:
        trailers = error.trailing_metadata() or ()
    except Exception:  # not a call error (e.g. a channel closed)
        return None
    for key, value in trailers:
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = pb.RpcStatus()
        try:
            status.ParseFromString(value)
        except Exception:
            return None
        for detail in status.details:
            if detail.Is(pb.QueueOwner.DESCRIPTOR):
                owner = pb.QueueOwner()
                detail.Unpack(owner)
                return owner
    return None


def node_of(task_id: int) -> int:
    """The node number in a task id's top 16 bits (0: a single master's id)."""
    return (task_id >> 48) & 0xFFFF


def _route_of(method: str, request: Any) -> "Optional[tuple]":
    """Which master a call is for: ("queue", name), ("node", number), or
    None (the master this connection was given)."""
    if method in _MASTER_CALLS:
        return None
    if method == "CreateQueue":
        return ("queue", request.config.name)
    if method == "Ack":
        return ("node", node_of(request.leases[0].task_id)) if request.leases else None
    fields = request.DESCRIPTOR.fields_by_name
    if "queue" in fields and request.queue:
        return ("queue", request.queue)
    if "task_id" in fields and request.task_id:
        return ("node", node_of(request.task_id))
    return None


def retry_backoff(attempt: int) -> float:
    """Seconds to wait before retry `attempt` (1, 2, ...): 100 ms doubling to
    2 s, with jitter (50-100%)."""
    d = min(0.1 * (2 ** max(0, attempt - 1)), 2.0)
    return d * random.uniform(0.5, 1.0)


class Connection:
    """A channel to one master plus the credential sent with every call.

    Use `queue()`, `submit()`, `map()` and `taskq.Worker(conn, ...)`; `call()`
    is the raw door to any RPC of proto/taskq/v1/taskq.proto.
    """

    def __init__(self, channel: grpc.Channel, token: str, address: str, *,
                 retry_for: float = 30.0,
                 dial: Optional[Callable[[str], grpc.Channel]] = None):
        self.channel = channel
        self.address = address
        self.retry_for = retry_for
        self.stub = pb_grpc.TaskQueueStub(channel)
        self._metadata: tuple = (("authorization", f"Bearer {token}"),) if token else ()
        self._lock = threading.Lock()
        self._unreachable = False  # guarded by _lock: a notice was logged
        self._closed = False
        # Cluster mode: channels to the other masters (made by `dial` as
        # this one was), queue -> owner's address, node -> address. All
        # guarded by _lock; the maps are hints (a wrong entry costs a
        # redirect).
        self._dial = dial or grpc.insecure_channel
        self._channels: Dict[str, tuple] = {address: (channel, self.stub)}
        self._queue_addresses: Dict[str, str] = {}
        self._node_addresses: Dict[int, str] = {}
        self._nodes_loaded = False

    # -- plumbing --------------------------------------------------------
    @property
    def metadata(self) -> tuple:
        """The per-call metadata (the bearer token) for calls made on `stub`
        directly, e.g. the Work stream."""
        return self._metadata

    def call(self, method: str, request: Any, *, timeout: Optional[float] = None,
             retry: str = RETRY_ALWAYS, retry_for: Optional[float] = None) -> Any:
        """Calls RPC `method` (e.g. "Put") with `request`.

        `timeout` bounds the whole call, retries included (None: no bound).
        UNAVAILABLE (master down or restarting, link cut) is retried with
        backoff per `retry` for up to `retry_for` seconds (default: the
        connection's), waiting for the channel to connect in between; a
        notice goes to the "taskq" logger when the master becomes unreachable
        and when it is back. A queue being moved to another master (cluster
        mode: the master did nothing) is sent again with the same backoff and
        bound, whatever `retry` says short of RETRY_NEVER, and without a
        notice. Any other failure raises TaskqError at once.
        """
        route = _route_of(method, request)
        window = self.retry_for if retry_for is None else retry_for
        deadline = None if timeout is None else time.monotonic() + timeout
        first_failure: Optional[float] = None
        unreachable = False  # this call logged (or shared) the notice
        attempt = 0
        address = self._resolve(route)
        hops = 0
        while True:
            channel, stub = self._channel_at(address)
            left = None if deadline is None else max(0.001, deadline - time.monotonic())
            owner = None
            try:
                response = getattr(stub, method)(request, timeout=left, metadata=self._metadata)
            except grpc.RpcError as e:
                code, details = TaskqError.from_rpc_error(e).args_pair()
                owner = owner_of(e)
            else:
                if unreachable:
                    self._notice_reachable()
                return response
            moving = False
            if owner is not None:
                # Cluster mode: another master owns it. Follow a redirect;
                # an owner that is down is the caller's to hear at once.
                if (code == grpc.StatusCode.FAILED_PRECONDITION and not owner.down and
                        owner.address and hops < MAX_REDIRECTS):
                    self._learn(route, owner.address)
                    address = owner.address
                    hops += 1
                    continue
                # A queue being moved (taskq queue move): refused before
                # anything was done, so sent again whatever the call, to
                # the same master: once the move ends it redirects to the
                # new owner (common/client.cc, Client::Call).
                moving = owner.moving and not owner.down and retry != RETRY_NEVER
                if not moving:
                    raise TaskqError(code, details, owner=owner)
            # Decided outside the except clause, and the error made only
            # when raised: an exception kept in a local of this frame would
            # form a cycle with its own traceback, keeping the callers'
            # frames (and everything they hold) alive until the next GC.
            #
            # CANCELLED that this side did not ask for (the channel is
            # open): a master shutting down cancels the calls still open
            # 300 ms after it stops (master/server.cc). A cut, as
            # UNAVAILABLE, of a call that reached the master.
            cut = code == grpc.StatusCode.CANCELLED and not self._closed
            if not moving:
                if (code != grpc.StatusCode.UNAVAILABLE and not cut) or _tls_refused(details):
                    raise TaskqError(code, details)
                if address != self.address:
                    # A remembered owner out of reach: ask the given master
                    # next time (the queue may have moved, or its owner be
                    # down).
                    self._forget(route)
                if retry == RETRY_NEVER or (retry == RETRY_IF_NOT_SENT and
                                            (cut or not _not_carried_out(details))):
                    raise TaskqError(code, details)
            now = time.monotonic()
            if first_failure is None:
                first_failure = now
            if not moving and not unreachable:
                # (A master that refuses because of a move is reachable.)
                unreachable = True
                self._notice_unreachable(details, window)
            if now - first_failure >= window or (deadline is not None and now >= deadline):
                raise TaskqError(code, details, owner=owner)
            attempt += 1
            wait = retry_backoff(attempt)
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - now))
            if moving:
                # The channel is up: waiting for it to connect would not
                # wait at all.
                time.sleep(wait)
                hops = 0
                continue
            if "master is shutting down" in details:
                # Its connection stays up until its shutdown is over, and a
                # call sent on it meanwhile is refused or cut: wait until it
                # closes, so the next try reaches the master that comes back.
                self._wait_master_gone(channel, None if deadline is None else deadline - now)
            self._wait_ready(channel, wait)
            address = self._resolve(route)
            hops = 0

    # -- cluster routing (docs/CLUSTER.md) --------------------------------
    def _channel_at(self, address: str) -> tuple:
        """(channel, stub) for `address`, made on first use."""
        with self._lock:
            if self._closed:
                raise ValueError("the connection is closed")
            entry = self._channels.get(address)
            if entry is None:
                channel = self._dial(address)
                entry = (channel, pb_grpc.TaskQueueStub(channel))
                self._channels[address] = entry
            return entry

    def _resolve(self, route: Optional[tuple]) -> str:
        """The address to try first for `route`."""
        if route is None:
            return self.address
        kind, key = route
        with self._lock:
            if kind == "queue":
                return self._queue_addresses.get(key, self.address)
            if key == 0:
                return self.address  # a single master's id
            found = self._node_addresses.get(key)
            loaded = self._nodes_loaded
        if found is None and not loaded:
            # First call by a clustered id: learn the nodes (once; again
            # after a redirect showed the map is out of date).
            try:
                self.cluster()
            except TaskqError:
                pass
            with self._lock:
                found = self._node_addresses.get(key)
        return found or self.address

    def _learn(self, route: Optional[tuple], address: str) -> None:
        if route is None:
            return
        kind, key = route
        with self._lock:
            if kind == "queue":
                if len(self._queue_addresses) >= MAX_REMEMBERED_QUEUES:
                    self._queue_addresses.clear()
                self._queue_addresses[key] = address
            elif key:
                self._node_addresses[key] = address
                self._nodes_loaded = False

    def _forget(self, route: Optional[tuple]) -> None:
        if route is None:
            return
        kind, key = route
        with self._lock:
            (self._queue_addresses if kind == "queue" else self._node_addresses).pop(key, None)

    def stub_for(self, method: str, request: Any) -> Any:
        """The stub of the master a call of `method` with `request` goes to
        first (its queue's or task's master when known): for the raw async
        calls that do not go through call()."""
        return self._channel_at(self._resolve(_route_of(method, request)))[1]

    def cluster(self) -> "pb.GetClusterResponse":
        """The masters of the cluster, their node numbers and the queue
        placements (GetCluster). A single master, or one from before
        clusters: clustered = False."""
        try:
            response = self.call("GetCluster", pb.GetClusterRequest(), timeout=30.0)
        except TaskqError as e:
            if e.code != grpc.StatusCode.UNIMPLEMENTED:
                raise
            response = pb.GetClusterResponse()
        with self._lock:
            self._nodes_loaded = True
            for master in response.masters:
                if not master.node or not master.address:
                    continue
                if master.up:
                    self._node_addresses[master.node] = master.address
                else:
                    self._node_addresses.pop(master.node, None)
        return response

    def master_of(self, queue: str, place: bool = False) -> str:
        """The name of the master that owns `queue` ("" for a single master,
        or a queue not placed yet). `place`: a queue not placed yet is
        created first (default settings, as a Put would auto-create it)."""
        cluster = self.cluster()
        if not cluster.clustered:
            return ""
        for placement in cluster.placements:
            if placement.queue == queue:
                return placement.master
        if not place:
            return ""
        try:
            self.call("CreateQueue", pb.CreateQueueRequest(config=pb.QueueConfig(name=queue),
                                                           exist_ok=True),
                      timeout=30.0, retry=RETRY_ALWAYS)
        except TaskqError as e:
            if e.code != grpc.StatusCode.ALREADY_EXISTS:
                raise
        return self.master_of(queue, place=False)

    def _wait_master_gone(self, channel: grpc.Channel, timeout: Optional[float]) -> None:
        """Waits (up to 10 s, or `timeout`) until the channel is no longer
        connected to the master that said it is shutting down."""
        gone = threading.Event()

        def watch(state: grpc.ChannelConnectivity) -> None:
            if state != grpc.ChannelConnectivity.READY:
                gone.set()

        channel.subscribe(watch, try_to_connect=False)
        try:
            gone.wait(10.0 if timeout is None else max(0.0, min(10.0, timeout)))
        finally:
            channel.unsubscribe(watch)

    def wait_ready(self, timeout: float) -> bool:
        """Waits up to `timeout` s for the channel to connect; True if it did."""
        return self._wait_ready(self.channel, timeout)

    @staticmethod
    def _wait_ready(channel: grpc.Channel, timeout: float) -> bool:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
            return True
        except grpc.FutureTimeoutError:
            return False

    def _notice_unreachable(self, details: str, window: float) -> None:
        with self._lock:
            if self._unreachable:
                return
            self._unreachable = True
        log.warning("taskq: master %s unreachable (%s); retrying for up to %.0f s",
                    self.address, details, window)

    def _notice_reachable(self) -> None:
        with self._lock:
            if not self._unreachable:
                return
            self._unreachable = False
        log.warning("taskq: master %s reachable again", self.address)

    def close(self) -> None:
        """Closes the channel; calls in flight fail with CANCELLED."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            channels = [channel for channel, _ in self._channels.values()]
        for channel in channels:
            channel.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the user's doors (implemented in their own modules) -------------
    def queue(self, name: str, kind: Optional[str] = None, maxsize: Optional[int] = None,
              **options: Any):
        """A queue with the interface and semantics of Python's queue.Queue
        (taskq.queues.Queue; docs/PYTHON.md). kind ("fifo", "lifo",
        "priority") and maxsize left out: use the queue as the master has it
        (created as fifo, unbounded if new); given: it must be so."""
        from taskq.queues import Queue
        return Queue(self, name, kind=kind, maxsize=maxsize, **options)

    def submit(self, queue: str, handler: str, payloads: Iterable[Any],
               reply_to: Optional[str] = None, **options: Any):
        """Puts one task per payload for `handler` and returns one
        concurrent.futures.Future per task (taskq.jobs)."""
        from taskq.jobs import submit
        return submit(self, queue, handler, payloads, reply_to=reply_to, **options)

    def map(self, handler: str, iterable: Iterable[Any], *, queue: str, **options: Any):
        """Like Executor.map: the handler's results in input order (taskq.jobs)."""
        from taskq.jobs import map_results
        return map_results(self, handler, iterable, queue=queue, **options)


def _channel_options(connect_timeout: float, keepalive: float,
                     server_name: Optional[str]) -> list:
    keepalive_ms = int(max(keepalive, 1.0) * 1000)
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # A dead link is noticed within 2 x keepalive (common/channel.cc).
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", keepalive_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # gRPC takes the minimum reconnect backoff as the deadline of one
        # connect attempt: keep it at the connect timeout; retry soon after
        # a failure, at most every 2 s.
        ("grpc.min_reconnect_backoff_ms", int(max(connect_timeout, 1.0) * 1000)),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return options


def connect(address: Optional[str] = None, token_file: Optional[str] = None,
            tls_ca: Optional[str] = None, join: Optional[str] = None, *,
            token: Optional[str] = None, tls: bool = False,
            tls_server_name: Optional[str] = None, connect_timeout: float = 20.0,
            keepalive: float = 5.0, retry_for: float = 30.0) -> Connection:
    """Connects to a master, finding what is not given as the CLI does.

    address:   HOST:PORT (default: the join bundle's, else $TASKQ_MASTER,
               else 127.0.0.1:5000).
    token_file: the credential's token file, mode 0600 (default: the
               bundle's credential, else $TASKQ_TOKEN_FILE, else
               ~/.config/taskq/token). `token=` gives the token inline.
    tls_ca:    PEM file of the CA that signed the master's certificate;
               implies TLS (default: the bundle's CA, else $TASKQ_TLS_CA).
               `tls=True` alone uses the system's root certificates.
    join:      a join bundle (`taskq credential create ... --bundle FILE`;
               default $TASKQ_JOIN): addresses, CA and credential in one file.

    The channel connects lazily; the first call waits for it. Calls retry
    UNAVAILABLE for `retry_for` seconds (Connection.call).
    """
    join = join or os.environ.get("TASKQ_JOIN") or None
    bundle = read_join_bundle(join) if join else None

    addresses: Sequence[str]
    if address:
        addresses = [address]
    elif bundle is not None:
        addresses = list(bundle.master)
    else:
        addresses = [os.environ.get("TASKQ_MASTER") or DEFAULT_MASTER]

    ca_pem: Optional[bytes] = None
    if tls_ca:
        ca_pem = _read_file(tls_ca, "TLS CA file")
    elif bundle is not None and bundle.ca_pem:
        ca_pem = bundle.ca_pem.encode()
    elif os.environ.get("TASKQ_TLS_CA"):
        ca_pem = _read_file(os.environ["TASKQ_TLS_CA"], "TLS CA file ($TASKQ_TLS_CA)")
    server_name = tls_server_name or (bundle.server_name if bundle is not None else "") or None

    # The credential comes whole from one place: arguments, then the
    # bundle, then the default token file.
    cert_pem = key_pem = None
    if token:
        pass
    elif token_file:
        token = load_token(token_file)
    elif bundle is not None:
        if bundle.token:
            token = bundle.token
        else:
            cert_pem, key_pem = bundle.client_cert_pem.encode(), bundle.client_key_pem.encode()
    else:
        path = default_token_path()
        try:
            token = load_token(path)
        except TaskqError as e:
            raise TaskqError(e.code, f"{e.details} (pass token_file= or set TASKQ_TOKEN_FILE to "
                                     "the master's token, or use join=)") from None

    use_tls = tls or ca_pem is not None or cert_pem is not None or bundle is not None
    options = _channel_options(connect_timeout, keepalive, server_name)

    def make_channel(target: str) -> grpc.Channel:
        if use_tls:
            creds = grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key_pem,
                                                 certificate_chain=cert_pem)
            return grpc.secure_channel(target, creds, options=options)
        return grpc.insecure_channel(target, options=options)

    chosen = addresses[0]
    channel = None
    if len(addresses) > 1:
        # The first that connects within connect_timeout; else the first,
        # and the calls' retrying waits for it (common/channel.h).
        for target in addresses:
            candidate = make_channel(target)
            try:
                grpc.channel_ready_future(candidate).result(timeout=connect_timeout)
                chosen, channel = target, candidate
                break
            except grpc.FutureTimeoutError:
                candidate.close()
    if channel is None:
        channel = make_channel(chosen)
    return Connection(channel, token or "", chosen, retry_for=retry_for, dial=make_channel)
