# The BentoML service for docker/compose.yaml (development image: the base is read from the shared
# workspace volume, BGP_BASE_DIR). For production build a Bento instead, which packs the base:
#   bgp serve-import-base && bentoml build -f bentos/bg_service/bentofile.yaml . && bentoml containerize bg-service:latest
# Build context: the repository root.   docker build -f docker/service.Dockerfile -t bg-service-dev .
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/bg-src
COPY bentos/bg_service/requirements.txt ./bentos/bg_service/requirements.txt
RUN pip install --extra-index-url "$TORCH_INDEX" -r bentos/bg_service/requirements.txt "bentoml==1.4.40"
COPY bg_platform ./bg_platform
COPY bentos ./bentos
ENV HF_HUB_OFFLINE=1 BENTOML_DO_NOT_TRACK=True PYTHONPATH=/opt/bg-src \
    BGP_BASE_DIR=/workspace/models/base BGP_REGISTRY=/registry BGP_WORK_DIR=/tmp/bg-adapters
RUN useradd --create-home --uid 50001 bento
USER bento
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s CMD curl -sf http://localhost:3000/readyz || exit 1
CMD ["bentoml", "serve", "bentos.bg_service.service:BgService", "--host", "0.0.0.0", "--port", "3000"]
