"""A thin ctypes binding to libbpf.so.1: open, load, pin, map operations, test runs.

Only what innet needs is bound. Errors come back as BpfError with the errno text and
what was being done, never as a bare negative number.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
from dataclasses import dataclass
from typing import Iterator

from controller.errors import BpfError, VerifierError

log = logging.getLogger("innet.libbpf")

_lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
_libc = ctypes.CDLL(None, use_errno=True)

c_void_p, c_char_p, c_int, c_uint, c_size_t = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                                ctypes.c_uint, ctypes.c_size_t)


def _bind(name: str, restype, *argtypes):
    fn = getattr(_lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


bpf_object__open_file = _bind("bpf_object__open_file", c_void_p, c_char_p, c_void_p)
bpf_object__load = _bind("bpf_object__load", c_int, c_void_p)
bpf_object__close = _bind("bpf_object__close", None, c_void_p)
bpf_object__next_program = _bind("bpf_object__next_program", c_void_p, c_void_p, c_void_p)
bpf_object__next_map = _bind("bpf_object__next_map", c_void_p, c_void_p, c_void_p)
bpf_program__name = _bind("bpf_program__name", c_char_p, c_void_p)
bpf_program__fd = _bind("bpf_program__fd", c_int, c_void_p)
bpf_program__set_log_buf = _bind("bpf_program__set_log_buf", c_int, c_void_p, c_void_p, c_size_t)
bpf_map__name = _bind("bpf_map__name", c_char_p, c_void_p)
bpf_map__fd = _bind("bpf_map__fd", c_int, c_void_p)
bpf_map__set_pin_path = _bind("bpf_map__set_pin_path", c_int, c_void_p, c_char_p)
bpf_map__set_max_entries = _bind("bpf_map__set_max_entries", c_int, c_void_p, c_uint)
bpf_map__btf_key_type_id = _bind("bpf_map__btf_key_type_id", c_uint, c_void_p)
bpf_map__btf_value_type_id = _bind("bpf_map__btf_value_type_id", c_uint, c_void_p)
bpf_map_update_elem = _bind("bpf_map_update_elem", c_int, c_int, c_void_p, c_void_p, ctypes.c_uint64)
bpf_map_lookup_elem = _bind("bpf_map_lookup_elem", c_int, c_int, c_void_p, c_void_p)
bpf_map_delete_elem = _bind("bpf_map_delete_elem", c_int, c_int, c_void_p)
bpf_map_lookup_batch = _bind("bpf_map_lookup_batch", c_int, c_int, c_void_p, c_void_p, c_void_p, c_void_p,
                             ctypes.POINTER(ctypes.c_uint32), c_void_p)
bpf_map_update_batch = _bind("bpf_map_update_batch", c_int, c_int, c_void_p, c_void_p,
                             ctypes.POINTER(ctypes.c_uint32), c_void_p)
bpf_map_delete_batch = _bind("bpf_map_delete_batch", c_int, c_int, c_void_p, ctypes.POINTER(ctypes.c_uint32), c_void_p)
bpf_map_get_next_key = _bind("bpf_map_get_next_key", c_int, c_int, c_void_p, c_void_p)
bpf_obj_pin = _bind("bpf_obj_pin", c_int, c_int, c_char_p)
bpf_obj_get = _bind("bpf_obj_get", c_int, c_char_p)
bpf_prog_get_fd_by_id = _bind("bpf_prog_get_fd_by_id", c_int, c_uint)
bpf_obj_get_info_by_fd = _bind("bpf_obj_get_info_by_fd", c_int, c_int, c_void_p, ctypes.POINTER(ctypes.c_uint32))
bpf_prog_test_run_opts = _bind("bpf_prog_test_run_opts", c_int, c_int, c_void_p)
libbpf_num_possible_cpus = _bind("libbpf_num_possible_cpus", c_int)

_PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
_vsnprintf = _libc.vsnprintf
_vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


@_PRINT_FN
def _libbpf_print(level, fmt, args):  # pragma: no cover - exercised through libbpf
    buf = ctypes.create_string_buffer(2048)
    _vsnprintf(buf, len(buf), fmt, args)  # on x86-64 a va_list is passed as a pointer
    log.log(_LEVELS.get(level, logging.DEBUG), "%s", buf.value.decode(errors="replace").rstrip())
    return 0


_lib.libbpf_set_print.restype = c_void_p
_lib.libbpf_set_print.argtypes = [_PRINT_FN]
_lib.libbpf_set_print(_libbpf_print)

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
ENOTSUPP = 524   # the kernel's own "operation not supported", as a map without batch ops answers
_NO_BATCH = (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP)
_FULL = (errno.E2BIG, errno.ENOSPC, errno.ENOMEM)
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
BPF_OBJ_NAME_LEN = 16


def _check(ret: int, what: str) -> int:
    """libbpf returns -errno (or -1 with errno set); turn that into a BpfError."""
    if ret < 0:
        err = _errno(ret)
        raise BpfError(f"{what}: {os.strerror(err)}", errno=err)
    return ret


def _errno(ret: int) -> int:
    return ctypes.get_errno() if ret == -1 else -ret


def _buffer(data: bytes | bytearray):
    """A C copy of `data` for the kernel to read."""
    return ctypes.create_string_buffer(bytes(data), len(data))


def num_possible_cpus() -> int:
    return _check(libbpf_num_possible_cpus(), "counting possible CPUs")


class BpfMap:
    """A BPF map by file descriptor: raw-bytes lookup, update, delete and iteration."""

    def __init__(self, fd: int, name: str, key_size: int, value_size: int, per_cpu: bool,
                 max_entries: int, owns_fd: bool = False):
        self.fd, self.name, self.key_size, self.value_size = fd, name, key_size, value_size
        self.per_cpu, self.max_entries, self._owns_fd = per_cpu, max_entries, owns_fd
        # a per-CPU map's value comes back once per possible CPU, each rounded up to 8 bytes
        self.stride = (value_size + 7) & ~7
        self.read_size = self.stride * num_possible_cpus() if per_cpu else value_size

    @classmethod
    def from_pin(cls, path: str) -> "BpfMap":
        fd = _check(bpf_obj_get(path.encode()), f"opening pinned map {path}")
        info = _MapInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        _check(bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), f"reading map info of {path}")
        return cls(fd, info.name.decode(), info.key_size, info.value_size, info.type in _PERCPU_TYPES,
                   info.max_entries, owns_fd=True)

    def close(self) -> None:
        if self._owns_fd and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _key(self, key: bytes):
        if len(key) != self.key_size:
            raise BpfError(f"map {self.name}: key is {len(key)} bytes, the map wants {self.key_size}")
        return ctypes.create_string_buffer(key, self.key_size)

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        want = self.read_size if self.per_cpu else self.value_size
        if len(value) != want:
            raise BpfError(f"map {self.name}: value is {len(value)} bytes, the map wants {want}")
        ret = bpf_map_update_elem(self.fd, self._key(key), ctypes.create_string_buffer(value, want), flags)
        if ret < 0:
            self._update_failed(_errno(ret))

    def _update_failed(self, err: int) -> None:
        if err in _FULL:
            raise BpfError(f"map {self.name} is full ({self.max_entries} entries): {os.strerror(err)}",
                           errno=err, hint="delete entries first, or redeploy the NF with a larger table")
        raise BpfError(f"updating map {self.name}: {os.strerror(err)}", errno=err)

    def update_many(self, keys: bytes, values: bytes) -> None:
        """Insert or overwrite entries given as concatenated keys and values (per-CPU maps:
        `read_size` bytes per value) in one BPF_MAP_UPDATE_BATCH call; one update per entry
        where the kernel has no batch operations for the map's type. On failure some entries
        may be written already: the caller puts back what it must."""
        want = self.read_size if self.per_cpu else self.value_size
        count = len(keys) // self.key_size
        if count * self.key_size != len(keys) or count * want != len(values):
            raise BpfError(f"map {self.name}: {len(keys)} bytes of keys and {len(values)} of values "
                           f"are not whole entries ({self.key_size} + {want} bytes each)")
        if not count:
            return
        n = ctypes.c_uint32(count)
        ret = bpf_map_update_batch(self.fd, _buffer(keys), _buffer(values), ctypes.byref(n), None)
        if ret >= 0:
            return
        err = _errno(ret)
        if err not in _NO_BATCH:
            self._update_failed(err)
        # no batch operations here (or one entry is invalid): entry by entry, which also says
        # which entry the kernel refuses; redoing entries the batch wrote is harmless
        for i in range(count):
            self.update(bytes(keys[i * self.key_size:(i + 1) * self.key_size]), bytes(values[i * want:(i + 1) * want]))

    def lookup(self, key: bytes) -> bytes | None:
        out = ctypes.create_string_buffer(self.read_size)
        ret = bpf_map_lookup_elem(self.fd, self._key(key), out)
        if ret < 0:
            if ctypes.get_errno() == errno.ENOENT or ret == -errno.ENOENT:
                return None
            _check(ret, f"reading map {self.name}")
        return out.raw

    def lookup_per_cpu(self, key: bytes) -> list[bytes]:
        raw = self.lookup(key)
        if raw is None:
            return []
        return [raw[i:i + self.value_size] for i in range(0, len(raw), self.stride)]

    def delete(self, key: bytes) -> bool:
        ret = bpf_map_delete_elem(self.fd, self._key(key))
        if ret < 0:
            if ctypes.get_errno() == errno.ENOENT or ret == -errno.ENOENT:
                return False
            _check(ret, f"deleting from map {self.name}")
        return True

    def delete_many(self, keys: bytes) -> int:
        """Delete entries by their concatenated keys in BPF_MAP_DELETE_BATCH calls, skipping keys
        that are not there; returns how many were."""
        count = len(keys) // self.key_size
        buf = _buffer(keys)
        done = deleted = 0
        while done < count:
            n = ctypes.c_uint32(count - done)
            ret = bpf_map_delete_batch(self.fd, ctypes.byref(buf, done * self.key_size), ctypes.byref(n), None)
            if ret >= 0:
                return deleted + n.value
            err = _errno(ret)
            if err == errno.ENOENT:   # the batch stopped at key done + n, which is not there
                deleted += n.value
                done += n.value + 1
            elif err in _NO_BATCH:
                return deleted + sum(self.delete(bytes(keys[i * self.key_size:(i + 1) * self.key_size]))
                                     for i in range(done, count))
            else:
                raise BpfError(f"deleting from map {self.name}: {os.strerror(err)}", errno=err)
        return deleted

    def keys(self) -> Iterator[bytes]:
        cur, nxt = None, ctypes.create_string_buffer(self.key_size)
        while True:
            ret = bpf_map_get_next_key(self.fd, cur, nxt)
            if ret < 0:
                if ctypes.get_errno() == errno.ENOENT or ret == -errno.ENOENT:
                    return
                _check(ret, f"iterating map {self.name}")
            key = nxt.raw
            yield key
            cur = ctypes.create_string_buffer(key, self.key_size)

    def lookup_all(self, batch: int = 4096) -> bytes:
        """Every value of an array map, index order, in BPF_MAP_LOOKUP_BATCH calls of `batch` entries.

        Per-CPU maps give `read_size` bytes per index (each CPU's value, 8-byte aligned)."""
        n = self.max_entries
        out = ctypes.create_string_buffer(n * self.read_size)
        keys = ctypes.create_string_buffer(n * self.key_size)
        token = ctypes.create_string_buffer(self.key_size)
        done = 0
        while done < n:
            count = ctypes.c_uint32(min(batch, n - done))
            ret = bpf_map_lookup_batch(self.fd, token if done else None, token,
                                       ctypes.byref(keys, done * self.key_size),
                                       ctypes.byref(out, done * self.read_size), ctypes.byref(count), None)
            done += count.value
            if ret < 0:
                if ctypes.get_errno() == errno.ENOENT or ret == -errno.ENOENT:
                    break   # the last batch
                _check(ret, f"batch-reading map {self.name}")
        if done != n:
            raise BpfError(f"map {self.name}: batch read returned {done} of {n} entries")
        return out.raw

    def update_range(self, start: int, values: bytes) -> None:
        """Overwrite consecutive indexes of an array map from `start` in one BPF_MAP_UPDATE_BATCH
        call; `values` holds `read_size` bytes per index."""
        count = len(values) // self.read_size
        if count * self.read_size != len(values) or start + count > self.max_entries:
            raise BpfError(f"map {self.name}: cannot write {len(values)} bytes from index {start}")
        self.update_many(b"".join(i.to_bytes(self.key_size, "little") for i in range(start, start + count)), values)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key in list(self.keys()):
            value = self.lookup(key)
            if value is not None:
                yield key, value


class _MapInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("name", ctypes.c_char * BPF_OBJ_NAME_LEN)]


