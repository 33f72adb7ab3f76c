"""The deployment manifests in infra/ hold together: compose, the Dockerfiles and the k8s files.

Docker and Kubernetes do not run on CI machines, so these tests read the files and check the
mistakes that would otherwise surface only on a real cluster: a port open to the network, a
committed password, a dependency on a service that does not exist, torch installed after the
lock, a RayCluster without GPUs. Fast and offline.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
COMPOSE = INFRA / "compose.yaml"
DOCKERFILE = INFRA / "Dockerfile"
K8S = INFRA / "k8s"
PROJECT_IMAGE = "rnnbench"
SERVICES = {"postgres", "mlflow", "prefect-server", "prefect-worker", "ray-head", "ray-gpu-worker"}
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|AUTH_STRING", re.I)
REQUIRED_VAR = re.compile(r"^\$\{([A-Z0-9_]+):\?[^}]*\}$")
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")
URL_CREDENTIALS = re.compile(r"://[^/:@\s]+:([^@\s]+)@")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command(service: dict) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in lines if line and not line.startswith("#")]


def _k8s_documents() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return docs


def _containers(doc: dict) -> list[dict]:
    """Every container of a pod-bearing document (Deployment, RayCluster head and workers)."""
    spec = doc.get("spec", {})
    templates = [spec.get("template", {})]
    if doc["kind"] == "RayCluster":
        templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    return [c for t in templates for c in t.get("spec", {}).get("containers", [])]


def _image_name(image: str) -> str:
    """rnnbench from REGISTRY/rnnbench:TAG, and from compose's ${RNNBENCH_IMAGE:-rnnbench:TAG}."""
    image = INTERPOLATION.sub(lambda m: m[0].split(":-", 1)[1][:-1] if ":-" in m[0] else "", image)
    return image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]


# ---- compose ---------------------------------------------------------------------------------

def test_compose_has_the_stack_services(services):
    assert SERVICES <= set(services), f"missing: {SERVICES - set(services)}"


def test_every_published_port_binds_to_localhost_by_default(services):
    published = [(name, str(p)) for name, s in services.items() for p in s.get("ports", [])]
    assert published, "the stack publishes the UIs; no ports found"
    for name, port in published:
        parts = INTERPOLATION.sub(lambda m: m[0].replace(":", "\0"), port).split(":")
        assert len(parts) == 3, f"{name}: {port!r} has no host address, so it listens on every interface"
        host = parts[0].replace("\0", ":")
        assert host == "127.0.0.1" or re.fullmatch(r"\$\{[A-Z0-9_]+:-127\.0\.0\.1\}", host), \
            f"{name}: {port!r} does not default to 127.0.0.1"


def test_no_secret_is_written_into_compose(services):
    """Every password, token, secret key and auth string, and every password inside a URL, is a
    required interpolation (${VAR:?...}): compose stops when it is unset instead of using a
    default, and nothing real is committed."""
    for name, service in services.items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key):
                assert REQUIRED_VAR.match(value), f"{name}: {key}={value!r} is not ${{VAR:?...}}"
        for text in [*_environment(service).values(), *_command(service)]:
            for password in URL_CREDENTIALS.findall(text):
                assert REQUIRED_VAR.match(password), f"{name}: a URL carries a literal password: {text!r}"


def test_env_example_lists_every_required_variable_with_placeholders():
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE.read_text()))
    example = dict(line.split("=", 1) for line in (INFRA / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert required, "compose should require its credentials"
    assert required <= set(example), f"not in .env.example: {required - set(example)}"
    for key in required & set(example):
        if SECRET_NAME.search(key):
            assert "change-me" in example[key], f".env.example: {key} should be a placeholder"


def test_filled_in_env_file_is_ignored_by_git():
    assert ".env" in (INFRA / ".gitignore").read_text().split()


def test_depends_on_names_existing_services_and_waits_for_health(services):
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {} for d in depends}
        for target, how in depends.items():
            assert target in services, f"{name} depends on unknown service {target}"
            if "healthcheck" in services[target]:
                assert (how or {}).get("condition") == "service_healthy", \
                    f"{name} should wait for {target} to be healthy"


def test_postgres_has_a_healthcheck(services):
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])


