"""Ray Tune runs in several threads of one driver: what that needs beyond Tune 2.60 itself.

rnnbench runs a benchmark's sweeps side by side, each ``Tuner.fit`` in its own thread. Two
things in Tune assume one experiment at a time in the main thread:

- Its Ctrl-C handling: ``tune.run`` ends its loop when an event is set, which only its SIGINT
  handler sets, and that handler is installed only in the main thread. Each run's event is
  kept here, so the driver can stop every running sweep the way Ctrl-C stops one (Tune saves
  the experiment's state, then stops: what a resume starts from) and a sweep can tell
  whether it was interrupted.
- Its global trainable registry: registering a trainable iterates a dict that another
  thread's registration may be changing ("dictionary changed size during iteration").
  Its methods are serialized here.

Both wrap Tune's own functions (``ray.tune.tune._setup_signal_catching``, the registry's
methods) and change nothing for a single experiment in the main thread.
"""

from __future__ import annotations

import functools
import threading
import weakref

import ray.tune.tune as _tune_run
from ray.tune import registry as _registry

_tune_signal_catching = _tune_run._setup_signal_catching
_running: "weakref.WeakSet[threading.Event]" = weakref.WeakSet()
_this_thread = threading.local()
_stopping = threading.Event()  # set by interrupt_sweeps: a sweep starting now stops at once


def _setup_signal_catching() -> threading.Event:
    event = _tune_signal_catching()
    _running.add(event)
    _this_thread.interrupted = event
    if _stopping.is_set():
        event.set()
    return event


_tune_run._setup_signal_catching = _setup_signal_catching


def interrupt_sweeps() -> None:
    """Stop every running sweep as Ctrl-C stops one: Tune saves its state, the trials stop."""
    _stopping.set()
    for event in list(_running):
        event.set()


def allow_sweeps() -> None:
    """Sweeps may run again (after ``interrupt_sweeps``, for the next run in this process)."""
    _stopping.clear()


def forget_interrupt() -> None:
    """Before a Tune run in this thread: an earlier run's interruption is not this one's."""
    _this_thread.interrupted = None


def this_sweep_interrupted() -> bool:
    """Whether the last Tune run in this thread was stopped by Ctrl-C or ``interrupt_sweeps``."""
    event = getattr(_this_thread, "interrupted", None)
    return event is not None and event.is_set()


_registry_lock = threading.RLock()


def _serialized(method):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with _registry_lock:
            return method(self, *args, **kwargs)
    return call


for _name in ("register", "flush_values", "unregister", "unregister_all", "contains", "get"):
    setattr(_registry._Registry, _name, _serialized(getattr(_registry._Registry, _name)))
