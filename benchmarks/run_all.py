"""Run every ``benchmarks/bench_*.py`` and collect their results in one table and JSON file.

Each benchmark runs as its own subprocess (``python bench_<name>.py [--quick] --out
results/<name>.json``), one after the other (the machines have 2 cores; parallel runs would
distort each other's timings). A benchmark's JSON may hold a flat ``"summary"`` dict of
headline numbers; those are printed, otherwise its top-level numbers are. Writes
``benchmarks/results/all.json`` with every benchmark's status, wall time and results.

    python benchmarks/run_all.py [--quick] [--only NAME[,NAME...]] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover(only: list[str] | None = None) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem[len("bench_"):]
        if only is None or name in only:
            found.append((name, path))
    if only is not None:
        missing = sorted(set(only) - {n for n, _ in found})
        if missing:
            available = sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
            raise SystemExit(f"run_all: expected benchmark names from {available}, got unknown {missing}")
    return found


def headline(result: dict) -> dict[str, float]:
    """The numbers to print: the ``summary`` dict, else top-level numbers (one level deep)."""
    if isinstance(result.get("summary"), dict):
        items = result["summary"].items()
    else:
        items = []
        for key, value in result.items():
            if isinstance(value, dict):
                items += [(f"{key}.{k}", v) for k, v in value.items()]
            else:
                items.append((key, value))
    return {k: v for k, v in items if isinstance(v, (int, float)) and not isinstance(v, bool)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--only", default=None, help="comma-separated benchmark names (e.g. langevin,table1)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per benchmark")
    parser.add_argument("--results", default=str(HERE / "results"), help="results directory")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    collected: dict[str, dict] = {}
    for name, path in discover(only):
        out = results_dir / f"{name}.json"
        cmd = [sys.executable, str(path), "--out", str(out)] + (["--quick"] if args.quick else [])
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=HERE.parent)
            status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
            stdout, stderr = proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            status, stdout, stderr = f"timeout after {args.timeout:.0f} s", exc.stdout or "", exc.stderr or ""
            if isinstance(stdout, bytes):
                stdout, stderr = stdout.decode(errors="replace"), (stderr or b"").decode(errors="replace")
        wall = time.perf_counter() - t0
        print(stdout, end="" if stdout.endswith("\n") else "\n")
        result = None
        if status == "ok" and out.is_file():
            try:
                result = json.loads(out.read_text())
            except json.JSONDecodeError as exc:
                status = f"bad JSON ({exc})"
        elif status == "ok":
            status = f"no JSON at {out}"
        if status != "ok":
            print(stderr[-2000:], file=sys.stderr)
        collected[name] = {"status": status, "wall_time_s": wall, "command": cmd[1:], "result": result}

    print()
    width = max([12] + [len(name) + 2 for name in collected])
    print(f"{'benchmark':<{width}}{'status':<22}{'wall (s)':>9}  headline numbers")
    for name, entry in collected.items():
        numbers = headline(entry["result"]) if entry["result"] else {}
        shown = ", ".join(f"{k}={v:.4g}" for k, v in list(numbers.items())[:8])
        print(f"{name:<{width}}{entry['status']:<22}{entry['wall_time_s']:>9.1f}  {shown}")
    summary = {
        "quick": args.quick,
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "benchmarks": collected,
    }
    all_path = results_dir / "all.json"
    tmp = all_path.with_name(all_path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, all_path)
    print(f"wrote {all_path}")
    return 0 if all(e["status"] == "ok" for e in collected.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
