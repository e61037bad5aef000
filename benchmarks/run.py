"""Run every benchmark: ``python benchmarks/run.py [--only NAME] [--repeat N]``.

Each benchmark times medtool and its named peer on the same input in the same run and reports
seconds and the ratio peer / medtool (above 1: medtool is faster; below 1: medtool's overhead).
The table goes to stdout and everything to ``benchmarks/results/<name>.json``. Not part of CI.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Every ``bench_*.py`` module here, run in name order.
BENCHMARKS = sorted(p.stem for p in HERE.glob("bench_*.py"))


def timeit(function, *, repeat: int) -> float:
    """Median wall-clock seconds of ``repeat`` calls of ``function()``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only the benchmark module with this name")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (median kept)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    print(f"{'benchmark':<34} {'peer':<22} {'medtool s':>10} {'peer s':>10} {'peer/medtool':>13}")
    for name in BENCHMARKS:
        if args.only and args.only != name:
            continue
        module = importlib.import_module(name)
        rows = module.run(repeat=args.repeat, timeit=timeit)
        for row in rows:
            row["ratio"] = row["peer_s"] / row["medtool_s"]
            print(f"{row['case']:<34} {row['peer']:<22} {row['medtool_s']:>10.3f} "
                  f"{row['peer_s']:>10.3f} {row['ratio']:>13.2f}")
        report = {"benchmark": name, "machine": platform.platform(), "python": platform.python_version(),
                  "repeat": args.repeat, "rows": rows}
        (results_dir / f"{name}.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
