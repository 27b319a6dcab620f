"""Per-slide cost of cohort bookkeeping: claim (create, heartbeat, ownership check, release),
status records (start and finish) and the ``cerberus status`` summary, on local disk.

    .venv/bin/python benchmarks/bench_cohorts.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from cerberus_cli.inference import claims
from cerberus_cli.inference.inputs import SlideInput
from cerberus_cli.inference.status import StatusBook, cohort_status

N = 200

with tempfile.TemporaryDirectory() as d:
    out = Path(d)
    book = StatusBook(out, True)
    t0 = time.perf_counter()
    for i in range(N):
        c = claims.acquire(out, f"s{i}", 600)
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
