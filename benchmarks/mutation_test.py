"""Mutation testing: how many deliberate one-token mistakes in a module does the test suite catch?

Each mutant is one small edit of one target module, found by walking its ``ast``:

- ``number``   a numeric literal doubled (``0`` becomes ``1``): ``0.5`` -> ``1.0``, ``31`` -> ``62``;
- ``binop``    an arithmetic operator swapped: ``+`` <-> ``-``, ``*`` <-> ``/``, ``**`` -> ``*``
               (also in augmented assignments, ``+=`` <-> ``-=``, ...);
- ``compare``  a comparison loosened or tightened: ``<`` <-> ``<=``, ``>`` <-> ``>=``;
- ``expr``     a number inside a string that is an OpenMM custom-force expression (no spaces,
               some of ``* ^ / +``), doubled: ``"0.5*k*(x-x0)^2"`` -> ``"1.0*k*(x-x0)^2"``.

Type annotations and f-strings (messages) are not mutated. The edit replaces only the
token(s) concerned, so line numbers stay put. Each mutant is written into a private copy of the
repository (``.git``, ``.venv`` and caches left out) and the selected tests run there with
``pytest -x -q -p no:cacheprovider`` under ``PYTHONPATH=<copy>`` (so the copy's package is the
one imported, also when the package is installed in editable mode) and without bytecode files.
A mutant is *killed* when pytest fails (or errors, or runs past ``--timeout``) and *survives*
when every selected test passes; the first failing test is recorded (``killed_by`` in the JSON).
The unmutated copy must pass first (the baseline). Ctrl-C or SIGTERM stops the run cleanly: the
running pytest is killed, the copies are removed, and the table covers the mutants run so far.
On a shared machine set ``OMP_NUM_THREADS=1`` (torch threads of the pytest runs; recorded in
the output): see ``docs/mutation_testing.md``.

Example (about 3 minutes on a 2-core CPU)::

    .venv/bin/python benchmarks/mutation_test.py \\
        --modules spacetime_md/molecular/paths/openmm_langevin.py \\
        --tests tests/molecular/test_physics.py tests/molecular/test_openmm_langevin.py \\
        --max-mutants 20

``--function NAME ...`` keeps only the mutants inside those functions (e.g. ``compute_target_hit`` of
``molecular/paths/hit.py``). ``--max-mutants`` draws that many mutants per module at random (``--seed``); ``--dry-run``
lists the mutants without running anything. Run outside CI: every mutant costs one test run.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import datetime
import json
import os
import platform
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IGNORED = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", ".pytest_cache", "*.egg-info",
                                 ".mypy_cache", ".ruff_cache")

_BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Pow: ast.Mult}
_CMP_SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
_OP_TEXT = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**",
            ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
#: A number in an expression string, not part of a name such as ``x0``.
_EXPR_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d*)?(?:[eE][-+]?\d+)?(?![\w.])")
_EXPR_STRING = re.compile(r"^[\w.*^/+\-()<>=,;]+$")


@dataclass
class Mutant:
    """One edit: bytes ``[start, end)`` of ``module`` become ``replacement``."""

    module: str
    line: int
    col: int
    kind: str
    description: str
    start: int
    end: int
    replacement: str
    status: str = "not run"  # killed | timeout | survived | not run
    seconds: float = 0.0
    killed_by: str = ""  # the first failing test (pytest node id), when pytest names one

    def apply(self, source: bytes) -> bytes:
        return source[: self.start] + self.replacement.encode() + source[self.end :]


def _line_offsets(source: bytes) -> list[int]:
    offsets, pos = [0], 0
    for line in source.splitlines(keepends=True):
        pos += len(line)
        offsets.append(pos)
    return offsets


def _doubled(value: int | float) -> int | float:
    return type(value)(1) if value == 0 else value * 2


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes inside annotations and f-strings (not mutated)."""
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            roots.append(node)
        elif isinstance(node, ast.arg) and node.annotation is not None:
            roots.append(node.annotation)
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            roots.append(node.returns)
    return {id(sub) for root in roots for sub in ast.walk(root)}


