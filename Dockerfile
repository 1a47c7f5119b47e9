# syntax=docker/dockerfile:1
# The waitroom image: `waitroom serve`, the wait room on a lean mitmproxy master in reverse mode
# (docker/entrypoint.sh says which environment variables it reads; WAITROOM_COMMAND=mitmdump runs
# `mitmdump -s addons/waitroom.py` instead). One image for the proxy and for the demo counter
# (WAITROOM_MODE=counter).
#
#   docker build -t waitroom .
#   docker run --read-only --tmpfs /tmp -e UPSTREAM=http://shop:8080 -p 8080:8080 \
#     -v "$PWD/config/waitroom.yaml:/etc/waitroom/waitroom.yaml:ro" waitroom
ARG PYTHON_IMAGE=python:3.13-slim

# --- build: a venv with waitroom and its dependencies ---------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# The package carries its pages; it finds the example config (config/waitroom.yaml) beside src/, so the
# image keeps the repository's layout under /app and installs the package from there into the venv.
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY src/ src/
COPY addons/ addons/
COPY config/ config/
COPY docker/entrypoint.sh docker/entrypoint.sh
# Compiled here, because the runtime's root filesystem is read-only and could not cache bytecode.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --editable /app \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib /app/src /app/addons

# --- runtime: the venv and /app, a non-root user, nothing else -------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="waitroom" \
      org.opencontainers.image.description="A virtual waiting room and rate limiter: a mitmproxy addon in front of a service" \
      org.opencontainers.image.licenses="MIT"
# uid 10001, not 1337: Istio's sidecar runs as 1337 and its iptables rules let that uid's traffic
# bypass the sidecar, which would take the proxy out of the mesh (no mTLS identity to the workload).
RUN groupadd --system --gid 10001 waitroom \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin waitroom
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    WAITROOM_HOME=/app \
    WAITROOM_CONFIG=/etc/waitroom/waitroom.yaml \
    MITMPROXY_CONFDIR=/tmp/mitmproxy \
    LISTEN_PORT=8080
WORKDIR /app
USER 10001:10001
# 8080: the proxied traffic; 8081: the admin port (/healthz, /readyz, /metrics), when the config has one.
EXPOSE 8080 8081
# WORKERS=N or auto runs N proxy processes on these ports, one core each (`waitroom serve --workers`;
# auto: the cores the container may use, e.g. `docker run --cpus 2 -e WORKERS=auto`); more than one
# needs store.url on Redis. The default, 1, is one process. docker/entrypoint.sh lists the variables.
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD []
