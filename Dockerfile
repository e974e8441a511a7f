# syntax=docker/dockerfile:1
# alertd container image.
#
#   docker build -t alertd .
#   docker network create alertd
#   docker run -d --name redis --network alertd redis:7-alpine --appendonly yes
#   docker run --rm --network alertd -e ALERTD_REDIS_URL=redis://redis:6379/0 -p 9099:9099 alertd
#
# (The container reaches Redis by name only on a shared network; docker-compose.yml
# sets one up with mail and webhook receivers.)
#
# Operators mount their own files over /etc/alertd/alertd.toml, /etc/alertd/rules/
# and /etc/alertd/channels/; the image ships the repository's defaults there.
#
# HEALTHCHECK is part of the Docker image format only: built with podman or buildah,
# pass `--format docker` (their default, OCI, drops it).

# ---- stage 1: wheels for the project and every dependency ----------------------
FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so a code change does not
# rebuild them. Every dependency ships manylinux wheels: no compiler needed.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
 && pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.txt

COPY README.md ./
COPY alertd/ ./alertd/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- stage 2: runtime, wheels only ----------------------------------------------
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="alertd" \
      org.opencontainers.image.description="Alerting and notification daemon consuming a Redis stream" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed uid/gid so mounted config and secrets can be owned to match.
RUN groupadd --system --gid 10001 alertd \
 && useradd --system --uid 10001 --gid alertd --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin alertd

# Bind-mount the wheels instead of copying them: they never land in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index \
        --find-links=/wheels /wheels/alertd-*.whl

WORKDIR /etc/alertd
COPY alertd.toml ./
COPY rules/ ./rules/
COPY channels/ ./channels/
COPY templates/ ./templates/

# ALERTD_HTTP_LISTEN overrides http.listen: the shipped default (127.0.0.1)
# would be unreachable from outside the container.
ENV ALERTD_CONFIG=/etc/alertd/alertd.toml \
    ALERTD_HTTP_LISTEN=0.0.0.0:9099 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Numeric, so orchestrators can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
EXPOSE 9099

# No curl in slim images: probe with the standard library. The port follows
# ALERTD_HTTP_LISTEN; urlopen raises (exit 1) on a refused connection or non-2xx.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('ALERTD_HTTP_LISTEN', '0.0.0.0:9099').rsplit(':', 1)[-1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/health/live', timeout=4)"]

# SIGTERM drains within daemon.shutdown_timeout (10s by default); give
# `docker stop` a longer grace period (`--time 20`, compose stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["alertd"]
CMD ["run"]
