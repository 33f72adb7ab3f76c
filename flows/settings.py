"""Where rnnbench keeps its state and which services it talks to, read once per process.

Defaults need no server: MLflow in SQLite, Prefect's temporary API, a local Ray, all under
``$RNNBENCH_HOME`` (default ``./.rnnbench``). Each can be pointed at a real service instead:
arguments win over environment variables, which win over an optional ``rnnbench.toml``
(``$RNNBENCH_CONFIG``, else ``./rnnbench.toml``), which wins over the defaults. Credentials come
from environment variables or secret files and are never printed (``redact``).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import tomllib
from pathlib import Path
from typing import Iterable, Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

CONFIG_ENV = "RNNBENCH_CONFIG"
CONFIG_FILE = "rnnbench.toml"
# each setting and the environment variable that sets it
ENV = {"home": "RNNBENCH_HOME", "tracking_uri": "MLFLOW_TRACKING_URI",
       "experiment": "RNNBENCH_EXPERIMENT", "prefect_api_url": "PREFECT_API_URL",
       "ray_address": "RAY_ADDRESS", "storage": "RNNBENCH_STORAGE",
       "import_root": "RNNBENCH_IMPORT_ROOT", "notify_block": "RNNBENCH_NOTIFY_BLOCK"}
# each credential, the environment variable MLflow's or Prefect's client reads it from, and
# whether it is a secret (a secret is never written in rnnbench.toml, only a file holding it)
CREDENTIALS = {"mlflow_username": ("MLFLOW_TRACKING_USERNAME", False),
               "mlflow_password": ("MLFLOW_TRACKING_PASSWORD", True),
               "mlflow_token": ("MLFLOW_TRACKING_TOKEN", True),
               "prefect_auth_string": ("PREFECT_API_AUTH_STRING", True),
               "prefect_api_key": ("PREFECT_API_KEY", True)}


class ConfigError(ValueError):
    """rnnbench.toml (or RNNBENCH_CONFIG) is wrong: one line naming the key and the valid ones."""


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
    # the only folder a flow run started from a deployment may import data from; None:
    # $RNNBENCH_HOME/import
    import_root: Optional[Path] = None
    # the Prefect notification block a failed or clearly regressed benchmark notifies through
    # ("<block type slug>/<block name>", flows.alerts); None: no notification
    notify_block: Optional[str] = None
    credentials: dict[str, SecretStr] = Field(default_factory=dict, repr=False)
    # setting -> where its value came from: "argument", "environment NAME", the rnnbench.toml
    # path, or "default"
    sources: dict[str, str] = Field(default_factory=dict, repr=False)
    config_file: Optional[Path] = None

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

    @property
    def imports(self) -> Path:
        """The folder a deployment's ``import_dataset`` run may read from."""
        return self.import_root or self.home / "import"

    def secrets(self) -> list[str]:
        return [v.get_secret_value() for k, v in self.credentials.items()
                if CREDENTIALS[k][1] and v.get_secret_value()]


class _Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mlflow_username: Optional[str] = None
    mlflow_password_file: Optional[str] = None
    mlflow_token_file: Optional[str] = None
    prefect_auth_string_file: Optional[str] = None
    prefect_api_key_file: Optional[str] = None


class ConfigFile(BaseModel):
    """What rnnbench.toml may hold: the settings by name, and [credentials]."""

    model_config = ConfigDict(extra="forbid")

    home: Optional[str] = None
    tracking_uri: Optional[str] = None
    experiment: Optional[str] = None
    prefect_api_url: Optional[str] = None
    ray_address: Optional[str] = None
    storage: Optional[str] = None
    import_root: Optional[str] = None
    notify_block: Optional[str] = None
    credentials: _Credentials = _Credentials()


def config_path() -> Optional[Path]:
    """$RNNBENCH_CONFIG (which must exist), else ./rnnbench.toml when there is one."""
    named = os.environ.get(CONFIG_ENV)
    if named:
        path = Path(named).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={named}: no such file")
        return path
    local = Path(CONFIG_FILE)
    return local.resolve() if local.is_file() else None


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    return [f"{prefix}{k}" for k in model.model_fields if k != "credentials"]


@functools.lru_cache(maxsize=None)
def read_config(path: Path) -> ConfigFile:
    """The file, parsed and checked once per process: an unknown key or a wrong type is one
    ConfigError naming it and the valid keys."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    try:
        return ConfigFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            if key.startswith("credentials."):
                name = key.split(".", 1)[1]
                if CREDENTIALS.get(name, ("", False))[1]:
                    raise ConfigError(
                        f"{path}: {key}: a secret is not written in rnnbench.toml; put it in a "
                        f"file and give credentials.{name}_file, or set {CREDENTIALS[name][0]}"
                    ) from None
                valid = _valid_keys(_Credentials, "credentials.")
            else:
                valid = _valid_keys(ConfigFile) + _valid_keys(_Credentials, "credentials.")
            raise ConfigError(f"{path}: unknown key {key!r}; valid: {', '.join(valid)}") from None
        raise ConfigError(f"{path}: {key}: {err['msg']} (got {err['input']!r})") from None


def _folder(value: str, base: Optional[Path] = None) -> Path:
    path = Path(value).expanduser()
    return (base / path if base is not None and not path.is_absolute() else path).resolve()


def load_settings(tracking_uri: str | None = None, experiment: str | None = None,
                  ray_address: str | None = None, home: str | Path | None = None,
                  storage: str | None = None, prefect_api_url: str | None = None) -> Settings:
    """Arguments win over environment variables, which win over rnnbench.toml, which wins over
    the local defaults. Relative folders in rnnbench.toml are read against its own folder."""
    path = config_path()
    file = read_config(path) if path is not None else ConfigFile()
    given = {"home": home, "tracking_uri": tracking_uri, "experiment": experiment,
             "ray_address": ray_address, "storage": storage, "prefect_api_url": prefect_api_url}
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for name, env in ENV.items():
        if given.get(name):
            values[name], sources[name] = given[name], "argument"
        elif os.environ.get(env):
            values[name], sources[name] = os.environ[env], f"environment {env}"
        elif getattr(file, name):
            value = getattr(file, name)
            if name in ("home", "import_root") or (name == "storage" and "://" not in value):
                value = str(_folder(value, path.parent))
            values[name], sources[name] = value, str(path)
        else:
            values[name], sources[name] = None, "default"
    root = _folder(str(values["home"] or ".rnnbench"))
    credentials, credential_sources = _credentials(file, path)
    return Settings(
        home=root,
        tracking_uri=values["tracking_uri"] or f"sqlite:///{root / 'mlflow.db'}",
        experiment=values["experiment"] or "rnnbench",
        ray_address=values["ray_address"] or None,
        prefect_api_url=values["prefect_api_url"] or None,
        storage=_storage(values["storage"] or None),
        import_root=_folder(values["import_root"]) if values["import_root"] else None,
        notify_block=values["notify_block"] or None,
        credentials=credentials, sources={**sources, **credential_sources}, config_file=path,
    )


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """(setting, value as shown, where it came from) for each setting and credential: URIs'
    passwords and every secret masked."""
    src = settings.sources
    shown = {"home": str(settings.home), "tracking_uri": redact(settings.tracking_uri, settings.secrets()),
             "experiment": settings.experiment,
             "prefect_api_url": redact(settings.prefect_api_url or "", settings.secrets())
             or "(none: a temporary local API for each command)",
             "ray_address": settings.ray_address or "(none: a local Ray for each command)",
             "storage": redact(settings.tune_root), "import_root": str(settings.imports),
             "notify_block": settings.notify_block or "(none: failures notify no one)"}
    rows = [(name, shown[name], src.get(name, "default")) for name in ENV]
    for name, (env, secret) in CREDENTIALS.items():
        value = settings.credentials.get(name)
        if value is None:
            rows.append((f"credentials.{name}", "(not set)", "-"))
        else:
            rows.append((f"credentials.{name}", MASK if secret else value.get_secret_value(), src[name]))
    return rows


def _credentials(file: ConfigFile, path: Optional[Path]) -> tuple[dict[str, SecretStr], dict[str, str]]:
    """Each credential from its environment variable, else from rnnbench.toml (a secret from
    the file it names)."""
    values, sources = {}, {}
    for name, (env, secret) in CREDENTIALS.items():
        if os.environ.get(env):
            values[name], sources[name] = SecretStr(os.environ[env]), f"environment {env}"
        elif secret and getattr(file.credentials, f"{name}_file"):
            secret_file = _folder(getattr(file.credentials, f"{name}_file"), path.parent)
            try:
                text = secret_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{path}: credentials.{name}_file: cannot read {secret_file} "
                                  f"({exc.strerror})") from None
            values[name], sources[name] = SecretStr(text), f"file {secret_file} ({path})"
        elif not secret and getattr(file.credentials, name):
            values[name], sources[name] = SecretStr(getattr(file.credentials, name)), str(path)
    return values, sources


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
    if settings.prefect_api_url:
        os.environ["PREFECT_API_URL"] = settings.prefect_api_url
    if settings.import_root:
        os.environ["RNNBENCH_IMPORT_ROOT"] = str(settings.import_root)
    if settings.notify_block:  # flows.alerts reads it in the flow run's process
        os.environ["RNNBENCH_NOTIFY_BLOCK"] = settings.notify_block
    if settings.config_file:  # a flow run started by ``serve`` reads the same file, wherever it runs
        os.environ[CONFIG_ENV] = str(settings.config_file)
    for name, value in settings.credentials.items():  # MLflow's and Prefect's clients read these
        os.environ[CREDENTIALS[name][0]] = value.get_secret_value()
    hide_in_logs(settings.secrets())
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
    # Prefect's temporary API gets 20 s to start by default; on 2 busy cores it took longer and
    # the whole command failed with "Timed out while attempting to connect to ephemeral Prefect
    # API server" before any work
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")
_SECRET_QUERY = re.compile(r"(?P<key>[?&](?:[A-Za-z_]*(?:token|password|secret|key)[A-Za-z_]*)=)[^&\s]+",
                           re.IGNORECASE)
MASK = "***"


def redact(text: str, secrets: Optional[Iterable[str]] = None) -> str:
    """``text`` with the password of any ``scheme://user:password@host``, the value of a
    token-like query parameter and each of ``secrets`` (default: the credentials this process
    loaded) replaced by ***."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _SECRET_QUERY.sub(lambda m: f"{m['key']}{MASK}", text)
    for secret in (_hidden if secrets is None else secrets):
        text = text.replace(secret, MASK)
    return text


def has_secret(text: Optional[str]) -> bool:
    return text is not None and redact(text) != text


_hidden: set[str] = set()
_redacting = False


def hide_in_logs(secrets: list[str]) -> None:
    """Every log record this process creates from now on, from any library, has its message
    redacted: a URI's password and ``secrets`` never reach a console, a log file or the
    Prefect API's log."""
    global _redacting
    if not _redacting:
        make_record = logging.getLogRecordFactory()

        def redacting(*args, **kwargs) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            try:
                message = record.getMessage()
            except Exception:  # a bad format string is logging's own error to report
                return record
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, ()
            return record

        logging.setLogRecordFactory(redacting)
        _redacting = True
    _hidden.update(s for s in secrets if len(s) >= 4)  # a 1-3 character "secret" would mangle every line
