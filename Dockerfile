# syntax=docker/dockerfile:1
#
# One image for every role, chosen by the command (the entrypoint is `trm-broker`):
#   broker   docker run IMAGE                  trm-broker serve       port 8400 (TRM_PORT)
#   worker   docker run IMAGE worker           trm-broker worker      port 8401 (TRM_WORKER_PORT)
#   node     docker run IMAGE node serve       trm-broker node serve  port 8500 (TRM_NODE_PORT)
#   schema   docker run IMAGE db upgrade       one-shot, before brokers and workers start
# deploy/compose.yaml, deploy/kubernetes/ and tests/deploy/ use and check it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: build the wheel (which carries migrations/) and install it into a venv -----
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY trm_broker ./trm_broker
COPY migrations ./migrations
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv /opt/trm-broker \
 && /opt/trm-broker/bin/pip install /dist/*.whl \
 && /opt/trm-broker/bin/pip uninstall --yes pip

# --- runtime: the venv alone, run by an unprivileged user -----------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/trm-broker/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRM_HOST=0.0.0.0 \
    TRM_NODE_HOST=0.0.0.0
# Listening beyond loopback, `serve` and `node serve` refuse to start until TRM_PUBLIC_URL
# (or TRM_NODE_PUBLIC_URL) names the URL callers sign: the deployment must set it.
RUN groupadd --system --gid 10001 trm \
 && useradd --system --uid 10001 --gid trm --home-dir /var/lib/trm-broker \
        --shell /usr/sbin/nologin trm \
 && install --directory --owner trm --group trm --mode 0750 /var/lib/trm-broker
COPY --from=builder /opt/trm-broker /opt/trm-broker
# Relative defaults (./var/trm-broker.db, ./var/broker-key.json) land in the state folder.
WORKDIR /var/lib/trm-broker
USER 10001:10001
EXPOSE 8400 8401 8500
# Alive if the role's /healthz answers 200: the broker's, the worker's or the node's port,
# whichever this container runs (only one of them listens).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD \
    for port in "${TRM_PORT:-8400}" "${TRM_WORKER_PORT:-8401}" "${TRM_NODE_PORT:-8500}"; do \
        python -c "import sys, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/healthz', timeout=3)" "$port" 2>/dev/null && exit 0; \
    done; \
    exit 1
ENTRYPOINT ["trm-broker"]
CMD ["serve"]
