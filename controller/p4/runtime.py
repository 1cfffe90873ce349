"""A P4Runtime client for one switch: pipeline, batched writes, reads (grpcio + p4runtime stubs).

BMv2's server applies a WriteRequest's updates one by one and reports each update's status
(CONTINUE_ON_ERROR; it offers no rollback), so callers get the per-update errors back and
undo what went in themselves.
"""
from __future__ import annotations

import queue
import time
from dataclasses import dataclass

import grpc
from google.rpc import code_pb2, status_pb2
from p4.v1 import p4runtime_pb2 as p4r
from p4.v1 import p4runtime_pb2_grpc

from controller.errors import TargetError

ARBITRATION_TIMEOUT = 5.0
RPC_TIMEOUT = 30.0
# grpc counts serializing the request against its deadline, and protobuf's pure-Python runtime
# takes about 60 us per table entry (BMv2 applies one in about 5 us): a write's deadline grows
# with its size, so one WriteRequest of 262,144 routes (nfrouter's largest table) still fits
WRITE_TIMEOUT_PER_UPDATE = 0.001
# grpc's defaults are too small for large batches: replies of 4 MB (a 65,536-route table read
# with its counters is more) and 8 KB of metadata, where BMv2 puts one status per update of a
# failed write (about 40 bytes each: a 10,001-update write with one refused update did not fit,
# so its errors, and with them the rollback, were lost). PI's server takes 256 MB requests.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_metadata_size", MAX_MESSAGE_BYTES)]


def grpc_ready(addr: str, timeout: float) -> bool:
    """True if a P4Runtime server answers at `addr` within `timeout` seconds."""
    with grpc.insecure_channel(addr) as channel:
        try:
            p4runtime_pb2_grpc.P4RuntimeStub(channel).Capabilities(p4r.CapabilitiesRequest(), timeout=timeout)
            return True
        except grpc.RpcError:
            return False


@dataclass(frozen=True)
class UpdateError:
    index: int           # position of the update in the request
    code: int            # google.rpc.Code
    message: str

    @property
    def code_name(self) -> str:
        return code_pb2.Code.Name(self.code) if self.code in code_pb2.Code.values() else str(self.code)


class WriteFailed(Exception):
    """Some updates of a WriteRequest failed; `errors` lists them, the others went in."""

    def __init__(self, errors: list[UpdateError], total: int):
        super().__init__(f"{len(errors)} of {total} updates failed")
        self.errors, self.total = errors, total


class P4RuntimeClient:
    """The primary controller's session with one device (kept open for its stream channel)."""

    def __init__(self, addr: str, device_id: int, where: str):
        self.addr, self.device_id, self.where = addr, device_id, where
        # a newer controller process wins the election: its id is larger
        now = time.time_ns()
        self.election_id = p4r.Uint128(high=now >> 64, low=now & (2**64 - 1))
        self.channel = grpc.insecure_channel(addr, options=CHANNEL_OPTIONS)
        self.stub = p4runtime_pb2_grpc.P4RuntimeStub(self.channel)
        self._requests: queue.Queue = queue.Queue()
        self._stream = self.stub.StreamChannel(iter(self._requests.get, None))
        self._arbitrate()

    def _arbitrate(self) -> None:
        self._requests.put(p4r.StreamMessageRequest(arbitration=p4r.MasterArbitrationUpdate(
            device_id=self.device_id, election_id=self.election_id)))
        try:
            reply = next(self._stream)
        except grpc.RpcError as exc:
            self.close()
            raise self.transport_error(exc, "connecting") from None
        status = reply.arbitration.status
        if status.code != code_pb2.OK:
            self.close()
            raise TargetError(f"{self.where}: the switch did not make innet its primary controller: {status.message}",
                              hint="another controller holds the switch with a newer election id; stop it")

    def close(self) -> None:
        self._requests.put(None)
        self.channel.close()

    def transport_error(self, exc: grpc.RpcError, doing: str) -> TargetError:
        code = exc.code() if hasattr(exc, "code") else None
        detail = exc.details() if hasattr(exc, "details") else str(exc)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            return TargetError(f"{self.where}: cannot reach the switch's P4Runtime server at {self.addr} "
                               f"while {doing}: {detail}",
                               hint="is the switch running? `innet nodes` lists nodes; restart the topology "
                                    "or the switch (controller.p4.switch.start)")
        return TargetError(f"{self.where}: P4Runtime {doing} failed ({code.name if code else 'error'}): {detail}")

    # ---- pipeline ---------------------------------------------------------------------
    def set_pipeline(self, p4info, device_config: bytes, cookie: int) -> None:
        config = p4r.ForwardingPipelineConfig(p4info=p4info, p4_device_config=device_config,
                                              cookie=p4r.ForwardingPipelineConfig.Cookie(cookie=cookie))
        request = p4r.SetForwardingPipelineConfigRequest(
            device_id=self.device_id, election_id=self.election_id, config=config,
            action=p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT)
        try:
            self.stub.SetForwardingPipelineConfig(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            raise self.transport_error(exc, "loading the pipeline") from None

    def pipeline_cookie(self) -> int | None:
        """The cookie of the loaded pipeline, or None if the switch has none."""
        request = p4r.GetForwardingPipelineConfigRequest(
            device_id=self.device_id, response_type=p4r.GetForwardingPipelineConfigRequest.COOKIE_ONLY)
        try:
            reply = self.stub.GetForwardingPipelineConfig(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:   # no pipeline yet
                return None
            raise self.transport_error(exc, "reading the pipeline") from None
        return reply.config.cookie.cookie if reply.config.HasField("cookie") else None

    # ---- entities ---------------------------------------------------------------------
    def write(self, updates: list[p4r.Update]) -> None:
        """Apply `updates` in one WriteRequest; WriteFailed says which ones did not go in."""
        if not updates:
            return
        request = p4r.WriteRequest(device_id=self.device_id, election_id=self.election_id, updates=updates)
        try:
            self.stub.Write(request, timeout=RPC_TIMEOUT + WRITE_TIMEOUT_PER_UPDATE * len(updates))
        except grpc.RpcError as exc:
            errors = _update_errors(exc)
            if errors is None:
                raise self.transport_error(exc, "writing") from None
            raise WriteFailed(errors, len(updates)) from None

    def read(self, entities: list[p4r.Entity]) -> list[p4r.Entity]:
        request = p4r.ReadRequest(device_id=self.device_id, entities=entities)
        try:
            return [e for reply in self.stub.Read(request, timeout=RPC_TIMEOUT) for e in reply.entities]
        except grpc.RpcError as exc:
            raise self.transport_error(exc, "reading") from None


def _update_errors(exc: grpc.RpcError) -> list[UpdateError] | None:
    """Per-update errors from the status details BMv2 attaches to a failed Write (None: none attached)."""
    for key, value in (exc.trailing_metadata() or ()):
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            errors = []
            for i, detail in enumerate(status.details):
                err = p4r.Error()
                detail.Unpack(err)
                if err.canonical_code != code_pb2.OK:
                    errors.append(UpdateError(i, err.canonical_code, err.message))
            return errors
    return None
