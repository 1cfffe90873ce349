"""BMv2's Thrift runtime API, for what its P4Runtime server does not serve: registers and queues.

The Python bindings (bm_runtime, sswitch_runtime) come with BMv2, not from a package
registry: they are looked up in $INNET_BMV2_PYTHON, else /opt/p4/lib/python3.11/site-packages.
The server listens on 127.0.0.1:<thrift_port> inside the switch's namespace; the socket is
opened there and keeps working from any namespace afterwards.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from controller.errors import TargetError
from controller.netns import netns
from controller.p4.build import P4_HOME

BINDINGS = Path(os.environ.get("INNET_BMV2_PYTHON", P4_HOME / "lib" / "python3.11" / "site-packages"))
CONTEXT = 0          # BMv2's context id: one pipeline per switch
MAX_VALUE = 2**63 - 1   # Thrift carries register values as signed 64-bit integers; BMv2 saturates above


def _import_bindings():
    if str(BINDINGS) not in sys.path:
        sys.path.append(str(BINDINGS))   # appended: the venv's p4runtime stubs keep precedence
    try:
        from bm_runtime.standard import Standard
        from bm_runtime.standard.ttypes import InvalidRegisterOperation
        from sswitch_runtime import SimpleSwitch
        from thrift.protocol import TBinaryProtocol, TMultiplexedProtocol
        from thrift.transport import TSocket, TTransport
    except ImportError as exc:
        raise TargetError(f"BMv2's Thrift runtime bindings are not importable: {exc}",
                          hint=f"they ship with BMv2 (bm_runtime, sswitch_runtime) and need python3-thrift; "
                               f"set INNET_BMV2_PYTHON to their directory (now {BINDINGS})") from None
    return Standard, SimpleSwitch, InvalidRegisterOperation, TBinaryProtocol, TMultiplexedProtocol, TSocket, TTransport


class ThriftClient:
    """Registers and priority queues of one switch."""

    def __init__(self, namespace: str | None, port: int, where: str):
        Standard, SimpleSwitch, self._invalid, TBinary, TMulti, TSocket, TTransport = _import_bindings()
        self.where, self.port = where, port
        self._transport = TTransport.TBufferedTransport(TSocket.TSocket("127.0.0.1", port))
        protocol = TBinary.TBinaryProtocol(self._transport)
        self.standard = Standard.Client(TMulti.TMultiplexedProtocol(protocol, "standard"))
        self.simple_switch = SimpleSwitch.Client(TMulti.TMultiplexedProtocol(protocol, "simple_switch"))
        try:
            with netns(namespace):
                self._transport.open()
        except TTransport.TTransportException as exc:
            raise TargetError(f"{where}: cannot reach the switch's Thrift server on port {port}: {exc}",
                              hint="is the switch running? restart it, or the topology") from None

    def close(self) -> None:
        self._transport.close()

    def _call(self, doing: str, fn, *args):
        try:
            return fn(*args)
        except self._invalid as exc:
            raise TargetError(f"{self.where}: {doing} failed: BMv2 register error code {exc.code}") from None
        except Exception as exc:   # transport errors: the switch went away mid-call
            raise TargetError(f"{self.where}: {doing} failed: {exc}",
                              hint="is the switch still running? its log is in its run directory: "
                                   "/run/innet/<scope>/bmv2/<node>/") from None

    # registers: whole arrays per call, so a sketch is read in one round trip per array
    def register_read_all(self, name: str, bits: int) -> list[int]:
        mask = (1 << bits) - 1
        return [v & mask for v in self._call(f"reading register {name}", self.standard.bm_register_read_all,
                                             CONTEXT, name)]

    def register_write(self, name: str, index: int, value: int) -> None:
        self._call(f"writing register {name}[{index}]", self.standard.bm_register_write, CONTEXT, name, index, value)

    def register_fill(self, name: str, start: int, count: int, value: int = 0) -> None:
        """Set cells [start, start+count) to `value`."""
        self._call(f"writing register {name}[{start}:{start + count}]", self.standard.bm_register_write_range,
                   CONTEXT, name, start, start + count, value)   # BMv2's end index is exclusive

    def register_reset(self, name: str) -> None:
        self._call(f"resetting register {name}", self.standard.bm_register_reset, CONTEXT, name)

    # priority queues (simple_switch --priority-queues)
    def set_queue_rate(self, port: int, priority: int, rate_pps: int) -> None:
        self._call(f"setting the rate of queue {priority} of port {port}",
                   self.simple_switch.set_egress_priority_queue_rate, port, priority, rate_pps)

    def set_queue_depth(self, port: int, priority: int, depth_packets: int) -> None:
        self._call(f"setting the depth of queue {priority} of port {port}",
                   self.simple_switch.set_egress_priority_queue_depth, port, priority, depth_packets)