class _ProgInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8)]


BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH = 5, 6, 10
_PERCPU_TYPES = {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}


def prog_id(fd: int) -> int:
    info = _ProgInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "reading program info")
    return info.id


def map_info(fd: int) -> _MapInfo:
    info = _MapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "reading map info")
    return info


class _TestRunOpts(ctypes.Structure):
    _fields_ = [("sz", c_size_t), ("data_in", c_void_p), ("data_out", c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", c_void_p), ("ctx_out", c_void_p),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("retval", ctypes.c_uint32), ("repeat", c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32)]


class XdpMd(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint32), ("data_end", ctypes.c_uint32), ("data_meta", ctypes.c_uint32),
                ("ingress_ifindex", ctypes.c_uint32), ("rx_queue_index", ctypes.c_uint32),
                ("egress_ifindex", ctypes.c_uint32)]


@dataclass
class TestRunResult:
    retval: int
    duration_ns: int      # average per repetition, measured by the kernel
    data_out: bytes


class TestRunner:
    """BPF_PROG_TEST_RUN of one program, many times: one options struct, built once and reused,
    as building it (and its buffers) on every call costs more than a small program's run
    (xdp_pass on single 64-byte frames: ~3 us per run_at, ~5 us per run, ~7 us per test_run)."""

    OUT_SLACK = 256   # room for a program that grows the frame

    def __init__(self, prog_fd: int, repeat: int = 1, ctx: XdpMd | None = None,
                 flags: int = 0, batch_size: int = 0):
        self.prog_fd = prog_fd
        self._opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), repeat=repeat, flags=flags, batch_size=batch_size)
        self._ref = ctypes.byref(self._opts)
        self._ctx = ctx   # referenced by the options: kept alive with them
        if ctx is not None:
            self._opts.ctx_in = ctypes.cast(ctypes.pointer(ctx), c_void_p)
            self._opts.ctx_size_in = ctypes.sizeof(ctx)
        self._live = bool(flags & BPF_F_TEST_XDP_LIVE_FRAMES)   # live frames are not copied back
        self._out = ctypes.create_string_buffer(0)

    def run(self, packet: bytes) -> TestRunResult:
        """Run the program on `packet` (`repeat` times); the frame it leaves comes back in data_out."""
        opts = self._opts
        opts.data_in = ctypes.cast(ctypes.c_char_p(packet), c_void_p)   # the kernel copies it in: no copy here
        opts.data_size_in = len(packet)
        if self._live:
            opts.data_size_out = 0
        else:
            if len(self._out) < len(packet) + self.OUT_SLACK:
                self._out = ctypes.create_string_buffer(len(packet) + self.OUT_SLACK)
            opts.data_out, opts.data_size_out = ctypes.cast(self._out, c_void_p), len(self._out)
        ret = bpf_prog_test_run_opts(self.prog_fd, self._ref)
        opts.data_out = None   # run_at copies nothing back
        _check(ret, "BPF_PROG_TEST_RUN")
        return TestRunResult(opts.retval, opts.duration, b"" if self._live else self._out.raw[:opts.data_size_out])

    def run_at(self, address: int, size: int) -> tuple[int, int]:
        """Run the program on the `size` bytes at `address` (say, a frame inside a numpy buffer),
        with nothing copied back; returns (retval, kernel ns per repetition)."""
        opts = self._opts
        opts.data_in = address
        opts.data_size_in = size
        opts.data_size_out = 0   # the kernel writes the frame's size here; left there, it caps the next run
        ret = bpf_prog_test_run_opts(self.prog_fd, self._ref)
        if ret < 0:
            _check(ret, f"BPF_PROG_TEST_RUN on {size} bytes")
        return opts.retval, opts.duration