def test_mlflow_uses_postgresql_proxied_artifacts_and_basic_auth(services):
    mlflow = services["mlflow"]
    command = " ".join(_command(mlflow))
    assert re.search(r"--backend-store-uri[= ]postgresql://", command)
    assert re.search(r"--artifacts-destination[= ]/mlartifacts", command)
    assert "--serve-artifacts" in command
    assert re.search(r"--app-name[= ]basic-auth", command)
    assert any(v.endswith(":/mlartifacts") for v in mlflow["volumes"])
    env = _environment(mlflow)
    assert {"MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"} <= set(env)
    assert env["MLFLOW_AUTH_DATABASE_URI"].startswith("postgresql://")


def test_mlflow_image_has_the_auth_extra_and_the_postgres_driver():
    text = (INFRA / "mlflow" / "Dockerfile").read_text()
    assert "mlflow[auth]" in text and "psycopg2-binary" in text
    pinned = re.search(r"MLFLOW_VERSION=(\S+)", text)[1]
    lock = (INFRA / "requirements.lock").read_text()
    assert f"\nmlflow=={pinned}\n" in lock, "the server's MLflow should be the version rnnbench's lock pins"


def test_mlflow_auth_entrypoint_writes_the_ini_the_config_path_names(services):
    script = (INFRA / "mlflow" / "entrypoint.sh").read_text()
    assert "MLFLOW_AUTH_CONFIG_PATH" in script and "database_uri" in script and 'exec "$@"' in script
    assert _environment(services["mlflow"])["MLFLOW_AUTH_CONFIG_PATH"]


def test_prefect_server_uses_postgresql_and_basic_auth(services):
    env = _environment(services["prefect-server"])
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert "PREFECT_SERVER_API_AUTH_STRING" in env


def test_prefect_worker_is_a_process_worker_of_the_project_image(services):
    worker = services["prefect-worker"]
    command = [*(worker.get("entrypoint") or []), *_command(worker)]
    assert command[:3] == ["prefect", "worker", "start"] and "process" in command
    assert _image_name(worker["image"]) == PROJECT_IMAGE
    env = _environment(worker)
    assert env["PREFECT_API_URL"].startswith("http://prefect-server:")
    assert "PREFECT_API_AUTH_STRING" in env


def test_ray_gpu_worker_reserves_an_nvidia_gpu_and_joins_the_head(services):
    worker = services["ray-gpu-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert "--address=ray-head:6379" in _command(worker)
    assert "--head" in _command(services["ray-head"])


def test_project_services_run_the_project_image_and_share_its_state_volume(services):
    for name in ("ray-head", "ray-gpu-worker", "prefect-worker"):
        service = services[name]
        assert _image_name(service["image"]) == PROJECT_IMAGE, name
        assert service["build"]["dockerfile"] == "infra/Dockerfile", name
        home = _environment(service)["RNNBENCH_HOME"]
        assert any(v.split(":")[1] == home for v in service["volumes"]), \
            f"{name}: RNNBENCH_HOME is not on the shared volume"


def test_every_named_volume_used_is_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":")[0]
            if not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name} uses undeclared volume {source}"
    assert {"postgres-data", "mlflow-artifacts"} <= declared


def test_bind_mounted_files_exist(services):
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name} mounts missing {source}"


# ---- the project image -------------------------------------------------------------------------

