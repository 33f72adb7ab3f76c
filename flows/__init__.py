"""rnnbench orchestration: presets, the Ray Tune sweep, MLflow tracking, Prefect flows, the CLI.

Nothing here imports Prefect at package import time: Ray trials import flows.trial and must
not start a Prefect API of their own.
"""
