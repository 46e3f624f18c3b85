# Label Studio 1.23.2 (its own image: its pins clash with Airflow's). Build context: the repository root.
#   docker build -f docker/labelstudio.Dockerfile -t bg-labelstudio .
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements-labelstudio.txt /tmp/requirements-labelstudio.txt
RUN pip install -r /tmp/requirements-labelstudio.txt
# First start of the data volume creates the admin (LABEL_STUDIO_USERNAME/PASSWORD/USER_TOKEN from the
# environment); legacy tokens must be enabled then, or `Token` auth is refused (notes 4.1).
ENV LABEL_STUDIO_BASE_DATA_DIR=/label-studio/data \
    LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true \
    LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/label-studio/files \
    LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true \
    LABEL_STUDIO_COLLECT_ANALYTICS=false \
    LABEL_STUDIO_LATEST_VERSION_CHECK=false
RUN useradd --create-home --uid 50002 ls && mkdir -p /label-studio/data /label-studio/files && chown -R ls /label-studio
USER ls
EXPOSE 8081
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s CMD curl -sf http://localhost:8081/health || exit 1
CMD ["label-studio", "start", "--no-browser", "--internal-host", "0.0.0.0", "--port", "8081", "--enable-legacy-api-token"]