def find_mutants(module: str, source: bytes) -> list[Mutant]:
    """Every mutant of ``module`` (a path relative to the repository) whose source is ``source``."""
    tree = ast.parse(source)
    offsets = _line_offsets(source)
    lines = source.decode().splitlines()
    skipped = _skipped_nodes(tree)
    mutants: list[Mutant] = []

    def at(line: int, col: int) -> int:
        return offsets[line - 1] + col

    def operator_span(kind: type, left: ast.AST, right: ast.AST) -> tuple[int, int] | None:
        """Byte span of the operator token between two operands."""
        lo, hi = at(left.end_lineno, left.end_col_offset), at(right.lineno, right.col_offset)
        gap = source[lo:hi].decode()
        text = _OP_TEXT[kind]
        pattern = {"*": r"(?<!\*)\*(?![*=])", "<": r"<(?!=)", ">": r">(?!=)"}.get(text, re.escape(text))
        match = re.search(pattern, gap.split("#")[0])
        if match is None:
            return None
        return lo + len(gap[: match.start()].encode()), lo + len(gap[: match.end()].encode())

    def add(node: ast.AST, kind: str, start: int, end: int, replacement: str) -> None:
        old = source[start:end].decode()
        line = next(i for i in range(len(offsets) - 1) if offsets[i] <= start < offsets[i + 1]) + 1
        col = len(source[offsets[line - 1]:start].decode())
        line_text = lines[line - 1].strip()
        mutants.append(Mutant(module, line, col, kind, f"{old} -> {replacement}   in `{line_text[:90]}`",
                              start, end, replacement))

    for node in ast.walk(tree):
        if id(node) in skipped or not hasattr(node, "lineno"):
            continue
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            start, end = at(node.lineno, node.col_offset), at(node.end_lineno, node.end_col_offset)
            add(node, "number", start, end, repr(_doubled(node.value)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _EXPR_STRING.match(node.value) \
                and re.search(r"[*^/+]", node.value) and _EXPR_NUMBER.search(node.value):
            start, end = at(node.lineno, node.col_offset), at(node.end_lineno, node.end_col_offset)
            for match in _EXPR_NUMBER.finditer(node.value):
                number = float(match.group()) if "." in match.group() or "e" in match.group().lower() \
                    else int(match.group())
                new = node.value[: match.start()] + repr(_doubled(number)) + node.value[match.end():]
                add(node, "expr", start, end, repr(new))
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _BINOP_SWAPS:
            new_op = _BINOP_SWAPS[type(node.op)]
            if isinstance(node, ast.BinOp):
                span = operator_span(type(node.op), node.left, node.right)
                new_text = _OP_TEXT[new_op]
            else:
                span = operator_span(type(node.op), node.target, node.value)
                if span is not None:  # the '=' of '+=' follows the operator
                    span = (span[0], span[1] + 1)
                new_text = _OP_TEXT[new_op] + "="
            if span is not None:
                add(node, "binop", *span, new_text)
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for i, op in enumerate(node.ops):
                if type(op) in _CMP_SWAPS:
                    span = operator_span(type(op), operands[i], operands[i + 1])
                    if span is not None:
                        add(node, "compare", *span, _OP_TEXT[_CMP_SWAPS[type(op)]])
    # Keep only edits that still compile and that change the code.
    valid = []
    for mutant in mutants:
        try:
            mutated = mutant.apply(source)
            if ast.dump(ast.parse(mutated)) != ast.dump(tree):
                valid.append(mutant)
        except SyntaxError:
            pass
    return sorted(valid, key=lambda m: (m.line, m.start, m.replacement))


def _pytest_command(python: str, tests: list[str], keyword: str | None) -> list[str]:
    command = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    return command + (["-k", keyword] if keyword else [])


def _env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


def _first_failure(output: str) -> str:
    """The node id of the first ``FAILED``/``ERROR`` line of pytest's short summary, or ``""``."""
    match = _FAILED.search(output)
    return match.group(1) if match else ""


#: Set by SIGINT/SIGTERM: no new mutant starts, running test processes are killed, the copies removed.
_STOP = threading.Event()
_RUNNING: set[subprocess.Popen] = set()
_RUNNING_LOCK = threading.RLock()  # re-entrant: the signal handler runs in the main thread


def _interrupt(signum: int, frame: object) -> None:
    _STOP.set()
    with _RUNNING_LOCK:
        for proc in list(_RUNNING):
            proc.kill()


def _run(command: list[str], copy: Path, timeout: float | None) -> tuple[str, float, str]:
    t0 = time.perf_counter()
    if _STOP.is_set():
        return "not run", 0.0, ""
    with subprocess.Popen(command, cwd=copy, env=_env(copy), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        with _RUNNING_LOCK:
            _RUNNING.add(proc)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return "timeout", time.perf_counter() - t0, ""
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(proc)
    if _STOP.is_set():  # killed by the interrupt, not by the mutant
        return "not run", time.perf_counter() - t0, ""
    status = "survived" if proc.returncode == 0 else "killed"
    return status, time.perf_counter() - t0, stdout[-3000:] + stderr[-2000:]


def _make_copy(root: Path, index: int, python: str) -> Path:
    copy = root / f"repo{index}"
    shutil.copytree(REPO, copy, ignore=IGNORED)
    where = subprocess.run([python, "-c", "import spacetime_md; print(spacetime_md.__file__)"],
                           cwd=copy, env=_env(copy), capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"the copy's package is not the one imported: spacetime_md from {where}, expected under {copy}")
    return copy


def _table(mutants: list[Mutant], modules: list[str]) -> str:
    rows = ["| module | mutants | killed | timeout | survived | kill rate |", "|---|---:|---:|---:|---:|---:|"]
    for module in [*modules, "all"]:
        ran = [m for m in mutants if (module == "all" or m.module == module) and m.status != "not run"]
        killed = sum(m.status == "killed" for m in ran)
        timeout = sum(m.status == "timeout" for m in ran)
        rate = f"{100 * (killed + timeout) / len(ran):.0f} %" if ran else "-"
        rows.append(f"| {module} | {len(ran)} | {killed} | {timeout} | {len(ran) - killed - timeout} | {rate} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="+", required=True,
                        help="target modules, paths relative to the repository (e.g. spacetime_md/core/schedule.py)")
    parser.add_argument("--tests", nargs="+", default=["tests"],
                        help="pytest paths (node ids) to run per mutant (default: tests)")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression to narrow the tests")
    parser.add_argument("--function", nargs="+", default=None,
                        help="only mutate inside these functions (or methods) of each module, e.g. compute_target_hit")
    parser.add_argument("--max-mutants", type=int, default=None,
                        help="at most this many mutants per module, drawn at random with --seed (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per mutant run (default: 3 x baseline + 30); a timeout counts as killed")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run in parallel, each in its own copy")
    parser.add_argument("--python", default=sys.executable, help="interpreter with pytest and the dependencies")
    parser.add_argument("--json", dest="json_out", default=None, help="also write every mutant's result here")
    parser.add_argument("--dry-run", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    if args.max_mutants is not None and args.max_mutants < 1:
        parser.error(f"--max-mutants: expected an integer >= 1, got {args.max_mutants}")
    if args.jobs < 1:
        parser.error(f"--jobs: expected an integer >= 1, got {args.jobs}")

    rng = random.Random(args.seed)
    selected: list[Mutant] = []
    sources: dict[str, bytes] = {}
    for module in args.modules:
        path = REPO / module
        if not path.is_file() or path.suffix != ".py":
            parser.error(f"--modules: expected Python files under {REPO}, got {module}")
        sources[module] = path.read_bytes()
        found = find_mutants(module, sources[module])
        if args.function is not None:
            spans = [(n.lineno, n.end_lineno) for n in ast.walk(ast.parse(sources[module]))
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name in args.function]
            if not spans:
                parser.error(f"--function: expected a function of {module}, got {args.function!r}")
            found = [m for m in found if any(lo <= m.line <= hi for lo, hi in spans)]
        chosen = found if args.max_mutants is None or len(found) <= args.max_mutants \
            else sorted(rng.sample(found, args.max_mutants), key=lambda m: (m.line, m.start))
        print(f"{module}: {len(found)} mutants, running {len(chosen)}")
        selected.extend(chosen)
    if args.dry_run:
        for m in selected:
            print(f"  {m.module}:{m.line}:{m.col} [{m.kind}] {m.description}")
        return 0

    command = _pytest_command(args.python, args.tests, args.keyword)
    print(f"# {datetime.date.today()} on {platform.node()} ({os.cpu_count()} CPUs, {platform.platform()})")
    print("# tests: " + " ".join(command[1:]))
    threads = {name: os.environ[name] for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if name in os.environ}
    if threads:
        print("# environment: " + " ".join(f"{k}={v}" for k, v in threads.items()))
    _STOP.clear()
    handlers = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    root = Path(tempfile.mkdtemp(prefix="mutation_test_"))
    try:
        copies: queue.Queue[Path] = queue.Queue()
        for j in range(args.jobs):
            copies.put(_make_copy(root, j, args.python))
        base = copies.get()
        status, baseline_s, output = _run(command, base, None)
        copies.put(base)
        if _STOP.is_set():
            print("interrupted during the baseline run")
            return 130
        if status != "survived":
            print(output)
            print("baseline: the selected tests fail on the unmutated code; no mutation score")
            return 1
        timeout = args.timeout if args.timeout is not None else 3 * baseline_s + 30
        print(f"# baseline: tests pass in {baseline_s:.1f} s; timeout per mutant {timeout:.0f} s")

        def run_one(mutant: Mutant) -> Mutant:
            if _STOP.is_set():
                return mutant
            copy = copies.get()
            target = copy / mutant.module
            try:
                target.write_bytes(mutant.apply(sources[mutant.module]))
                mutant.status, mutant.seconds, output = _run(command, copy, timeout)
                if mutant.status == "killed":
                    mutant.killed_by = _first_failure(output)
            finally:
                target.write_bytes(sources[mutant.module])
                copies.put(copy)
            if mutant.status == "not run":
                return mutant
            print(f"  {mutant.status:8s} {mutant.seconds:5.1f} s  {mutant.module}:{mutant.line}:{mutant.col} [{mutant.kind}] "
                  f"{mutant.description}" + (f"   <- {mutant.killed_by}" if mutant.killed_by else ""), flush=True)
            return mutant

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(run_one, selected))
        n_run = sum(m.status != "not run" for m in selected)
        if _STOP.is_set():
            print(f"# interrupted: {n_run} of {len(selected)} mutants run")
        print(f"# {n_run} mutants in {time.perf_counter() - t0:.0f} s\n")
        print(_table(selected, args.modules))
        survivors = [m for m in selected if m.status == "survived"]
        if survivors:
            print("\nsurvivors:")
            for m in survivors:
                print(f"  {m.module}:{m.line}:{m.col} [{m.kind}] {m.description}")
        if args.json_out:
            Path(args.json_out).write_text(json.dumps({
                "command": ["benchmarks/mutation_test.py", *(sys.argv[1:] if argv is None else argv)],
                "tests": command[1:], "baseline_s": baseline_s, "timeout_s": timeout,
                "date": str(datetime.date.today()), "machine": platform.node(), "environment": threads,
                "mutants": [asdict(m) for m in selected]}, indent=1))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return 130 if _STOP.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
