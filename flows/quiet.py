"""Console hygiene: the warnings and log lines that tell a user nothing actionable.

``silence`` runs in the driver and, through ``worker_setup`` (Ray's worker_process_setup_hook),
in every Ray worker: warning filters set in the driver do not reach worker processes.
"""

from __future__ import annotations

import logging
import os
import signal
import warnings

_IGNORED_WARNINGS = (
    r".*does not have many workers.*",  # DataLoader advice; tiny in-memory datasets need none
    r".*weights_only.*",  # torch.load notice at checkpoint save/restore
    r".*pytree.*",  # torch's _register_pytree_node deprecation, raised inside libraries
    r".*enable_nested_tensor.*",
    r".*GPU available but not used.*",
    r".*The number of training batches.*log_every_n_steps.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*pickle.*",  # MLflow's note on pickled artifacts
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*Consider setting `persistent_workers=True`.*",
    r".*Starting from v1\.9\.0, `tensorboardX` has been removed.*",
    r".*Found .* module\(s\) in eval mode.*",
)

_QUIET_LOGGERS = (
    "pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric",
    "pytorch_lightning.utilities.rank_zero", "pytorch_lightning.accelerators.cuda",
    "mlflow", "alembic", "ray", "ray.tune", "ray.train", "filelock", "urllib3",
)


class _SnapshotRace(logging.Filter):
    """Tune syncs its state folder while its searcher replaces a file there (a temporary file,
    then a rename); a snapshot that lists the temporary file and then misses it fails with
    FileNotFoundError and a traceback. The next periodic snapshot, and the forced one at the
    end of every sweep, write the state again: that one failure costs nothing, so it stays
    out of the console. Any other snapshot failure still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage().startswith("Saving experiment state to storage")
                    and isinstance(error, FileNotFoundError) and "-tmp-" in str(error))


_SNAPSHOT_LOGGER = "ray.tune.execution.experiment_state"


class _TrialFailures(logging.Filter):
    """A failed trial is recorded where users look for it: its MLflow run ends FAILED with the
    reason (and the traceback in Tune's own trial folder), the sweep's closing line and the
    leaderboard count it. Tune's full remote traceback in the console says nothing more."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(("Trial task failed for trial", "Trials did not complete"))


_TRIAL_LOGGERS = ("ray.tune.execution.tune_controller", "ray.tune.tune")


class _Interrupted(logging.Filter):
    """A flow run stopped on purpose (Ctrl-C, ``rnnbench serve`` shutting down) records that it
    was stopped (MLflow runs KILLED, the flow run's final state); Prefect's "crash detected"
    lines and the interrupt's traceback tell the console nothing more. The Prefect API's log
    handler still gets them."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not ("aborted by an interrupt signal" in record.getMessage()
                    or type(error).__name__ in ("KeyboardInterrupt", "TerminationSignal"))


def quiet_interrupts() -> None:
    """Put ``_Interrupted`` on this process's console log handlers (not the API's)."""
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
        for handler in logging.getLogger(name).handlers:
            if type(handler).__name__ != "APILogHandler" and not any(
                    isinstance(f, _Interrupted) for f in handler.filters):
                handler.addFilter(_Interrupted())


def silence() -> None:
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    for pattern in _IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in _TRIAL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _TrialFailures) for f in logger.filters):
            logger.addFilter(_TrialFailures())
    snapshots = logging.getLogger(_SNAPSHOT_LOGGER)
    if not any(isinstance(f, _SnapshotRace) for f in snapshots.filters):
        snapshots.addFilter(_SnapshotRace())


def worker_setup() -> None:
    """Ray's worker_process_setup_hook: quiet, and deaf to the terminal's Ctrl-C, which reaches
    the whole process group. The driver handles it (Tune saves its state and stops the trials);
    a worker that got it too would end its trial early as if it had finished (Lightning treats
    KeyboardInterrupt as a graceful stop), and that trial would never be resumed."""
    silence()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from flows.settings import CREDENTIALS, hide_in_logs  # credentials forwarded to the worker

    hide_in_logs([os.environ[env] for env, secret in CREDENTIALS.values()
                  if secret and os.environ.get(env)])
