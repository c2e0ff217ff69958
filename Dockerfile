# reviewq: one image for the webhook server (`reviewq serve`) and the workers
# (`reviewq worker`); compose.yaml picks the command.
# Pinned to one build of the official image: a tag can be moved, a digest cannot. To
# upgrade, pick a tag and take its digest from `docker buildx imagetools inspect <tag>`.
FROM python:3.11.16-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# Metadata and code in one layer: the package is small, and a separate dependency
# layer would need a second copy of pyproject.toml's dependency list.
COPY pyproject.toml README.md constraints.txt ./
COPY scheduler ./scheduler
COPY workers ./workers
RUN pip install -c constraints.txt . && rm -rf /app/scheduler /app/workers

# No root at run time: the process needs no privileges, only the network.
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin reviewq
USER reviewq

# The settings file is mounted here by compose.yaml (or set REVIEWQ_CONFIG).
ENV REVIEWQ_CONFIG=/etc/reviewq/reviewq.toml

EXPOSE 8000
CMD ["reviewq", "worker"]
