"""simple_switch_grpc processes: one BMv2 switch per node of a scope, started and stopped here.

A plain library, usable from the controller, from tests on bare namespaces and from a
Mininet node class (give it the host's namespace, e.g. f"/proc/{host.pid}/ns/net"):

    sw = switch.start(scope, "s1", ["s1-eth0", "s1-eth1"], netns=f"/proc/{pid}/ns/net")
    ...                                     # Bmv2Target finds it by scope and node name
    switch.stop(scope, "s1")

The switch runs inside the node's network namespace, so it opens the node's interfaces and its
Thrift server (which binds 0.0.0.0) is private to that namespace. Everything of it lives in
<scope run dir>/bmv2/<node>/ (controller.scope: /run/innet/<scope>/bmv2/<node>/), so two
scopes never see each other's switches: its P4Runtime server's unix socket p4rt.sock
(reachable from any namespace), its notification socket, its logs, and switch.json, what the
controller needs to reach it (pid, ports, gRPC address, Thrift port, device id, logs). The
switch starts with no pipeline (--no-p4): Bmv2Target pushes one over P4Runtime.

Before the first start, the binary is asked what it is (`--version`, `--help`): innet needs
BMv2 1.15 or later with its P4Runtime gRPC server (simple_switch_grpc, BMv2 configured
--with-pi) and its Thrift server (--with-thrift, which simple_switch_grpc lacks otherwise);
what is missing is said with how to rebuild it. INNET_BMV2_SWITCH names the binary to run
instead of the one found on PATH or in /opt/p4/bin.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from controller.errors import TargetError, TopologyError
from controller.netns import netns as enter_netns
from controller.node import Node
from controller.p4.build import P4_HOME, find_tool
from controller.scope import Scope, _flock

log = logging.getLogger("innet.bmv2")

SWITCH_BINARY = "simple_switch_grpc"
SWITCH_BINARY_ENV = "INNET_BMV2_SWITCH"   # a simple_switch_grpc to run instead of the one found
MIN_VERSION = (1, 15)
PROBE_TIMEOUT = 10.0
REBUILD = ("rebuild BMv2 as the README's P4 toolchain section says: PI v0.1.2 (--with-proto) first, then "
           "behavioral-model 1.15.5 configured --with-pi --with-thrift (`make -C targets/simple_switch_grpc "
           "clean` before `make && make install` if it was built before)")
LOG_LEVEL = os.environ.get("INNET_BMV2_LOG_LEVEL", "warn")   # 'info' and below log every packet
LOG_TAIL_LINES = 15
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
UNIX_PATH_MAX = 107   # sun_path's 108 bytes, the last one NUL: for the gRPC and notification sockets
DEVICE_ID_LOCK_TIMEOUT = 30.0


@dataclass(frozen=True)
class SwitchInfo:
    node: str
    pid: int
    netns: str | None             # namespace file the switch runs in; None: the controller's
    ports: dict[str, int]         # interface name -> BMv2 port number
    grpc_addr: str                # P4Runtime server
    thrift_port: int              # BMv2's Thrift runtime, on 127.0.0.1 inside `netns`
    device_id: int
    priority_queues: int
    cpu_port: int | None
    log_file: str                 # BMv2's own log
    output_file: str              # the process's stdout and stderr

    @property
    def port_names(self) -> dict[int, str]:
        return {p: i for i, p in self.ports.items()}


def unavailable() -> str | None:
    """Why BMv2 switches cannot run here, or None: what tests skip with."""
    try:
        check_binary(switch_binary())
    except TargetError as exc:
        return f"{exc.message} ({exc.hint})"
    if not find_tool("p4c"):
        return f"p4c not found on PATH or in {P4_HOME}/bin: p4c and BMv2 come from no package registry"
    return None


def switch_binary() -> str:
    """The simple_switch_grpc to run: $INNET_BMV2_SWITCH, else the one on PATH or in /opt/p4/bin."""
    binary = os.environ.get(SWITCH_BINARY_ENV) or find_tool(SWITCH_BINARY)
    if not binary:
        raise TargetError(f"{SWITCH_BINARY} not found on PATH or in {P4_HOME}/bin",
                          hint="build BMv2 with P4Runtime support into /opt/p4 (see the README's P4 toolchain section) "
                               f"or put it on PATH, or name it in {SWITCH_BINARY_ENV}")
    return binary


def check_binary(binary: str) -> str:
    """Its version, if `binary` is a BMv2 switch innet can drive (MIN_VERSION or later, with a
    P4Runtime gRPC server and a Thrift server); else TargetError saying what to rebuild, how."""
    try:
        stat = os.stat(binary)
    except OSError as exc:
        hint = f"build it (see the README's P4 toolchain section), or fix {SWITCH_BINARY_ENV}"
        raise TargetError(f"BMv2 switch {binary}: {exc.strerror}", hint=hint) from None
    return _probe(binary, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _probe(binary: str, mtime_ns: int, size: int) -> str:
    """check_binary's work, once per binary as it is on disk."""
    version_text = _ask(binary, "--version")
    found = re.match(r"\s*(\d+)\.(\d+)\.(\d+)", version_text)
    if not found:
        first = version_text.strip().splitlines()[0] if version_text.strip() else "nothing"
        raise TargetError(f"{binary} is not BMv2's {SWITCH_BINARY}: `--version` printed {first[:80]!r}",
                          hint=f"point {SWITCH_BINARY_ENV} at simple_switch_grpc, or unset it; or {REBUILD}")
    version = ".".join(found.groups())
    if tuple(int(n) for n in found.groups()[:2]) < MIN_VERSION:
        raise TargetError(f"{binary} is BMv2 {version}; innet needs {'.'.join(map(str, MIN_VERSION))} or later",
                          hint=REBUILD)
    help_text = _ask(binary, "--help")
    missing = [what for option, what in (("--grpc-server-addr", "P4Runtime gRPC server (simple_switch_grpc of a BMv2 "
                                                                "configured --with-pi)"),
                                         ("--thrift-port", "Thrift server (BMv2 configured --with-thrift)"))
               if option not in help_text]
    if missing:
        raise TargetError(f"{binary} (BMv2 {version}) has no {' and no '.join(missing)}: innet programs the switch "
                          f"over P4Runtime and reads registers and queues over Thrift", hint=REBUILD)
    return version


