#!/usr/bin/env bash
# Stops what start.sh started: the Ray head, the Prefect and MLflow servers (each whole process
# group) and the stack's PostgreSQL cluster; waits until each is gone. The state folder is kept.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/env.sh"
svc=$RNNBENCH_SERVICE_HOME

stop_group() {  # name: TERM its process group, KILL what is left after 30 s
    local pidfile=$svc/run/$1.pid pid deadline
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -TERM -- "-$pid" 2>/dev/null; then
        deadline=$((SECONDS + 30))
        while kill -0 -- "-$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        echo "$1 stopped"
    fi
    rm -f "$pidfile"
}
stop_group ray  # `ray start --block` stops its node's processes on SIGTERM
stop_group prefect
stop_group mlflow

pg=$svc/postgres/data
if [ -f "$pg/PG_VERSION" ]; then
    as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
    if as_pg "$RNNBENCH_PG_BIN/pg_ctl" -D "$pg" status >/dev/null 2>&1; then
        as_pg "$RNNBENCH_PG_BIN/pg_ctl" -D "$pg" -s -m fast -w stop
        echo "PostgreSQL stopped"
    fi
fi
