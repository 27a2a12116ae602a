"""Run every `benchmarks/bench_*.py` module's `main()` in turn (`make bench`).

`python -m benchmarks name ...` runs only the modules whose names contain one
of the given words. A benchmark that fails is reported and the run exits non-zero.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path


def _modules(selected: list[str]) -> list[str]:
    names = sorted(path.stem for path in Path(__file__).parent.glob("bench_*.py"))
    if selected:
        names = [name for name in names if any(word in name for word in selected)]
    return names


def main(argv: list[str]) -> int:
    names = _modules(argv)
    if not names:
        print("No benchmarks found (benchmarks/bench_*.py).", file=sys.stderr)
        return 1
    failed = []
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        try:
            importlib.import_module(f"benchmarks.{name}").main()
        except Exception:  # a process boundary: report, carry on with the next benchmark
            traceback.print_exc()
            failed.append(name)
        print(f"--- {name}: {time.perf_counter() - started:.1f} s", flush=True)
    if failed:
        print(f"\nFailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
