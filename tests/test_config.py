"""One settings source: arguments over the environment over rnnbench.toml over the defaults,
shown by ``rnnbench config`` with credentials masked, and secrets kept out of what Prefect
and MLflow record and out of the logs."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from flows.settings import ENV, ConfigError, load_settings, read_config, redact

RNNBENCH = str(Path(sys.executable).parent / "rnnbench")
PYTHON = sys.executable
ROOT = Path(__file__).resolve().parents[1]
CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                  "PREFECT_API_AUTH_STRING", "PREFECT_API_KEY")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No setting from the environment, and a working folder without rnnbench.toml."""
    for name in (*ENV.values(), *CREDENTIAL_ENV, "RNNBENCH_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in (*ENV.values(), *CREDENTIAL_ENV, "RNNBENCH_CONFIG")}
    env.update(COLUMNS="200", PYTHONPATH=str(ROOT), **extra)
    return env


def test_with_nothing_set_the_defaults_are_the_embedded_local_ones(clean_env, tmp_path):
    s = load_settings()
    home = (tmp_path / ".rnnbench").resolve()
    assert (s.home, s.tracking_uri, s.experiment) == (home, f"sqlite:///{home / 'mlflow.db'}", "rnnbench")
    assert (s.ray_address, s.prefect_api_url, s.storage, s.import_root) == (None, None, None, None)
    assert (s.tune_root, s.imports) == (str(home / "ray"), home / "import")
    assert set(s.sources.values()) == {"default"} and s.config_file is None and not s.credentials


def test_arguments_beat_the_environment_which_beats_the_file_which_beats_the_defaults(clean_env, tmp_path):
    (tmp_path / "rnnbench.toml").write_text(
        'home = "state"\nexperiment = "from-file"\ntracking_uri = "http://file:5000"\n'
        'storage = "tune"\nray_address = "10.0.0.9:6379"\n')
    clean_env.setenv("RNNBENCH_EXPERIMENT", "from-env")
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    s = load_settings(tracking_uri="http://arg:5000")
    toml = str((tmp_path / "rnnbench.toml").resolve())
    assert s.tracking_uri == "http://arg:5000" and s.sources["tracking_uri"] == "argument"
    assert s.experiment == "from-env" and s.sources["experiment"] == "environment RNNBENCH_EXPERIMENT"
    assert s.ray_address == "10.0.0.9:6379" and s.sources["ray_address"] == toml
    # folders in the file are read against the file's own folder
    assert s.home == (tmp_path / "state").resolve() and s.storage == str((tmp_path / "tune").resolve())
    assert s.sources["prefect_api_url"] == "default" and s.prefect_api_url is None
    assert s.imports == s.home / "import"  # follows the file's home


def test_rnnbench_config_names_the_file_and_it_is_read_once_per_process(clean_env, tmp_path):
    config = tmp_path / "elsewhere" / "service.toml"
    config.parent.mkdir()
    config.write_text('experiment = "first"\n')
    clean_env.setenv("RNNBENCH_CONFIG", str(config))
    assert load_settings().experiment == "first"
    config.write_text('experiment = "second"\n')
    assert load_settings().experiment == "first"  # parsed once; a restart picks up the change
    read_config.cache_clear()
    assert load_settings().experiment == "second"
    clean_env.setenv("RNNBENCH_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="RNNBENCH_CONFIG=.*missing.toml: no such file"):
        load_settings()


@pytest.mark.parametrize("text,message", [
    ('trackinguri = "x"\n', "unknown key 'trackinguri'; valid: home, tracking_uri, experiment, "
                            "prefect_api_url, ray_address, storage, import_root, notify_block, credentials.mlflow_username"),
    ('[credentials]\nmlflow_user = "x"\n', "unknown key 'credentials.mlflow_user'; valid: "
                                           "credentials.mlflow_username, credentials.mlflow_password_file"),
    ('[credentials]\nmlflow_password = "hunter22"\n',
     "credentials.mlflow_password: a secret is not written in rnnbench.toml; put it in a file and "
     "give credentials.mlflow_password_file, or set MLFLOW_TRACKING_PASSWORD"),
    ('home = 3\n', "home: Input should be a valid string (got 3)"),
    ('home = \n', "not valid TOML"),
])
def test_a_bad_file_is_one_line_naming_the_key_before_anything_starts(tmp_path, text, message):
    (tmp_path / "rnnbench.toml").write_text(text)
    home = tmp_path / "home"
    proc = subprocess.run([RNNBENCH, "list"], capture_output=True, text=True, cwd=tmp_path,
                          env=_env(tmp_path, RNNBENCH_HOME=str(home)), timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert message in out.replace("\n", " ") and "Traceback" not in out
    assert "hunter22" not in out
    assert not home.exists(), "nothing may start before the configuration is valid"


def test_config_command_shows_each_value_and_its_source_with_credentials_masked(tmp_path):
    (tmp_path / "secret").write_text("s3cr3t-pass\n")
    (tmp_path / "rnnbench.toml").write_text(
        'tracking_uri = "http://bob:hunter22@127.0.0.1:5999"\nimport_root = "incoming"\n'
        '[credentials]\nmlflow_username = "bob"\nmlflow_password_file = "secret"\n')
    env = _env(tmp_path, RNNBENCH_EXPERIMENT="nightly", PREFECT_API_AUTH_STRING="admin:pa55word")
    proc = subprocess.run([RNNBENCH, "config", "--ray-address", "10.1.2.3:6379"], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in proc.stdout.splitlines()[1:] if line.strip()}
    toml = str(tmp_path.resolve() / "rnnbench.toml")
    assert rows["home"] == [str(tmp_path.resolve() / ".rnnbench"), "default"]
    assert rows["tracking_uri"] == ["http://bob:***@127.0.0.1:5999", toml]
    assert rows["experiment"] == ["nightly", "environment RNNBENCH_EXPERIMENT"]
    assert rows["ray_address"] == ["10.1.2.3:6379", "option"]
    assert rows["import_root"] == [str(tmp_path.resolve() / "incoming"), toml]
    assert rows["credentials.mlflow_username"] == ["bob", toml]
    assert rows["credentials.mlflow_password"][0] == "***"
    assert rows["credentials.mlflow_password"][1].startswith(f"file {tmp_path.resolve() / 'secret'}")
    assert rows["credentials.prefect_auth_string"] == ["***", "environment PREFECT_API_AUTH_STRING"]
    assert f"rnnbench.toml: {toml}" in proc.stdout
    for secret in ("hunter22", "s3cr3t-pass", "pa55word"):
        assert secret not in proc.stdout + proc.stderr


def test_redact_masks_passwords_in_uris_token_parameters_and_known_secrets():
    text = ("postgresql+psycopg2://mlflow:pg-pass@127.0.0.1:5432/mlflow and "
            "https://u:p%40ss@host/api?token=abc123&page=2 and the word s3cr3t")
    assert redact(text, ["s3cr3t"]) == ("postgresql+psycopg2://mlflow:***@127.0.0.1:5432/mlflow and "
                                        "https://u:***@host/api?token=***&page=2 and the word ***")
    assert redact("http://127.0.0.1:5000 user@example.org", []) == "http://127.0.0.1:5000 user@example.org"


def test_a_flow_gets_no_password_in_its_parameters_and_logs_and_params_hide_it(tmp_path):
    """The CLI hands the flow no URI that carries a password (Prefect shows parameters in its
    UI; the flow reads MLFLOW_TRACKING_URI instead); a log line and an MLflow param quoting a
    credential are masked."""
    from flows.cli import _benchmark_args
    from flows.tracking import _flat_params

    settings = load_settings(home=tmp_path, tracking_uri="http://bob:hunter22@mlflow.internal:5000")
    plan = SimpleNamespace(settings=settings, datasets=["sunspots"], variants=["lstm"])
    args = _benchmark_args(plan, "quick", None)
    assert args["tracking_uri"] is None and "hunter22" not in repr(args)
    plain = load_settings(home=tmp_path, tracking_uri="http://mlflow.internal:5000")
    assert _benchmark_args(SimpleNamespace(settings=plain, datasets=[], variants=[]), "quick",
                           None)["tracking_uri"] == "http://mlflow.internal:5000"
    assert [p.value for p in _flat_params({"uri": settings.tracking_uri})] == ["http://bob:***@mlflow.internal:5000"]
    # in a process of its own: apply_environment changes the environment and logging for good
    script = (
        "import logging, sys\n"
        "from flows.settings import apply_environment, load_settings\n"
        "apply_environment(load_settings())\n"
        "logging.basicConfig(stream=sys.stdout, format='%(message)s')\n"
        "logging.getLogger('mlflow').warning('retrying %s with %s', 'http://bob:hunter22@h:5000', 'tok-9f8e7d')\n"
        "import prefect\n"
        "logging.getLogger('prefect.flow_runs').warning('auth tok-9f8e7d')\n")
    proc = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env=_env(tmp_path, RNNBENCH_HOME=str(tmp_path / "h"),
                                   MLFLOW_TRACKING_TOKEN="tok-9f8e7d"), timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "retrying http://bob:***@h:5000 with ***" in out and "hunter22" not in out
    assert "tok-9f8e7d" not in out


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(401 if self.path.startswith("/auth") else 200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_ui_shows_a_configured_tracking_server_and_prefect_api_instead_of_starting_them(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        env = _env(tmp_path, RNNBENCH_HOME=str(tmp_path / "h"),
                   MLFLOW_TRACKING_URI=f"http://bob:hunter22@127.0.0.1:{port}/auth",
                   PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
        proc = subprocess.run([RNNBENCH, "ui", "--host", "127.0.0.1"], capture_output=True,
                              text=True, cwd=tmp_path, env=env, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"MLflow UI: http://bob:***@127.0.0.1:{port}/auth" in out  # a 401 is an answer
    assert f"Prefect UI: http://127.0.0.1:{port}\n" in out
    assert "not answering" not in out and "Ctrl-C" not in out and "hunter22" not in out
    assert not (tmp_path / "h" / "prefect" / "prefect.db").exists()


def test_ui_refuses_a_bad_port_and_takes_a_host(tmp_path):
    proc = subprocess.run([RNNBENCH, "ui", "--host", "127.0.0.1", "--mlflow-port", "70000"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env=_env(tmp_path, RNNBENCH_HOME=str(tmp_path / "h")), timeout=60)
    assert proc.returncode == 2 and "port must be between 1 and 65535, got 70000" in proc.stdout
