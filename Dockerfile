# ipc-router: the service registration router, as a container image.
#
#   docker build -t ipc-router .
#   docker run --rm -p 8080:8080 ipc-router serve --nats-url nats://nats-host:4222
#
# See docker-compose.yaml for the router together with a NATS server.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # In a container the admin API must listen on all interfaces to be reachable.
    IPC_ROUTER_HTTP_HOST=0.0.0.0 \
    IPC_ROUTER_HTTP_PORT=8080 \
    IPC_ROUTER_LOG_FORMAT=json

WORKDIR /src
# The build context is filtered by .dockerignore (no .venv, .git, caches, tests).
COPY . .
RUN pip install . \
    && cd / \
    && rm -rf /src \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent router

WORKDIR /
USER 10001:10001

EXPOSE 8080

ENTRYPOINT ["ipc-router"]
CMD ["serve"]
