"""Cost of chaining XDP NFs (ebpf/include/chain.h): ns/packet before and after chain_pass, and per hop.

    .venv/bin/python bench/chain.py [--quick] [--baseline REV]   (as root)

The pass-through NFs (xdp_pass = rxcount, cms, precision; catalog defaults) end in chain_pass:
a tail call through their one-slot program array `chain_next`, which falls through to XDP_PASS
when the slot is empty. Each program runs one 64-byte UDP/IPv4 frame repeatedly with
BPF_PROG_TEST_RUN (kernel-timed, unattached, no pins), in interleaved rounds, as
  before:  the same NF's source at git revision REV (default: the commit before chain.h came),
  after:   today's source, chain_next empty (the NF alone on its hook),
  chained: today's source, chain_next holding xdp_pass (one more hop: tail call + xdp_pass).
Printed: median ns/packet of the rounds, after/before, and chained - after: what one more hop costs
(the tail call and xdp_pass's counter; the test run's own overhead, which xdp_pass's figure is
mostly made of, is paid once per packet, not per hop). It prints figures and asserts nothing: a benchmark, not a test.
It deploys nothing, but runs in a scope of its own (bench-<pid>) like every bench, removed at the end.
"""
from __future__ import annotations

import argparse
import os
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script: import from the repository
os.environ["INNET_SCOPE"] = f"bench-{os.getpid()}"   # before the controller loads: the bench's own scope

from bench.harness import REPO, run, say, start  # noqa: E402
from bench.nfrouter import udp_frame  # noqa: E402
from controller.scope import current  # noqa: E402
from controller.bpf import libbpf  # noqa: E402
from controller.bpf.build import CFLAGS, compile_program  # noqa: E402
from controller.catalog import get_nf  # noqa: E402

NFS = ("rxcount", "cms", "precision")
XDP_PASS = 2


def baseline_rev() -> str:
    added = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%H", "--diff-filter=A", "--",
                            "ebpf/include/chain.h"], capture_output=True, text=True, check=True).stdout.strip()
    return f"{added}^" if added else "HEAD"


def defines(nf: str) -> dict[str, int]:
    spec = get_nf(nf)
    values = spec.resolve_parameters({})
    return {p.xdp["define"]: values[p.name] for p in spec.parameters.values() if "define" in p.xdp}


def compile_at(rev: str, source: str, flags: dict[str, int], workdir: Path) -> Path:
    """`source` (and ebpf/include) as of git revision `rev`, compiled with the controller's flags."""
    tree = workdir / "tree"
    if not tree.exists():
        tree.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "ebpf"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    obj = workdir / (Path(source).stem + ".o")
    subprocess.run(["clang", *CFLAGS, *(f"-D{k}={v}" for k, v in sorted(flags.items())), "-c",
                    str(tree / source), "-o", str(obj)], check=True)
    return obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds of 20k repetitions (default 9 of 100k)")
    ap.add_argument("--baseline", help="git revision of the programs before chaining (default: found in history)")
    args = ap.parse_args(argv)
    rounds, repeat = (3, 20_000) if args.quick else (9, 100_000)
    if not start(__file__, argv, args.quick, "BPF_PROG_TEST_RUN", f"{rounds} rounds x {repeat} repetitions"):
        return 1
    rev = args.baseline or baseline_rev()

    def body() -> None:
        frame = udp_frame(64, v6=False)
        objs = []
        try:
            with tempfile.TemporaryDirectory() as tmp:
                progs = {}   # (nf, variant) -> program fd
                for nf in NFS:
                    program = get_nf(nf).programs["xdp"]
                    before = compile_at(rev, program["source"], defines(nf), Path(tmp))
                    after = compile_program(program["source"], defines(nf))
                    for variant, path in (("before", before), ("after", after), ("chained", after)):
                        objs.append(libbpf.BpfObject(str(path)).load())
                        progs[nf, variant] = objs[-1].programs[program["entry"]]
                        if variant == "chained":
                            objs[-1].maps["chain_next"].update(struct.pack("=I", 0),
                                                               struct.pack("=I", progs["rxcount", "after"]))
            say(f"baseline: {rev}; one 64-byte UDP/IPv4 frame, catalog defaults")
            runners = {k: libbpf.TestRunner(fd, repeat) for k, fd in progs.items()}
            ns = {k: [] for k in runners}
            for _ in range(rounds):
                for k, runner in runners.items():
                    res = runner.run(frame)
                    if res.retval != XDP_PASS:
                        raise SystemExit(f"{k}: verdict {res.retval}, expected XDP_PASS")
                    ns[k].append(res.duration_ns)
            med = {k: statistics.median(v) for k, v in ns.items()}
            say(f"{'program':<10} {'before':>8} {'after':>8} {'after/before':>13} {'chained':>8} {'+1 hop':>8}"
                "   (ns/packet; chained: xdp_pass behind it)")
            for nf in NFS:
                b, a, c = med[nf, "before"], med[nf, "after"], med[nf, "chained"]
                say(f"{nf:<10} {b:>8.1f} {a:>8.1f} {a / b:>12.2f}x {c:>8.1f} {c - a:>8.1f}")
        finally:
            for o in objs:
                o.close()
            current().drop()

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
