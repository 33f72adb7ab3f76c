# Defaults of the local service stack (start.sh, stop.sh); sourced, never run. Every value can
# be set in the environment first. Credentials are not here: start.sh takes them from the
# environment or generates them once into $RNNBENCH_SERVICE_HOME/secrets.env (mode 600).

# The stack's state: PostgreSQL's cluster, MLflow's artifacts, logs, pid files, secrets.
# As root the folder must be one the postgres user can reach (/root is not), hence /var/lib.
if [ "$(id -u)" = 0 ]; then
    : "${RNNBENCH_SERVICE_HOME:=/var/lib/rnnbench-service}"
else
    : "${RNNBENCH_SERVICE_HOME:=$HOME/.rnnbench-service}"
fi
# Each server binds one address, loopback unless set otherwise (put TLS in front first).
: "${RNNBENCH_PG_HOST:=127.0.0.1}"
: "${RNNBENCH_PG_PORT:=5433}"  # not 5432: never the system's default cluster
: "${RNNBENCH_MLFLOW_HOST:=127.0.0.1}"
: "${RNNBENCH_MLFLOW_PORT:=5000}"
: "${RNNBENCH_PREFECT_HOST:=127.0.0.1}"
: "${RNNBENCH_PREFECT_PORT:=4200}"
# Ray's head node, where rnnbench's runs schedule their trials. Not 127.0.0.1: `ray start`
# silently replaces 127.0.0.1 and localhost with the machine's outbound address; 127.0.0.2 is
# still loopback. Its CPUs (and GPUs) are the ones trials may use.
: "${RNNBENCH_RAY_HOST:=127.0.0.2}"
: "${RNNBENCH_RAY_PORT:=6380}"
: "${RNNBENCH_RAY_CPUS:=$(nproc)}"
: "${RNNBENCH_RAY_GPUS:=0}"
# PostgreSQL's server programs (Debian's postgresql package), and where mlflow and prefect are
: "${RNNBENCH_PG_BIN:=/usr/lib/postgresql/15/bin}"
: "${RNNBENCH_BIN:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.venv/bin}"
# Seconds each server gets to answer its health check
: "${RNNBENCH_SERVICE_TIMEOUT:=120}"
export RNNBENCH_SERVICE_HOME
