"""The `textrl` command: print configs, build and inspect datasets, run the demo and benchmarks."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any, Callable, Optional, Sequence


def _cmd_config(args: argparse.Namespace) -> int:
    """Print the default configuration of a method as YAML (an unknown name is refused with the known ones)."""
    from textrl.config import default_config  # the methods' losses import torch: not for --help

    print(default_config(args.method))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="textrl", description="Offline reinforcement learning for language models."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("config", help="print a method's default configuration as YAML")
    p.add_argument("--method", default="ilql",
                   help="which agent's method: ilql (default), bc, filtered_bc, mc_returns or cql")
    p.set_defaults(func=_cmd_config)
    for register in _subcommand_modules():
        register(sub)
    return parser


def _subcommand_modules() -> list[Callable[[argparse._SubParsersAction], None]]:
    """The registrars of the subcommands: textrl's own, then the `textrl.commands` entry points.

    Commands that train agents (`bench`, `demo`) live in the `agents` package; they plug in
    through entry points so that `textrl` itself never imports `agents`.
    """
    from importlib.metadata import entry_points

    from textrl.data_cli import add_data_subcommands

    plugins = sorted(entry_points(group="textrl.commands"), key=lambda ep: ep.name)
    return [add_data_subcommands, *(ep.load() for ep in plugins)]


def _interrupt(signum: int, frame: Any) -> None:
    """A signal handled as Ctrl-C."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """While a command runs, SIGTERM (`kill`, a job scheduler ending or preempting a job) stops it as Ctrl-C
    does: checkpoints kept, worker processes stopped, the line that resumes it printed. The handler before
    is put back after (signal handlers belong to the main thread: elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `textrl` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for commands that print a resume line
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        with _sigterm_as_ctrl_c():
            return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError, RuntimeError) as e:  # user-facing errors: no traceback
        print(f"textrl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # a training run's says where its last checkpoint is
        if str(interrupt):
            print(interrupt, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
