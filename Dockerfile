# The promptsearch API + dashboard image (docker-compose.yml also runs the MLflow server from it).
#   docker build -t promptsearch . && docker run -p 8000:8000 -v $PWD/runs:/workspace promptsearch
# CPU-only torch: the API process runs the search coordinator; trials go to the Ray GPU workers
# (workers/Dockerfile). Python must be the same minor version as the workers' (Ray requires it).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    RAY_USAGE_STATS_ENABLED=0 \
    PROMPTSEARCH_WORKSPACE=/workspace \
    PROMPTSEARCH_DATA_ROOT=/data

WORKDIR /app
# torch from the CPU wheel index first (the default index would pull the CUDA build, ~2 GB more)
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md ./
COPY promptsearch ./promptsearch
COPY workers ./workers
COPY jobs ./jobs
COPY deploy ./deploy
# the bundled spaces and default job are package data (promptsearch/); psycopg2 for MLflow's postgres store
RUN pip install -e . psycopg2-binary

RUN useradd --create-home --uid 1000 promptsearch && mkdir -p /workspace /data /weights /mlartifacts \
    && chown promptsearch /workspace /mlartifacts
USER promptsearch
VOLUME ["/workspace"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
CMD ["promptsearch", "serve", "--host", "0.0.0.0", "--port", "8000", "--workspace", "/workspace"]
