#!/usr/bin/env bash
# Local development stack: Label Studio (:8081), the BentoML service (:3000) and `airflow standalone`
# (:8080) against this repo's DAGs, params.yaml, models/ and registry/. Ctrl-C stops all three.
#
#   scripts/dev_services.sh            # start everything (foreground)
#   scripts/dev_services.sh env        # print the exports a second shell needs (bgp labelstudio, curl)
#
# Prerequisites: `make setup setup-labelstudio`, and a trained base + judges + dataset
# (`dvc repro train_judges train_base`, or `make demo`). Secrets are generated once into
# .airflow/dev-services.env (git-ignored with .airflow/); keep the file: the Label Studio token is
# fixed at the first start of its data dir (.ls-data). Details: docs/ORCHESTRATION.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
ENV_FILE=${BGP_DEV_ENV_FILE:-$ROOT/.airflow/dev-services.env}
LS_PORT=${BGP_LS_PORT:-8081}
SERVICE_PORT=${BGP_SERVICE_PORT:-3000}
AIRFLOW_PORT=${BGP_AIRFLOW_PORT:-8080}

if [[ ! -f $ENV_FILE ]]; then
  mkdir -p "$(dirname "$ENV_FILE")"
  umask 077
  {
    echo "BGP_LS_TOKEN=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(20))')"
    echo "BGP_LS_PASSWORD=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(12))')"
    echo "BGP_ADMIN_TOKEN=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(16))')"
  } > "$ENV_FILE"
  echo "dev_services: wrote new secrets to $ENV_FILE (Label Studio login admin@bg.local / BGP_LS_PASSWORD)"
fi
set -a
# shellcheck disable=SC1090
source "$ENV_FILE"
export PATH=$VENV/bin:$PATH   # airflow standalone starts its components as `airflow ...`
export HF_HUB_OFFLINE=1 GX_ANALYTICS_ENABLED=False DVC_NO_ANALYTICS=1 BENTOML_DO_NOT_TRACK=True DO_NOT_TRACK=1
export BGP_REPO=$ROOT BGP_REGISTRY=${BGP_REGISTRY:-$ROOT/registry}
export BGP_LS_URL=http://127.0.0.1:$LS_PORT BGP_SERVICE_URL=http://127.0.0.1:$SERVICE_PORT
export AIRFLOW_HOME=$ROOT/.airflow
export AIRFLOW__CORE__DAGS_FOLDER=$ROOT/dags AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$ROOT/.airflow/airflow.db
export AIRFLOW__API__PORT=$AIRFLOW_PORT AIRFLOW__API__BASE_URL=http://localhost:$AIRFLOW_PORT
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:$AIRFLOW_PORT/execution/
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True   # local only: no login
# the tasks find Label Studio and the service through these connections (or the BGP_* variables above)
export AIRFLOW_CONN_LABEL_STUDIO="{\"conn_type\": \"http\", \"host\": \"127.0.0.1\", \"port\": $LS_PORT, \"password\": \"$BGP_LS_TOKEN\"}"
export AIRFLOW_CONN_BG_SERVICE="{\"conn_type\": \"http\", \"host\": \"127.0.0.1\", \"port\": $SERVICE_PORT, \"password\": \"$BGP_ADMIN_TOKEN\"}"
export BGP_SYNC_SCHEDULE=${BGP_SYNC_SCHEDULE:-none}   # dev: sync only when triggered
set +a

if [[ ${1:-} == env ]]; then
  echo "export BGP_LS_URL=$BGP_LS_URL BGP_LS_TOKEN=$BGP_LS_TOKEN BGP_SERVICE_URL=$BGP_SERVICE_URL BGP_ADMIN_TOKEN=$BGP_ADMIN_TOKEN"
  echo "export AIRFLOW_HOME=$AIRFLOW_HOME AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=$AIRFLOW__DATABASE__SQL_ALCHEMY_CONN AIRFLOW__CORE__DAGS_FOLDER=$AIRFLOW__CORE__DAGS_FOLDER"
  exit 0
fi

die() { echo "dev_services: $*" >&2; exit 2; }
[[ -x $VENV/bin/airflow ]] || die "$VENV/bin/airflow missing: run \`make setup\`"
[[ -x $ROOT/.venv-ls/bin/label-studio ]] || die ".venv-ls missing: run \`make setup-labelstudio\`"
[[ -f $ROOT/models/base/bg_platform.json ]] || die "no trained base in models/base: run \`dvc repro train_judges train_base\` (or \`make demo\`)"
for port in "$LS_PORT" "$SERVICE_PORT" "$AIRFLOW_PORT"; do
  if (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port is in use; stop what listens there or set BGP_*_PORT"; fi
done

LOGS=$ROOT/.airflow/dev-logs
mkdir -p "$LOGS"
PIDS=()
stop_all() {
  trap - INT TERM EXIT
  echo "dev_services: stopping..."
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_all INT TERM EXIT
start() {  # name, command...: own process group, so stop_all ends its children too
  local name=$1; shift
  setsid "$@" > "$LOGS/$name.log" 2>&1 &
  PIDS+=($!)
  echo "dev_services: $name started (pid $!, log $LOGS/$name.log)"
}

"$VENV/bin/airflow" db migrate > "$LOGS/db-migrate.log" 2>&1 || die "airflow db migrate failed: see $LOGS/db-migrate.log"
start labelstudio "$VENV/bin/bgp" labelstudio serve --port "$LS_PORT"
start service env BGP_BASE_DIR="$ROOT/models/base" BGP_POLL_INTERVAL_S=10 \
  "$VENV/bin/bentoml" serve bentos.bg_service.service:BgService --host 127.0.0.1 --port "$SERVICE_PORT"
start airflow "$VENV/bin/airflow" standalone

wait_up() {  # name, url, seconds
  local deadline=$((SECONDS + $3))
  until curl -sf -o /dev/null "$2"; do
    (( SECONDS < deadline )) || { echo "dev_services: $1 not up at $2 after $3 s; see $LOGS/$1.log" >&2; return 1; }
    sleep 2
  done
  echo "dev_services: $1 up at $2"
}
wait_up labelstudio "$BGP_LS_URL/health" 300
wait_up service "$BGP_SERVICE_URL/readyz" 300
wait_up airflow "http://localhost:$AIRFLOW_PORT/api/v2/monitor/health" 300
cat <<EOF

  Label Studio  $BGP_LS_URL      login admin@bg.local / $BGP_LS_PASSWORD
  Airflow       http://localhost:$AIRFLOW_PORT   DAGs: bg_onboard_brand (Trigger -> form), bg_sync_label_studio, bg_retrain_base
  Service       $BGP_SERVICE_URL   (POST /generate, GET /brands)
  Another shell: eval "\$(scripts/dev_services.sh env)"
  Ctrl-C stops everything.
EOF
wait