def test_run(prog_fd: int, packet: bytes, repeat: int = 1, ctx: XdpMd | None = None,
             flags: int = 0, batch_size: int = 0) -> TestRunResult:
    """BPF_PROG_TEST_RUN: run the program on `packet` `repeat` times inside the kernel."""
    return TestRunner(prog_fd, repeat, ctx, flags, batch_size).run(packet)


class BpfObject:
    """An ELF object opened and loaded with libbpf; maps may be pinned (and reused) by path."""

    LOG_SIZE = 1 << 22

    def __init__(self, path: str, pin_dir: str | None = None, max_entries: dict[str, int] | None = None):
        self.path = path
        self._obj = bpf_object__open_file(path.encode(), None)
        if not self._obj:
            _check(-ctypes.get_errno(), f"opening BPF object {path}")
        self._log_bufs = {}
        self.programs: dict[str, int] = {}
        self.maps: dict[str, BpfMap] = {}
        self._map_ptrs: dict[str, int] = {}
        for prog in self._iter(bpf_object__next_program):
            buf = ctypes.create_string_buffer(self.LOG_SIZE)
            self._log_bufs[bpf_program__name(prog).decode()] = buf
            bpf_program__set_log_buf(prog, buf, self.LOG_SIZE)
        for m in self._iter(bpf_object__next_map):
            name = bpf_map__name(m).decode()
            if name.startswith(".") or name.endswith((".bss", ".data", ".rodata")):
                continue
            self._map_ptrs[name] = m
            if max_entries and name in max_entries:
                _check(bpf_map__set_max_entries(m, max_entries[name]), f"sizing map {name}")
            if pin_dir:
                _check(bpf_map__set_pin_path(m, os.path.join(pin_dir, name).encode()), f"pin path of {name}")

    def _iter(self, next_fn) -> Iterator[int]:
        cur = next_fn(self._obj, None)
        while cur:
            yield cur
            cur = next_fn(self._obj, cur)

    def load(self) -> "BpfObject":
        ret = bpf_object__load(self._obj)
        if ret < 0:
            err = -ret if ret != -1 else ctypes.get_errno()
            logs = {name: buf.value.decode(errors="replace") for name, buf in self._log_bufs.items() if buf.value}
            if logs:
                raise VerifierError(self.path, logs, errno=err)
            hint = None if err == errno.EPERM else "a pinned map may have an incompatible definition: remove the NF"
            raise BpfError(f"loading {self.path}: {os.strerror(err)}", errno=err, hint=hint)
        for prog in self._iter(bpf_object__next_program):
            self.programs[bpf_program__name(prog).decode()] = bpf_program__fd(prog)
        for name, m in self._map_ptrs.items():
            fd = bpf_map__fd(m)
            info = map_info(fd)
            self.maps[name] = BpfMap(fd, name, info.key_size, info.value_size, info.type in _PERCPU_TYPES,
                                     info.max_entries)
        return self

    @property
    def map_names(self) -> list[str]:
        return list(self._map_ptrs)

    def btf_type_ids(self, map_name: str) -> tuple[int, int]:
        m = self._map_ptrs[map_name]
        return bpf_map__btf_key_type_id(m), bpf_map__btf_value_type_id(m)

    def close(self) -> None:
        if self._obj:
            bpf_object__close(self._obj)
            self._obj = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def prog_fd_by_id(prog_id: int) -> int:
    """A new fd of the loaded program with this id (the caller closes it)."""
    return _check(bpf_prog_get_fd_by_id(prog_id), f"opening program id {prog_id}")


def pin(fd: int, path: str) -> None:
    _check(bpf_obj_pin(fd, path.encode()), f"pinning {path}")


def get_pinned(path: str) -> int:
    return _check(bpf_obj_get(path.encode()), f"opening pin {path}")
