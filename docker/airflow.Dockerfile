# Airflow 3.3 with bg-platform installed: scheduler, dag-processor, api-server and triggerer all run
# this image (docker/compose.yaml). Build context: the repository root.
#   docker build -f docker/airflow.Dockerfile -t bg-airflow .
FROM python:3.11-slim

# git: DVC needs a git repo; curl: health checks
RUN apt-get update && apt-get install -y --no-install-recommends git curl \
    && rm -rf /var/lib/apt/lists/*

# CPU torch by default (training on a GPU worker: build with TORCH_INDEX=https://download.pytorch.org/whl/cu128)
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/bg-src
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --extra-index-url "$TORCH_INDEX" -r requirements.lock \
    # the metadata DB of a multi-process deployment is PostgreSQL (SQLite: one process at a time)
    && pip install "apache-airflow-providers-postgres" "psycopg2-binary" \
       --constraint https://raw.githubusercontent.com/apache/airflow/constraints-3.3.2/constraints-3.11.txt
COPY bg_platform ./bg_platform
COPY bentos ./bentos
COPY dags ./dags
COPY dvc.yaml params.yaml ./
COPY profiles ./profiles
RUN pip install --no-deps . && pip check

# The workspace (BGP_REPO) is a volume holding the git + DVC repo: params.yaml, dvc.yaml, models/,
# data/ (brand datasets), runs/. docker/airflow-init.sh seeds it from /opt/bg-src on first start.
ENV AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/bg-src/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    BGP_REPO=/workspace \
    HF_HUB_OFFLINE=1 GX_ANALYTICS_ENABLED=False DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1
COPY docker/airflow-init.sh /usr/local/bin/bg-airflow-init
RUN useradd --create-home --uid 50000 airflow && mkdir -p /opt/airflow /workspace \
    && chown -R airflow /opt/airflow /workspace && chmod +x /usr/local/bin/bg-airflow-init
USER airflow
WORKDIR /workspace
ENTRYPOINT ["airflow"]
CMD ["--help"]
