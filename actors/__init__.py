"""The router: actors on plain asyncio (registry, NATS and HTTP gateways) under a
supervisor, and the `ipc-router` command line. Needs `ipc-router[router]`."""
