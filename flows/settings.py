"""Where rnnbench keeps its state and which services it talks to, read once per process.

Defaults need no server: MLflow in SQLite, Prefect's temporary API, a local Ray, all under
``$RNNBENCH_HOME`` (default ``./.rnnbench``). Each can be pointed at a real service instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    home: Path
    tracking_uri: str
    experiment: str
    ray_address: Optional[str] = None
    prefect_api_url: Optional[str] = None
    # where Tune keeps its experiment state and checkpoints: a folder every Ray node sees, or
    # any URI pyarrow's filesystems accept (s3://, gs://); None: $RNNBENCH_HOME/ray
    storage: Optional[str] = None

    @property
    def data_root(self) -> Path:
        return self.home / "data"

    @property
    def tune_root(self) -> str:
        """Tune's storage: a local folder or a URI (``s3://bucket/prefix``), as a string."""
        return self.storage or str(self.home / "ray")

    @property
    def storage_is_default(self) -> bool:
        return self.storage is None

    @property
    def artifact_root(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def reports_root(self) -> Path:
        return self.home / "reports"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"


def load_settings(tracking_uri: str | None = None, experiment: str | None = None,
                  ray_address: str | None = None, home: str | Path | None = None,
                  storage: str | None = None) -> Settings:
    """Arguments win over environment variables, which win over the local defaults."""
    root = Path(home or os.environ.get("RNNBENCH_HOME") or ".rnnbench").expanduser().resolve()
    return Settings(
        home=root,
        tracking_uri=tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{root / 'mlflow.db'}",
        experiment=experiment or os.environ.get("RNNBENCH_EXPERIMENT") or "rnnbench",
        ray_address=ray_address or os.environ.get("RAY_ADDRESS") or None,
        prefect_api_url=os.environ.get("PREFECT_API_URL") or None,
        storage=_storage(storage or os.environ.get("RNNBENCH_STORAGE") or None),
    )


def _storage(value: str | None) -> str | None:
    """A URI stays as given; a folder becomes absolute (Ray needs one; a relative one would be
    read against each process's own working folder)."""
    if value is None or "://" in value:
        return value
    return str(Path(value).expanduser().resolve())


def apply_environment(settings: Settings) -> None:
    """Export what child processes and late-imported libraries read from the environment.

    The CLI calls it before Prefect is imported (Prefect reads PREFECT_HOME then); a flow run
    started by Prefect calls it again for its own settings before it opens any run.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    os.environ["RNNBENCH_HOME"] = str(settings.home)
    os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    if settings.storage:
        os.environ["RNNBENCH_STORAGE"] = settings.storage
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
    # Ray 2.60 turns token auth on by itself for a plain ray.init() and writes a token to the
    # home folder; the local instance, which only this process's children reach, wants none.
    # A cluster keeps its own: its token comes from RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH (or
    # ~/.ray/auth_token), and rnnbench forces no mode on it.
    if not settings.ray_address:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    elif "RAY_AUTH_MODE" not in os.environ and (
            os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"  # a token given is a token to use
    # Tune's own console reporter gives way to rnnbench's progress display
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # with a tracking server MLflow prints a "View run" line for every run it ends; the CLI's
    # closing lines give the links that matter
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # the temporary API's telemetry job writes to its SQLite file concurrently with the flow
    # and, on a busy 2-core machine, printed "database is locked" tracebacks
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect's client prints a telemetry notice otherwise