def _ask(binary: str, option: str) -> str:
    """What `binary option` prints (stdout and stderr)."""
    try:
        res = subprocess.run([binary, option], capture_output=True, text=True, errors="replace",
                             timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise TargetError(f"{binary} {option} did not finish within {PROBE_TIMEOUT:.0f}s: it is not BMv2's "
                          f"{SWITCH_BINARY}",
                          hint=f"point {SWITCH_BINARY_ENV} at simple_switch_grpc, or unset it") from None
    except OSError as exc:
        raise TargetError(f"cannot run BMv2 switch {binary}: {exc.strerror}",
                          hint=f"point {SWITCH_BINARY_ENV} at simple_switch_grpc, or unset it; or {REBUILD}") from None
    return res.stdout + res.stderr


def state_dir(scope: Scope, node: str) -> Path:
    """Where everything of `node`'s switch lives: deleted whole when the switch stops."""
    return scope.run_dir / "bmv2" / node


def _state_file(scope: Scope, node: str) -> Path:
    return state_dir(scope, node) / "switch.json"


def info(scope: Scope, node: str) -> SwitchInfo | None:
    """The switch recorded for `node` in `scope`, or None."""
    path = _state_file(scope, node)
    if not path.exists():
        return None
    return SwitchInfo(**json.loads(path.read_text()))


def is_running(sw: SwitchInfo) -> bool:
    """True while the recorded process is alive and still this node's switch."""
    try:
        cmdline = Path(f"/proc/{sw.pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{sw.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return status != "Z" and SWITCH_BINARY.encode() in cmdline[0] and sw.grpc_addr.encode() in b" ".join(cmdline)


def log_tail(sw: SwitchInfo, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of the switch's output and log, errors first: what to show when it fails."""
    text = []
    for path in (sw.output_file, sw.log_file):
        try:
            text += [ln for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            continue
    errors = [ln for ln in text if any(w in ln.lower() for w in ("error", "fail", "exception", "abort", "cannot"))]
    chosen = (errors or text)[-lines:]
    return "\n".join("    " + ln for ln in chosen) or "    (the switch wrote nothing)"


def ensure_running(sw: SwitchInfo) -> None:
    if not is_running(sw):
        raise TargetError(f"the BMv2 switch of {sw.node} (pid {sw.pid}) is not running; its last output:\n"
                          f"{log_tail(sw)}",
                          hint=f"restart it (bring the topology up again, or controller.p4.switch.start(scope, '{sw.node}', ...)); "
                               f"full log: {sw.log_file}")


def _free_port(netns: str | None) -> int:
    """A TCP port free in `netns` (the Thrift server binds 0.0.0.0 there)."""
    with enter_netns(netns), socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def _device_id(scope: Scope) -> int:
    """The lowest device id no switch of any scope uses: BMv2 names its IPC endpoints by it.
    Called under the device-id lock, until the new switch's switch.json is written."""
    used = set()
    for path in scope.run_dir.parent.glob("*/bmv2/*/switch.json"):   # every scope's switches
        try:
            used.add(json.loads(path.read_text())["device_id"])
        except (OSError, ValueError, KeyError):
            continue
    return next(i for i in range(1, len(used) + 2) if i not in used)


def _check_socket_path(node: str, path: Path) -> None:
    if len(str(path).encode()) > UNIX_PATH_MAX:
        raise TargetError(f"the BMv2 switch of {node}: socket path {path} is {len(str(path).encode())} bytes, "
                          f"a unix socket takes at most {UNIX_PATH_MAX}",
                          hint="set INNET_RUN to a shorter directory, or use a shorter scope or node name")


def start(scope: Scope, node: str, interfaces: list[str] | dict[str, int], netns: str | None = None,
          priority_queues: int = 8, cpu_port: int | None = None, progress=None,
          timeout: float = START_TIMEOUT) -> SwitchInfo:
    """Start `node`'s switch in `scope` on `interfaces` (a list: ports 1, 2, ... in order; or name -> port).

    Waits until its P4Runtime and Thrift servers answer, calling `progress(message)` about
    once a second. A failed start leaves nothing behind and raises TargetError with the
    relevant lines of the switch's log.
    """
    binary = switch_binary()
    check_binary(binary)
    ports = dict(interfaces) if isinstance(interfaces, dict) else {i: n for n, i in enumerate(interfaces, start=1)}
    if not ports:
        raise TargetError(f"starting the BMv2 switch of {node}: no interfaces given")
    _check_interfaces(node, list(ports), netns)   # BMv2 would run on, silently without them
    current = info(scope, node)
    if current is not None:
        if is_running(current):
            raise TargetError(f"{node} already runs a BMv2 switch (pid {current.pid})",
                              hint=f"stop it first: controller.p4.switch.stop(scope, '{node}')")
        stop(scope, node)   # a dead switch's leftovers
    directory = state_dir(scope, node)
    sock, notifications = directory / "p4rt.sock", directory / "notifications.ipc"
    for path in (sock, notifications):
        _check_socket_path(node, path)
    directory.mkdir(parents=True, exist_ok=True)
    thrift_port = _free_port(netns)
    log_file = directory / "switch.log"
    output_file = directory / "output.log"
    # one lock for the whole machine's scopes: two starts at once must not pick the same device id
    with _flock(scope.run_dir.parent / "bmv2-device-ids.lock", DEVICE_ID_LOCK_TIMEOUT, "BMv2 device id lock"):
        device_id = _device_id(scope)
        cmd = [binary, "--device-id", str(device_id), "--thrift-port", str(thrift_port), "--no-p4",
               "--log-file", str(log_file.with_suffix("")), "--log-level", LOG_LEVEL, "--log-flush",
               "--notifications-addr", f"ipc://{notifications}",
               *(arg for name, port in sorted(ports.items(), key=lambda p: p[1]) for arg in ("-i", f"{port}@{name}")),
               "--", "--grpc-server-addr", f"unix:{sock}", "--priority-queues", str(priority_queues)]
        if cpu_port is not None:
            cmd += ["--cpu-port", str(cpu_port)]
        if netns is not None:
            cmd = ["nsenter", f"--net={netns}", *cmd]
        log.info("starting the BMv2 switch of %s: %s", node, " ".join(cmd))
        with open(output_file, "w") as out:
            # a session of its own: the switch outlives this process, as a node's data plane does
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        sw = SwitchInfo(node, proc.pid, netns, ports, f"unix:{sock}", thrift_port, device_id, priority_queues,
                        cpu_port, str(log_file), str(output_file))
        _state_file(scope, node).write_text(json.dumps(asdict(sw), indent=1))
    try:
        _wait_ready(sw, proc, " ".join(cmd), progress or (lambda msg: None), timeout)
    except BaseException:
        stop(scope, node)
        raise
    return sw


def _check_interfaces(node: str, names: list[str], netns: str | None) -> None:
    present = set(Node(node, netns).interfaces())
    missing = [n for n in names if n not in present]
    if missing:
        raise TopologyError(f"the BMv2 switch of {node}: no interface {', '.join(missing)} in its namespace",
                            hint=f"interfaces there: {', '.join(sorted(present))}")


def _wait_ready(sw: SwitchInfo, proc: subprocess.Popen, cmd: str, progress, timeout: float) -> None:
    from controller.p4.runtime import grpc_ready   # grpc is imported only when a switch is used
    began = time.monotonic()
    announced = 0
    grpc_up = thrift_up = False
    while True:
        if proc.poll() is not None:
            raise TargetError(f"the BMv2 switch of {sw.node} exited with status {proc.returncode} while starting:\n"
                              f"{log_tail(sw)}",
                              hint=f"check the switch's options; the command was: {cmd}")
        waited = time.monotonic() - began
        grpc_up = grpc_up or (Path(sw.grpc_addr[len("unix:"):]).exists() and grpc_ready(sw.grpc_addr, 0.5))
        thrift_up = thrift_up or _thrift_ready(sw)
        if grpc_up and thrift_up:
            log.info("BMv2 switch of %s ready after %.1fs (pid %d)", sw.node, waited, sw.pid)
            return
        if waited > timeout:
            raise _not_ready(sw, cmd, timeout, grpc_up, thrift_up)
        if waited >= announced + 1:
            announced = int(waited)
            progress(f"[bmv2] waiting for the switch of {sw.node} ({announced}s)")
        time.sleep(0.1)


def _not_ready(sw: SwitchInfo, cmd: str, timeout: float, grpc_up: bool, thrift_up: bool) -> TargetError:
    """Why a running switch is not ready after `timeout`: the server that never answered, and
    what its log says of it."""
    tail = log_tail(sw)
    if not thrift_up:
        grpc = "its P4Runtime server answers" if grpc_up else f"nor answered P4Runtime on {sw.grpc_addr}"
        if "Could not bind" in tail:
            why = f"another process holds port {sw.thrift_port} in the node's namespace (see the log above)"
        elif grpc_up:
            why = f"a switch built without --with-thrift has no Thrift server: {REBUILD}"
        else:
            why = "its log above may say why; with nothing there, the machine may be overloaded: try again"
        return TargetError(f"the BMv2 switch of {sw.node} never opened its Thrift port {sw.thrift_port} "
                           f"({grpc}) in {timeout:.0f}s:\n{tail}", hint=f"{why}. The command was: {cmd}")
    return TargetError(f"the BMv2 switch of {sw.node} opened its Thrift port but never answered P4Runtime on "
                       f"{sw.grpc_addr} in {timeout:.0f}s:\n{tail}",
                       hint=f"its log above may say why; with nothing there, the machine may be overloaded: try "
                            f"again. The command was: {cmd}")


def _thrift_ready(sw: SwitchInfo) -> bool:
    try:
        with enter_netns(sw.netns), socket.create_connection(("127.0.0.1", sw.thrift_port), timeout=0.5):
            return True
    except OSError:
        return False


def stop(scope: Scope, node: str) -> bool:
    """Stop `node`'s switch in `scope` and drop its sockets, logs and state; False if none was recorded."""
    sw = info(scope, node)
    if sw is None:
        return False
    if is_running(sw):
        os.kill(sw.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while is_running(sw) and time.monotonic() < deadline:
            time.sleep(0.05)
        if is_running(sw):
            log.warning("the BMv2 switch of %s ignored SIGTERM; killing it", node)
            os.kill(sw.pid, signal.SIGKILL)
    _reap(sw.pid)
    shutil.rmtree(state_dir(scope, node), ignore_errors=True)
    log.info("BMv2 switch of %s stopped", node)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status if the switch is our child (a Popen of this process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
