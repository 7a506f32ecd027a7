"""``docket protocol simulate`` at full fidelity: serial against worker processes, one run.

Workload: the shipped ``router-entropy-metacog`` protocol (protocols/library), every simulated
rule with its frozen resample count (10,000), ``--runs`` studies per gap (default 200), the
default gap table: what ``docket protocol simulate router-entropy-metacog`` computes. Timed in
this process, interleaved round by round so both see the same machine noise:

* serial: ``DOCKET_WORKERS=1`` (the points one after another in this process);
* workers: ``DOCKET_WORKERS=--workers`` (default 2) forked processes
  (``ledger.verdict.parallel``).

Printed: wall and CPU seconds (this process and its children) of each, the ratio serial /
workers, and whether both results are identical (they must be: each point owns its generator).
Goal (issue 15): under 15 s on a 2-core machine.

Run: ``python benchmarks/simulate.py`` (options: --runs, --workers, --repeats).
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/ledger.py would shadow the ledger package when this file runs as a script
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

from docketml.ledger.verdict.simulate import simulate_protocol  # noqa: E402
from docketml.protocols import LIBRARY  # noqa: E402
from docketml.protocols.loader import load_protocol_file  # noqa: E402


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(protocol, runs: int, workers: int) -> tuple[float, float, str]:  # noqa: ANN001
    os.environ["DOCKET_WORKERS"] = str(workers)
    wall, cpu = time.perf_counter(), _cpu()
    result = simulate_protocol(protocol, n_sims=runs)
    return time.perf_counter() - wall, _cpu() - cpu, json.dumps(result, sort_keys=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    protocol = load_protocol_file(LIBRARY / "router_entropy_metacog.yaml").protocol
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, runs {args.runs}")
    best: dict[int, tuple[float, float]] = {}
    outputs: dict[int, str] = {}
    for _ in range(args.repeats):
        for workers in (1, args.workers):
            wall, cpu, out = timed(protocol, args.runs, workers)
            outputs[workers] = out
            if workers not in best or wall < best[workers][0]:
                best[workers] = (wall, cpu)
    for workers, (wall, cpu) in best.items():
        label = "serial" if workers == 1 else f"{workers} workers"
        print(f"{label:>10}: {wall:7.2f} s wall, {cpu:7.2f} s CPU")
    print(f"serial / workers: {best[1][0] / best[args.workers][0]:.2f}x")
    print(f"identical results: {outputs[1] == outputs[args.workers]}")
    if args.runs == 200:
        print(f"under 15 s (goal): {best[args.workers][0] < 15.0}")
    else:
        print("goal (15 s) applies at --runs 200")


if __name__ == "__main__":
    main()
