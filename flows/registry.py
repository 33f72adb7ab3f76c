"""The MLflow model registry: after a benchmark, every dataset gets a registered model
``rnnbench-<dataset>`` holding each variant's best model as a version (alias ``best-<variant>``)
and the alias ``champion`` on the one the leaderboard chose on validation
(``flows.leaderboard.winner``; the test split never chooses). Reads and writes MLflow only.
"""

from __future__ import annotations

import re

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from flows import leaderboard

PREFIX = "rnnbench-"
CHAMPION = "champion"
BENCHMARK_RUN = "rnnbench.benchmark_run"  # version tag: the benchmark run that registered it


def model_name(dataset: str) -> str:
    return f"{PREFIX}{dataset}"


def variant_alias(variant: str) -> str:
    """``best-<variant>``, in the characters an alias may hold."""
    return "best-" + re.sub(r"[^\w-]", "-", variant)


def champion_uri(dataset: str) -> str:
    return f"models:/{model_name(dataset)}@{CHAMPION}"


def _client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _logged_model_id(client: MlflowClient, run_id: str) -> str:
    """The id of the model the sweep logged on its run (``flows.serving.log_model``)."""
    from flows.serving import MODEL_NAME

    run = client.get_run(run_id)
    ids = [o.model_id for o in (run.outputs.model_outputs if run.outputs else [])]
    named = [i for i in ids if client.get_logged_model(i).name == MODEL_NAME]
    if not named:
        raise LookupError(f"sweep run {run_id} has no logged model named {MODEL_NAME!r}")
    return named[-1]


def _ensure_registered(client: MlflowClient, name: str, description: str) -> None:
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def _version_of(client: MlflowClient, name: str, run_id: str):
    """The version already registered from ``run_id`` (a resumed benchmark registers again)."""
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return found[0] if found else None


def register(tracking_uri: str, benchmark_run_id: str, boards: dict[str, pd.DataFrame]
             ) -> dict[str, dict[str, str]]:
    """Register each finished variant's model per dataset and point the aliases at them;
    returns ``{dataset: {alias: version}}``. A dataset whose board chose no winner keeps
    its previous champion."""
    client = _client(tracking_uri)
    done: dict[str, dict[str, str]] = {}
    for dataset, board in boards.items():
        chosen = leaderboard.winner(board)
        metric = board.attrs["metric"]
        rows = [row for _, row in board.iterrows()
                if not str(row["variant"]).startswith("(") and isinstance(row.get("run_id"), str)
                and not str(row.get("note") or "").startswith("failed")]
        if not rows:
            continue
        name = model_name(dataset)
        _ensure_registered(client, name, f"rnnbench models for {dataset}: alias {CHAMPION} is the "
                                         f"variant chosen on {metric}; best-<variant> each variant's best")
        aliases: dict[str, str] = {}
        for row in rows:
            run_id = row["run_id"]
            version = _version_of(client, name, run_id)
            if version is None:
                model_id = _logged_model_id(client, run_id)
                tags = {"dataset": dataset, "variant": row["variant"], BENCHMARK_RUN: benchmark_run_id,
                        metric: f"{row[metric]:.6g}" if pd.notna(row[metric]) else ""}
                version = client.create_model_version(name, f"models:/{model_id}", run_id=run_id,
                                                      tags=tags, model_id=model_id)
            aliases[variant_alias(row["variant"])] = version.version
            if chosen is not None and row["variant"] == chosen["variant"]:
                aliases[CHAMPION] = version.version
        for alias, version in aliases.items():
            client.set_registered_model_alias(name, alias, version)
        done[dataset] = aliases
    return done


def registered(tracking_uri: str) -> list[str]:
    """The rnnbench models in the registry, by name."""
    models = _client(tracking_uri).search_registered_models(f"name LIKE '{PREFIX}%'")
    return sorted(m.name for m in models)
