#!/bin/bash
# Runs once, when the PostgreSQL volume is empty: POSTGRES_DB (mlflow, the tracking store) is
# created by the image itself; MLflow's user database and Prefect's database are created here.
set -euo pipefail
for db in mlflow_auth prefect; do
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
        -c "CREATE DATABASE \"$db\" OWNER \"$POSTGRES_USER\""
done
