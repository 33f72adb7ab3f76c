#!/usr/bin/env bash
# Starts rnnbench's service stack on this machine without containers: a PostgreSQL cluster of
# its own (databases mlflow, mlflow_auth, prefect), an MLflow tracking server with basic auth
# and proxied artifacts, a Prefect server with basic auth, and a Ray head node with token
# authentication whose CPUs run the trials, each waited for on its health check. Writes $RNNBENCH_SERVICE_HOME/client.env, the settings a client needs. stop.sh stops it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/env.sh"
svc=$RNNBENCH_SERVICE_HOME
die() { echo "start.sh: $*" >&2; exit 1; }

for prog in "$RNNBENCH_PG_BIN/initdb" "$RNNBENCH_PG_BIN/pg_ctl" "$RNNBENCH_PG_BIN/pg_isready" \
            "$RNNBENCH_PG_BIN/psql" "$RNNBENCH_BIN/mlflow" "$RNNBENCH_BIN/prefect" "$RNNBENCH_BIN/ray"; do
    [ -x "$prog" ] || die "$prog not found (PostgreSQL: apt-get install postgresql, or set" \
        "RNNBENCH_PG_BIN; mlflow and prefect: make install, or set RNNBENCH_BIN)"
done
"$RNNBENCH_BIN/python" -c "import flask_wtf, psycopg2" 2>/dev/null \
    || die "MLflow's auth app and PostgreSQL driver are missing: pip install -e '.[service]'"

mkdir -p "$svc/logs" "$svc/run" "$svc/mlflow" "$svc/prefect" "$svc/ray/storage"
chmod 711 "$svc"  # traversable, so the postgres user reaches its cluster below; nothing listed

