"""The CLI's process setup: settings and environment, signals, Prefect's temporary API, and
running a flow with interruptions and bad input turned into exit codes and one line each."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from typing import Any, Callable

from typer import Exit

from flows.settings import ConfigError, Settings, apply_environment, load_settings
from flows.signals import stop_like_ctrl_c

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: a service the run needs does not answer
EXIT_INTERRUPTED = 130


def setup(tracking_uri=None, experiment=None, ray_address=None, storage=None,
          trigger: str | None = "cli") -> Settings:
    """``trigger``: what the flows this process runs record as ``rnnbench.trigger``; None for
    ``serve``, whose flow runs say it themselves (deployment or schedule)."""
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    try:
        settings = load_settings(tracking_uri, experiment, ray_address, storage=storage)
    except ConfigError as exc:  # before anything starts
        from flows.render import error

        error(str(exc))
        raise Exit(EXIT_BAD_INPUT) from None
    apply_environment(settings)
    if trigger:
        os.environ["RNNBENCH_TRIGGER"] = trigger
    else:
        os.environ.pop("RNNBENCH_TRIGGER", None)
    from flows.quiet import silence

    silence()
    return settings


def bad_input_types() -> tuple[type, ...]:
    from datamodules.errors import DataError
    from flows.plan import PlanError

    return DataError, PlanError, ConfigError


class _ConsoleNoise(logging.Filter):
    """Ctrl-C is a user's decision and bad input the user's to fix, not crashes: rnnbench says
    what happened in one line, so Prefect's tracebacks for them stay out of the terminal (they
    still reach the Prefect API and its UI)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "aborted by an interrupt signal" in message:
            return False
        error = record.exc_info[1] if record.exc_info else None
        names = tuple(t.__name__ for t in bad_input_types()) + ("IncompleteBenchmark",)
        return not (isinstance(error, bad_input_types()) or any(n in message for n in names))


def _die_with_parent() -> None:
    """In the child, before it runs the server: the kernel sends it SIGKILL when rnnbench dies,
    however it dies (a SIGKILL, the OOM killer), so the server never outlives its run; in a
    session of its own it would otherwise live on indefinitely. Linux only (prctl)."""
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def start_prefect_api() -> None:
    """Start Prefect's temporary API (when no PREFECT_API_URL is set) in a session of its own.

    Ctrl-C in a terminal signals the whole foreground process group; a temporary API that
    died with it left Prefect retrying to record the interruption, and the command hung.
    """
    if os.environ.get("PREFECT_API_URL"):
        return
    from prefect.server.api import server as prefect_server

    popen = subprocess.Popen

    def detached(*args, **kwargs):
        kwargs.setdefault("start_new_session", True)
        kwargs.setdefault("preexec_fn", _die_with_parent)
        return popen(*args, **kwargs)

    prefect_server.subprocess.Popen = detached
    try:
        prefect_server.SubprocessASGIServer().start()  # the instance Prefect's client reuses
    finally:
        prefect_server.subprocess.Popen = popen
    from prefect.logging.handlers import APILogHandler

    for handler in logging.getLogger().handlers:  # the console; the API handler keeps it all
        if not isinstance(handler, APILogHandler):
            handler.addFilter(_ConsoleNoise())


def run_flow(fn: Callable[..., Any], **kwargs) -> Any:
    """Run a flow under the temporary API; bad input, Ctrl-C and failure become exit codes."""
    from flows import render

    start_prefect_api()
    try:
        return fn(**kwargs)
    except KeyboardInterrupt:
        render.console.print("\n[yellow]interrupted:[/] runs marked KILLED, Ray stopped, Tune's state "
                             "saved. Run the same command again to resume.")
        raise Exit(EXIT_INTERRUPTED) from None
    except bad_input_types() as exc:
        render.error(str(exc))
        raise Exit(exit_code(exc)) from None


def exit_code(exc: BaseException) -> int:
    from flows.plan import ServiceUnavailable

    return EXIT_UNAVAILABLE if isinstance(exc, ServiceUnavailable) else EXIT_BAD_INPUT