def test_dockerfile_installs_torch_from_the_build_arg_then_the_lock_then_the_project():
    runs = [args for op, args in _dockerfile_instructions() if op == "RUN"]
    args = [a for op, a in _dockerfile_instructions() if op == "ARG"]
    assert any(a.startswith("TORCH_SPEC=") for a in args)

    def first(pattern: str) -> int:
        hits = [i for i, r in enumerate(runs) if re.search(pattern, r)]
        assert hits, f"no RUN matches {pattern!r}"
        return hits[0]

    torch = first(r"pip install \$\{?TORCH_SPEC\}?")
    lock = first(r"pip install -r infra/requirements\.lock")
    project = first(r"pip install --no-deps \.")
    assert torch < lock < project


def test_dockerfile_default_torch_is_the_cuda_build_of_the_makefiles_version():
    spec = next(a for op, a in _dockerfile_instructions() if op == "ARG" and a.startswith("TORCH_SPEC="))
    makefile_torch = re.search(r"^TORCH_SPEC \?= (\S+)", (ROOT / "Makefile").read_text(), re.M)[1]
    assert makefile_torch in spec and "download.pytorch.org/whl/cu" in spec


def test_dockerfile_runs_as_a_non_root_user_with_state_on_a_volume():
    ops = _dockerfile_instructions()
    users = [a for op, a in ops if op == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert any(op == "ENV" and "RNNBENCH_HOME=" in a for op, a in ops)
    assert any(op == "VOLUME" and "/var/lib/rnnbench" in a for op, a in ops)
    assert [a for op, a in ops if op == "ENTRYPOINT"][-1] == '["rnnbench"]'


def test_dockerfile_copies_only_what_the_install_needs():
    """The build context is the repository root; COPY . would carry .git, .venv and local state."""
    sources = []
    for op, args in _dockerfile_instructions():
        if op == "COPY":
            sources += [a for a in args.split()[:-1] if not a.startswith("--")]
    assert sources
    for source in sources:
        assert source not in {".", "./", "*"} and not source.startswith((".git", ".venv", ".rnnbench"))
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"


def test_dockerfile_ships_every_package_pyproject_installs():
    packages = re.search(r'include = \[([^\]]*)\]', (ROOT / "pyproject.toml").read_text())[1]
    copied = {a.split()[0] for op, a in _dockerfile_instructions() if op == "COPY"}
    for package in re.findall(r'"(\w+)\*"', packages):
        assert package in copied, f"pyproject.toml installs {package}, the Dockerfile does not COPY it"


# ---- Kubernetes --------------------------------------------------------------------------------

def test_every_k8s_document_parses_and_is_named():
    docs = _k8s_documents()
    assert docs
    for path, doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), path.name
        assert doc.get("metadata", {}).get("name"), f"{path.name}: {doc['kind']} has no metadata.name"


def test_kustomization_lists_every_manifest():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_raycluster_has_a_head_and_a_gpu_worker_group():
    (cluster,) = [d for _, d in _k8s_documents() if d["kind"] == "RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    assert spec["headGroupSpec"]["template"]["spec"]["containers"]
    assert "rayStartParams" in spec["headGroupSpec"]
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
                         for c in g["template"]["spec"]["containers"])]
    assert gpu_groups, "no worker group limits nvidia.com/gpu"
    assert all("rayStartParams" in g for g in spec["workerGroupSpecs"])


def test_k8s_runs_the_same_project_image_as_compose(services):
    images = {_image_name(c["image"]) for _, d in _k8s_documents() if d["kind"] in {"RayCluster", "Deployment"}
              for c in _containers(d)}
    assert images == {PROJECT_IMAGE} == {_image_name(services["ray-head"]["image"])}


def test_prefect_worker_deployment_reads_the_api_url_and_credentials_by_reference():
    (worker,) = [d for _, d in _k8s_documents() if d["kind"] == "Deployment"]
    (container,) = _containers(worker)
    assert container["command"][:3] == ["prefect", "worker", "start"] and "process" in container["command"]
    config_maps = {e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e}
    (config,) = [d for _, d in _k8s_documents() if d["kind"] == "ConfigMap"]
    assert config["metadata"]["name"] in config_maps and "PREFECT_API_URL" in config["data"]
    secret_env = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert "PREFECT_API_AUTH_STRING" in secret_env


