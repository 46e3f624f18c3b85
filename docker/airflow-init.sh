#!/usr/bin/env bash
# One-shot init of the compose stack (service `airflow-init`): metadata DB, and the workspace volume
# (BGP_REPO) seeded from the image's copy of the repo as a git + DVC repo with the shared DVC remote.
set -euo pipefail
airflow db migrate
ws=${BGP_REPO:-/workspace}
if [[ ! -d $ws/.dvc ]]; then
  echo "bg-airflow-init: seeding $ws from /opt/bg-src"
  cp -r /opt/bg-src/bg_platform /opt/bg-src/dags /opt/bg-src/profiles /opt/bg-src/dvc.yaml /opt/bg-src/params.yaml "$ws"/
  cd "$ws"
  git init -q && git config user.email "airflow@bg-platform.local" && git config user.name "bg-platform airflow"
  printf '/runs/\n/registry/\n' > .gitignore
  python -m dvc init -q
  python -m dvc remote add -d store "${BGP_DVC_REMOTE:-/dvc-remote}"
  git add -A && git commit -qm "workspace seeded by bg-airflow-init"
fi
echo "bg-airflow-init: done (base model: $( [[ -f $ws/models/base/bg_platform.json ]] && echo present || echo 'missing: trigger bg_retrain_base' ))"
