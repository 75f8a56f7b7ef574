# paramedic's container image.
#
#   docker build -t paramedic .          # with a registry and PyPI: pulls BASE, pip installs the tree
#   scripts/build-image                  # offline: wheels built on the host, installed with --no-index
#
# BASE is any image with a Python 3.11+ `python3` that has the venv module: the default
# python:3.11-slim, or the Debian one scripts/build-base-image makes without a registry.
# Two stages: `build` makes a venv in /opt/paramedic (from the wheels in wheelhouse/ of the
# build context when there are any, else from the source tree and PyPI); the runtime stage
# gets that venv only, no wheels, no pip, no compiler, no sources.
#
# Run (see README "Running in a container"):
#   docker run -d --name paramedic --read-only --tmpfs /tmp \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v "$PWD/paramedic.yaml:/etc/paramedic/config.yaml:ro" \
#     -v paramedic-data:/var/lib/paramedic paramedic
# The config's store must be absolute, `store: {path: /var/lib/paramedic/paramedic.db}`
# (a relative one is relative to /etc/paramedic, which is read-only).

ARG BASE=python:3.11-slim

FROM ${BASE} AS build
# scripts/build-image removes this stage's image once the runtime image is built
LABEL paramedic.stage=build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
COPY . /src
# Bytecode compiled with unchecked hashes stays valid whatever mtimes the copy into the
# runtime stage gives the sources: the daemon starts without compiling anything and never
# tries to write a .pyc.
RUN python3 -m venv /opt/paramedic \
 && if ls /src/wheelhouse/paramedic-*.whl >/dev/null 2>&1; then \
        /opt/paramedic/bin/pip install -q --no-index --find-links /src/wheelhouse paramedic; \
    else \
        /opt/paramedic/bin/pip install -q /src; \
    fi \
 && /opt/paramedic/bin/pip uninstall -q -y pip setuptools \
 && find /opt/paramedic -name __pycache__ -prune -exec rm -rf {} + \
 && /opt/paramedic/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/paramedic/lib \
 && /opt/paramedic/bin/paramedic --help >/dev/null

FROM ${BASE}
LABEL org.opencontainers.image.title="paramedic" \
      org.opencontainers.image.description="Health-check and remediation agent for Docker-based service stacks" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 paramedic \
 && useradd --system --uid 10001 --gid paramedic --home-dir /var/lib/paramedic --no-create-home \
        --shell /usr/sbin/nologin paramedic \
 && mkdir -p /etc/paramedic /var/lib/paramedic \
 && chown paramedic:paramedic /var/lib/paramedic \
 && chmod 0750 /var/lib/paramedic
COPY --from=build /opt/paramedic /opt/paramedic
# PYTHONDONTWRITEBYTECODE: the root filesystem may be read-only (--read-only); everything
# paramedic writes is its store under the volume (and temporary files under /tmp).
ENV PATH=/opt/paramedic/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PARAMEDIC_CONFIG=/etc/paramedic/config.yaml \
    PARAMEDIC_HEALTHZ_URL=http://127.0.0.1:9321/healthz
USER 10001:10001
WORKDIR /var/lib/paramedic
VOLUME ["/var/lib/paramedic"]
# server.listen defaults to 127.0.0.1:9321, which the HEALTHCHECK below reaches from inside
# the container; to publish the endpoint (-p 127.0.0.1:9321:9321) the config must listen
# on 0.0.0.0:9321. On another port, set PARAMEDIC_HEALTHZ_URL to match.
EXPOSE 9321
# No curl in a slim image: the venv's python asks /healthz (200 = healthy; 503, a refused
# connection or a timeout = unhealthy).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen(os.environ['PARAMEDIC_HEALTHZ_URL'], timeout=4)"]
STOPSIGNAL SIGTERM
CMD ["paramedic", "run"]
