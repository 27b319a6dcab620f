"""Cohort runs: per-slide cost of the bookkeeping (claim, status records, the ``cerberus status``
summary) on local disk, and the speed-up of two device workers (``--devices cpu,cpu``) over one
process on the same phantom cohort, side by side (alternating, each run a fresh ``cerberus
segment`` command as a user runs it, model loading and worker start included).

    .venv/bin/python benchmarks/bench_cohorts.py                 # both parts
    .venv/bin/python benchmarks/bench_cohorts.py --no-workers    # the bookkeeping only
    .venv/bin/python benchmarks/bench_cohorts.py --slides 4 --size 640 --repeat 2 \
        --segment-args "--tile 208 --workers 0 --post-workers 0 --no-overlay"
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cerberus_cli.cohort import claims
from cerberus_cli.cohort.inputs import SlideInput
from cerberus_cli.cohort.status import StatusBook, cohort_status
from cerberus_cli.synthetic.slide import write_phantom_slide

N = 200


def bookkeeping() -> None:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        book = StatusBook(out, True)
        t0 = time.perf_counter()
        for i in range(N):
            c = claims.acquire(out, f"s{i}", 600)
            assert isinstance(c, claims.Claim)
            with c:
                c.beat()
                c.check()
        t1 = time.perf_counter()
        for i in range(N):
            item = SlideInput(Path(f"s{i}.svs"))
            book.started(item)
            book.finished(item, "done", objects=1, counts={"nuclei": {"x": 1}})
        t2 = time.perf_counter()
        st = cohort_status(out)
        t3 = time.perf_counter()
    print(f"claim acquire+beat+check+release: {1000*(t1-t0)/N:.2f} ms/slide; "
          f"status start+finish: {1000*(t2-t1)/N:.2f} ms/slide; "
          f"cohort_status: {1000*(t3-t2)/N:.2f} ms/slide ({len(st.slides)} slides)")


def workers(slides: int, size: int, repeat: int, extra: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        folder = root / "slides"
        folder.mkdir()
        write_phantom_slide(folder / "s0.svs", (size, size), seed=5)
        for i in range(1, slides):
            shutil.copy(folder / "s0.svs", folder / f"s{i}.svs")
        # (flags, extra environment): the third separates the effect of one torch thread per
        # process (each CPU worker gets cores / workers threads) from that of two processes.
        configs: dict[str, tuple[list[str], dict[str, str]]] = {
            "one process": ([], {}),
            "--devices cpu,cpu": (["--devices", "cpu,cpu"], {}),
            "one process, OMP_NUM_THREADS=1": ([], {"OMP_NUM_THREADS": "1"}),
        }
        times: dict[str, list[float]] = {name: [] for name in configs}
        cpu: dict[str, list[float]] = {name: [] for name in configs}
        for r in range(repeat):
            for k, (name, (flags, env)) in enumerate(configs.items()):
                out = root / f"out-{r}-{k}"
                cmd = [sys.executable, "-m", "cerberus_cli", "-q", "segment", str(folder), "-o",
                       str(out), *extra, *flags]
                load = os.getloadavg()[0]
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, env={**os.environ, **env})
                times[name].append(time.perf_counter() - t0)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[name].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
                print(f"  run {r + 1}, {name}: {times[name][-1]:.1f} s wall, {cpu[name][-1]:.1f} s CPU "
                      f"(load average before: {load:.1f})", flush=True)
                shutil.rmtree(out)
        shown = " ".join(shlex.quote(a) for a in extra)
        print(f"\n{slides} phantom slides of {size} px, {os.cpu_count()} CPUs, "
              f"`cerberus segment SLIDES -o OUT {shown} [--devices cpu,cpu]`")
        print("| run | wall s per run | median wall s | slides/min | CPU s (all processes) |")
        print("|---|---|---|---|---|")
        for name, values in times.items():
            med = statistics.median(values)
            print(f"| {name} | {', '.join(f'{v:.1f}' for v in values)} | {med:.1f} | "
                  f"{60 * slides / med:.2f} | {statistics.median(cpu[name]):.1f} |")
        one, two = (statistics.median(times[k]) for k in ("one process", "--devices cpu,cpu"))
        single = statistics.median(times["one process, OMP_NUM_THREADS=1"])
        print(f"speed-up of two workers over one process: {one / two:.2f}x; "
              f"over one process with one torch thread: {single / two:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-workers", action="store_true", help="Only the bookkeeping part.")
    parser.add_argument("--slides", type=int, default=4)
    parser.add_argument("--size", type=int, default=640, help="Phantom slide side, px.")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--segment-args", default="--tile 208 --workers 0 --post-workers 0 --no-overlay",
                        help="Options of both runs.")
    args = parser.parse_args()
    bookkeeping()
    if not args.no_workers:
        workers(args.slides, args.size, args.repeat, shlex.split(args.segment_args))


if __name__ == "__main__":
    main()
