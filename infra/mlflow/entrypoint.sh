#!/bin/sh
# Writes the basic-auth app's configuration from the environment, then runs the command.
# The auth app reads its user database only from an ini file (MLFLOW_AUTH_CONFIG_PATH); the
# admin user's name and password come from MLFLOW_AUTH_ADMIN_USERNAME/_PASSWORD, which MLflow
# reads itself and uses only the first time it starts against an empty user database.
set -eu
: "${MLFLOW_AUTH_DATABASE_URI:?set MLFLOW_AUTH_DATABASE_URI (the auth app's user database)}"
: "${MLFLOW_AUTH_CONFIG_PATH:=/tmp/mlflow/basic_auth.ini}"
export MLFLOW_AUTH_CONFIG_PATH
mkdir -p "$(dirname "$MLFLOW_AUTH_CONFIG_PATH")"
umask 077  # the file holds the database password
cat > "$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
exec "$@"