# Credentials: from the environment, else generated once and kept in secrets.env (mode 600)
secret() { head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
if [ ! -f "$svc/secrets.env" ]; then
    (umask 077; cat > "$svc/secrets.env" <<ENV
RNNBENCH_PG_PASSWORD=$(secret)
MLFLOW_TRACKING_USERNAME=admin
MLFLOW_TRACKING_PASSWORD=$(secret)
MLFLOW_FLASK_SERVER_SECRET_KEY=$(secret)
PREFECT_AUTH_STRING=admin:$(secret)
ENV
    )
fi
[ -f "$svc/ray/token" ] || (umask 077; secret > "$svc/ray/token")  # Ray's token authentication
env_before=$(export -p)
set -a; . "$svc/secrets.env"; set +a
eval "$env_before"  # what the caller set wins over the file
: "${RNNBENCH_PG_USER:=rnnbench}"

running() { [ -f "$svc/run/$1.pid" ] && kill -0 "$(cat "$svc/run/$1.pid")" 2>/dev/null; }
wait_for() {  # name, command...: poll until the command succeeds or the server has died
    local name=$1 deadline=$((SECONDS + RNNBENCH_SERVICE_TIMEOUT)); shift
    until "$@" >/dev/null 2>&1; do
        if [ "$name" != postgres ] && ! running "$name"; then
            tail -n 30 "$svc/logs/$name.log" >&2; die "$name exited; log: $svc/logs/$name.log"
        fi
        [ $SECONDS -lt $deadline ] || die "$name did not answer in ${RNNBENCH_SERVICE_TIMEOUT}s; log: $svc/logs/$name.log"
        sleep 0.3
    done
}
as_pg() {  # PostgreSQL refuses to run as root: its server programs run as the postgres user
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# --- PostgreSQL: a cluster of this stack's own, never the system's default one
pg=$svc/postgres
if [ ! -f "$pg/data/PG_VERSION" ]; then
    echo "Initialising a PostgreSQL cluster in $pg/data"
    mkdir -p "$pg/data"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$pg" && chmod 700 "$pg"
    as_pg test -w "$pg/data" || die "the postgres user cannot write $pg/data: set" \
        "RNNBENCH_SERVICE_HOME to a folder it can reach"
    pwfile=$(as_pg mktemp)
    printf '%s\n' "$RNNBENCH_PG_PASSWORD" | as_pg tee "$pwfile" >/dev/null
    as_pg "$RNNBENCH_PG_BIN/initdb" -D "$pg/data" -U "$RNNBENCH_PG_USER" --pwfile="$pwfile" \
        --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$svc/logs/initdb.log" 2>&1 \
        || { as_pg rm -f "$pwfile"; cat "$svc/logs/initdb.log" >&2; die "initdb failed"; }
    as_pg rm -f "$pwfile"
fi
if ! as_pg "$RNNBENCH_PG_BIN/pg_ctl" -D "$pg/data" status >/dev/null 2>&1; then
    as_pg "$RNNBENCH_PG_BIN/pg_ctl" -D "$pg/data" -l "$pg/postgres.log" -s \
        -o "-c listen_addresses=$RNNBENCH_PG_HOST -p $RNNBENCH_PG_PORT -c unix_socket_directories=''" start \
        || { tail -n 30 "$pg/postgres.log" >&2; die "PostgreSQL did not start; log: $pg/postgres.log"; }
fi
wait_for postgres "$RNNBENCH_PG_BIN/pg_isready" -q -h "$RNNBENCH_PG_HOST" -p "$RNNBENCH_PG_PORT"
export PGPASSWORD=$RNNBENCH_PG_PASSWORD
for db in mlflow mlflow_auth prefect; do
    if [ -z "$("$RNNBENCH_PG_BIN/psql" -h "$RNNBENCH_PG_HOST" -p "$RNNBENCH_PG_PORT" -U "$RNNBENCH_PG_USER" \
               -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
        "$RNNBENCH_PG_BIN/psql" -q -h "$RNNBENCH_PG_HOST" -p "$RNNBENCH_PG_PORT" -U "$RNNBENCH_PG_USER" \
            -d postgres -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\""
    fi
done
unset PGPASSWORD
db_url=$RNNBENCH_PG_USER:$RNNBENCH_PG_PASSWORD@$RNNBENCH_PG_HOST:$RNNBENCH_PG_PORT
echo "PostgreSQL on $RNNBENCH_PG_HOST:$RNNBENCH_PG_PORT"

launch() {  # name, command...: in a session of its own, so stop.sh ends the whole group
    running "$1" && { echo "$1 already running (pid $(cat "$svc/run/$1.pid"))"; return; }
    local name=$1; shift
    setsid "$@" >"$svc/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$svc/run/$name.pid"
}

# --- MLflow: the basic-auth app reads its user database from an ini file, written here (the
# admin user is created from MLFLOW_AUTH_ADMIN_* the first time it starts). Its job runner
# (seven worker processes for GenAI jobs, which rnnbench never submits) is off unless asked for.
mlflow_addr=$RNNBENCH_MLFLOW_HOST:$RNNBENCH_MLFLOW_PORT
(umask 077; cat > "$svc/mlflow/basic_auth.ini" <<INI
[mlflow]
default_permission = READ
database_uri = postgresql+psycopg2://$db_url/mlflow_auth
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
)
launch mlflow env MLFLOW_AUTH_CONFIG_PATH="$svc/mlflow/basic_auth.ini" \
    MLFLOW_AUTH_ADMIN_USERNAME="$MLFLOW_TRACKING_USERNAME" MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_TRACKING_PASSWORD" \
    MLFLOW_FLASK_SERVER_SECRET_KEY="$MLFLOW_FLASK_SERVER_SECRET_KEY" \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
    "$RNNBENCH_BIN/mlflow" server --app-name basic-auth \
    --backend-store-uri "postgresql+psycopg2://$db_url/mlflow" --artifacts-destination "$svc/mlflow/artifacts" \
    --host "$RNNBENCH_MLFLOW_HOST" --port "$RNNBENCH_MLFLOW_PORT" --workers 1 \
    --allowed-hosts "$mlflow_addr,localhost:$RNNBENCH_MLFLOW_PORT" \
    --cors-allowed-origins "http://$mlflow_addr"  # its UI's own calls: only loopback's usual names are implied

# --- Prefect: its API and UI on PostgreSQL (asyncpg), behind basic auth; the UI calls the API
# at PREFECT_UI_API_URL, 127.0.0.1:4200 unless told
prefect_addr=$RNNBENCH_PREFECT_HOST:$RNNBENCH_PREFECT_PORT
launch prefect env -u PREFECT_API_URL PREFECT_HOME="$svc/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://$db_url/prefect" \
    PREFECT_SERVER_API_AUTH_STRING="$PREFECT_AUTH_STRING" \
    PREFECT_UI_API_URL="${PREFECT_UI_API_URL:-http://$prefect_addr/api}" \
    "$RNNBENCH_BIN/prefect" server start --host "$RNNBENCH_PREFECT_HOST" \
    --port "$RNNBENCH_PREFECT_PORT"

# --- Ray: a head node whose CPUs run the trials (--block keeps it in the group stop.sh ends);
# Tune's state and checkpoints go to $svc/ray/storage, which every process here sees
ray_addr=$RNNBENCH_RAY_HOST:$RNNBENCH_RAY_PORT
launch ray env RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$svc/ray/token" \
    "$RNNBENCH_BIN/ray" start --head --node-ip-address "$RNNBENCH_RAY_HOST" --port "$RNNBENCH_RAY_PORT" \
    --num-cpus "$RNNBENCH_RAY_CPUS" --num-gpus "$RNNBENCH_RAY_GPUS" --include-dashboard false \
    --disable-usage-stats --temp-dir "$svc/ray/tmp" --block

wait_for mlflow curl -fsS "http://$mlflow_addr/health"
echo "MLflow on http://$mlflow_addr (user $MLFLOW_TRACKING_USERNAME)"
wait_for prefect curl -fsS "http://$prefect_addr/api/health"
echo "Prefect on http://$prefect_addr (login: PREFECT_AUTH_STRING in $svc/secrets.env)"
wait_for ray grep -q "Ray runtime started" "$svc/logs/ray.log"
echo "Ray head on $ray_addr ($RNNBENCH_RAY_CPUS CPUs, $RNNBENCH_RAY_GPUS GPUs; token in $svc/ray/token)"

(umask 077; cat > "$svc/client.env" <<ENV
MLFLOW_TRACKING_URI=http://$mlflow_addr
MLFLOW_TRACKING_USERNAME=$MLFLOW_TRACKING_USERNAME
MLFLOW_TRACKING_PASSWORD=$MLFLOW_TRACKING_PASSWORD
PREFECT_API_URL=http://$prefect_addr/api
PREFECT_API_AUTH_STRING=$PREFECT_AUTH_STRING
RAY_ADDRESS=$ray_addr
RAY_AUTH_MODE=token
RAY_AUTH_TOKEN_PATH=$svc/ray/token
RNNBENCH_STORAGE=$svc/ray/storage
ENV
)
echo "Client settings: set -a; . $svc/client.env; set +a"
