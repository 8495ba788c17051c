"""The ``spacetime-md`` command line.

``main(argv=None) -> int`` is the entry point, so tests call it in-process. Sub-commands
live in :mod:`spacetime_md.commands`; each registers its parser without heavy imports.
User errors (``ValueError``, ``TypeError``, ``FileNotFoundError``, ``KeyError`` and
:class:`spacetime_md.errors.SpacetimeMDError`) are printed as one line
``spacetime-md: error: ...`` and give exit code 2; no traceback. ``--debug`` re-raises.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from typing import Sequence

from spacetime_md import __version__
from spacetime_md.commands import command_texts
from spacetime_md.errors import SpacetimeMDError

__all__ = ["main", "console_main", "run_main", "build_parser", "COMMAND_MODULES", "MALLOC_ENV", "malloc_env"]

#: Sub-command modules, in the order ``--help`` lists them. A module that does not exist
#: (yet) is skipped.
COMMAND_MODULES: tuple[str, ...] = (
    "spacetime_md.commands.paths",
    "spacetime_md.commands.committor",
    "spacetime_md.commands.batch",
    "spacetime_md.commands.sample",
    "spacetime_md.commands.train",
    "spacetime_md.commands.evaluate",
    "spacetime_md.commands.guide",
    "spacetime_md.commands.toy",
    "spacetime_md.commands.benchmark",
    "spacetime_md.commands.image",
)

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, KeyError, SpacetimeMDError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spacetime-md",
        description="Transition paths between metastable molecular states from the "
        "spacetime geometry of diffusion models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        if hasattr(module, "add_arguments"):
            help_text, description = command_texts(module.__doc__)
            sub = subparsers.add_parser(name.rpartition(".")[2], help=help_text, description=description)
            module.add_arguments(sub)
        else:  # a module that registers its own parser
            sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    else:
        text = str(exc)
    return " ".join(text.split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    # Commands may set torch's thread count (--threads, --num-threads); an in-process caller
    # gets its own back. torch is only looked at if it was imported before (--help stays fast).
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"spacetime-md: error: {_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spacetime-md: interrupted", file=sys.stderr)
        return 130
    finally:
        if threads is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


#: glibc allocator settings the ``spacetime-md`` executable starts with (see :func:`console_main`).
MALLOC_ENV: dict[str, str] = {"MALLOC_MMAP_THRESHOLD_": "1073741824", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


def malloc_env(environ: dict[str, str], platform: str = sys.platform) -> dict[str, str] | None:
    """The environment to restart the executable with, or ``None`` to run as is.

    On Linux, glibc returns every freed allocation above its mmap threshold (at most 32 MiB
    by default) to the kernel, and the next one is mapped and zeroed again: sampling a model
    spent more time in the kernel than in torch (docs/scaling.md). Telling glibc to keep up to
    1 GiB (:data:`MALLOC_ENV`) makes ``evaluate``'s sampling 3.4x faster; glibc reads these
    variables only when the process starts, hence a restart. ``None`` where either variable or
    ``GLIBC_TUNABLES`` is already set (yours win), where ``SPACETIME_MD_MALLOC=system`` asks
    for glibc's own adaptive defaults (setting ``MALLOC_MMAP_THRESHOLD_`` to any value turns
    glibc's adaptation off), or off Linux.
    """
    if not platform.startswith("linux") or "GLIBC_TUNABLES" in environ:
        return None
    if environ.get("SPACETIME_MD_MALLOC") == "system":
        return None
    if any(name in environ for name in MALLOC_ENV):
        return None
    return {**environ, **MALLOC_ENV}


def console_main() -> int:
    """The ``spacetime-md`` executable: on Linux, first restart the same script once, with the
    same interpreter and arguments, in the environment of :func:`malloc_env` (worker processes
    inherit it); then :func:`run_main`."""
    import os

    script = sys.argv[0] if sys.argv else ""
    env = malloc_env(dict(os.environ))
    if env is not None and sys.executable and script and os.path.isfile(script):
        os.execve(sys.executable, [sys.executable, script, *sys.argv[1:]], env)
    return run_main()


def run_main() -> int:
    """:func:`main`, then :func:`gc.freeze` so that the interpreter's last collection at exit does
    not walk every object of torch, OpenMM and the run (about 0.3 s of the main command's wall
    time on a 2-core machine); every ``atexit`` handler and finaliser still runs."""
    import gc

    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":  # pragma: no cover  (python -m spacetime_md.cli: your interpreter, as started)
    sys.exit(run_main())
