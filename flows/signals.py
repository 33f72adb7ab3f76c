"""Stopping on a signal: SIGTERM (a scheduler, ``kill``) stops rnnbench the way Ctrl-C does."""

from __future__ import annotations

import signal


def stop_like_ctrl_c(signum, frame) -> None:
    """Inside a sweep, Tune's SIGINT handler (installed for the sweep) saves the experiment's
    state and stops the trials; anywhere else, KeyboardInterrupt (runs marked KILLED). The
    handler is called directly: raising SIGINT from inside a signal handler while Ray waits in
    C code left an exception set there."""
    on_interrupt = signal.getsignal(signal.SIGINT)
    if callable(on_interrupt) and on_interrupt is not signal.default_int_handler:
        on_interrupt(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt
