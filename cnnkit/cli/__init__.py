"""The `cnnkit` command: argument parsing only; the work is done by library functions.

One module per subcommand (`cnnkit/cli/train.py`, ...), each with `register(sub, common,
overrides)`, which adds its parser, and `run(args) -> int`, which does the command. COMMANDS
below is the order in which `cnnkit --help` lists them.

Every error from the user's input prints one line on stderr and exits 2 (a traceback only
with --debug); a malformed command line gets argparse's usage line and error, also exit 2.
`main(argv)` returns the exit code rather than exiting, so tests run commands in-process.

Nothing heavy is imported at the top of these modules: torch, matplotlib and tqdm are imported
by the command that needs them, so `cnnkit --help` and `cnnkit --version` stay fast
(`python -X importtime -m cnnkit --help` shows what is imported)."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import warnings

from cnnkit.errors import CnnkitError, display

COMMANDS = ("train", "resume", "sweep", "runs", "summary", "eval", "predict", "plot",
            "visualize", "export", "configs", "config", "sample-images")


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions wrapped to the terminal, as argparse does; an epilog that starts with
    `examples:` kept line by line as written (one command a line)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class _Version(argparse.Action):
    """--version: the installed package's version, read from its metadata only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from cnnkit.version import version

        print(f"cnnkit {version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand that does not see --debug leaves the attribute alone, so
    # `cnnkit --debug train x` keeps it (a False default there would overwrite it)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks")
    overrides = argparse.ArgumentParser(add_help=False)
    overrides.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                           help="override one config value, the value read as YAML "
                                "(repeatable; default: none); see the examples below")
    parser = argparse.ArgumentParser(prog="cnnkit", parents=[common],
                                     description="Train and inspect CNNs described in YAML.")
    parser.add_argument("--version", action=_Version, help="print cnnkit's version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        command = importlib.import_module(f"cnnkit.cli.{name.replace('-', '_')}")
        command.register(sub, common, overrides).set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `cnnkit ARGV` (sys.argv[1:] when None) and return its exit code. Ctrl-C at any
    moment, torch's import included, is one line and exit 130."""
    previous = _exit_on_interrupt_inside_imports()
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("cnnkit: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if argv is None and threading.current_thread() is threading.main_thread():
            # the command is done: a Ctrl-C while the interpreter shuts down (torch's
            # teardown can take a second) must not turn its exit status into 130
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _exit_on_interrupt_inside_imports():
    """Python raises KeyboardInterrupt wherever the main thread is, and inside importlib
    (torch's import takes seconds) it can land in a callback that only prints "Exception
    ignored" and goes on. So a Ctrl-C there ends the process at once, in one line: nothing
    is being written while modules import (a run directory's lock dies with the process).
    Elsewhere it is the usual KeyboardInterrupt. Installed only over Python's own handler,
    from the main thread; returns the handler to put back (None: none installed)."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None

    def on_interrupt(signum, frame) -> None:
        while frame is not None:
            if frame.f_code.co_filename.startswith("<frozen importlib"):
                sys.stdout.flush()
                sys.stderr.write("cnnkit: interrupted\n")
                sys.stderr.flush()
                os._exit(130)
            frame = frame.f_back
        raise KeyboardInterrupt

    return signal.signal(signal.SIGINT, on_interrupt)


def _main(argv: list[str] | None) -> int:
    """As the console script (argv None) Python warnings print as one `cnnkit: warning:`
    line each; called with a list (tests, other programs) the caller's warning handling
    stays."""
    if argv is None:
        warnings.showwarning = _one_line_warning
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error argparse has printed
        return int(exit_.code or 0)  # argparse exits with 0 or 2
    try:
        return args.func(args)
    except CnnkitError as exc:
        if getattr(args, "debug", False):
            raise
        print(display(f"cnnkit: error: {exc}"), file=sys.stderr)
        return 2
    except BrokenPipeError:  # `cnnkit summary X --json | head`: the reader has gone
        _stdout_to_devnull()  # so the interpreter's last flush finds no closed pipe either
        return 141  # 128 + SIGPIPE, as a shell reports a command the pipe ended


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"cnnkit: warning: {message}", file=file or sys.stderr, flush=True)


def _stdout_to_devnull() -> None:
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