def test_no_secret_values_are_committed_to_k8s():
    for path, doc in _k8s_documents():
        if doc["kind"] == "Secret":
            assert not doc.get("data") and not doc.get("stringData"), f"{path.name} commits a Secret"
        for container in _containers(doc) if doc["kind"] in {"RayCluster", "Deployment"} else []:
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]):
                    assert "value" not in env, f"{path.name}: {env['name']} has a literal value"
        if doc["kind"] == "ConfigMap":
            assert not any(SECRET_NAME.search(k) for k in doc["data"]), f"{path.name}: secret in a ConfigMap"


def test_ray_cluster_config_starts_nodes_as_the_readme_does():
    """infra/ray-cluster.yaml (Ray's launcher, on-premise machines): the head runs no trials,
    every node uses the cluster's token from a file, the install is torch then the lock, and
    no token or credential is committed."""
    config = yaml.safe_load((INFRA / "ray-cluster.yaml").read_text())
    assert config["provider"]["type"] == "local" and config["provider"]["worker_ips"]
    assert config["max_workers"] == len(config["provider"]["worker_ips"])
    readme = (ROOT / "README.md").read_text()
    head = " ".join(config["head_start_ray_commands"])
    workers = " ".join(config["worker_start_ray_commands"])
    assert "ray start --head" in head and "--num-cpus 0" in head and "--num-cpus 0" in readme
    assert "ray start --address" in workers and "--num-cpus 0" not in workers
    for command in (head, workers):
        assert "RAY_AUTH_MODE=token" in command and "RAY_AUTH_TOKEN_PATH=/etc/rnnbench/ray-token" in command
        assert "--disable-usage-stats" in command
    assert "/etc/rnnbench/ray-token" in config["file_mounts"]
    setup = config["setup_commands"]
    torch_step = next(i for i, c in enumerate(setup) if "torch==" in c)
    lock_step = next(i for i, c in enumerate(setup) if "requirements.lock" in c)
    assert torch_step < lock_step
    makefile_torch = re.search(r"^TORCH_SPEC \?= (torch==\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert makefile_torch in setup[torch_step]
    for mounted in config["file_mounts"].values():
        if mounted.startswith("./"):
            assert (ROOT / mounted).exists(), mounted
    text = (INFRA / "ray-cluster.yaml").read_text()
    assert not URL_CREDENTIALS.search(text)
    assert not re.search(r"(?i)(password|token|secret)\s*[:=]\s*['\"]?[A-Za-z0-9]{12,}", text)


def test_local_stack_scripts_are_strict_bind_loopback_and_commit_no_secret():
    """infra/local runs in CI (tests/integration/test_service.py); here only what a reader of
    the files can check: strict bash, loopback defaults, no credential in the repository."""
    import subprocess

    local = INFRA / "local"
    for script in ("start.sh", "stop.sh"):
        text = (local / script).read_text()
        assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
        subprocess.run(["bash", "-n", str(local / script)], check=True)
    defaults = dict(re.findall(r': "\$\{(RNNBENCH_\w+):=([^}]*)\}"', (local / "env.sh").read_text()))
    assert {defaults[f"RNNBENCH_{s}_HOST"] for s in ("PG", "MLFLOW", "PREFECT")} == {"127.0.0.1"}
    # Ray's head on another loopback address: `ray start` rewrites 127.0.0.1 to the outbound one
    assert defaults["RNNBENCH_RAY_HOST"] == "127.0.0.2"
    assert defaults["RNNBENCH_PG_PORT"] != "5432", "never the system's default cluster"
    for path in local.iterdir():
        assigned = re.findall(r"^\s*(\w*(?:PASSWORD|SECRET|AUTH_STRING)\w*)=(\S+)", path.read_text(), re.M)
        assert all("$" in value for _, value in assigned), f"{path.name}: a literal credential in {assigned}"
