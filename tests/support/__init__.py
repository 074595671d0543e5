"""What the tests share: helpers, harnesses and fake processes, so that the test
modules hold the tests themselves.

- `actors`: reaching behind an `ActorRef` to the actor it points at.
- `network`: free and occupied loopback ports.
- `waiting`: waiting on a condition, bounded by a timeout.
- `http`: raw HTTP requests to an admin port (`/healthz`).
- `nats_requests`: one msgpack request/reply over a plain nats-py client.
- `raw_nats`: a client that speaks the NATS wire protocol itself.
- `routers`: routers running in the test's own process.
- `processes`: `ipc-router serve` and service instances as real subprocesses.
- `hostile_nats`: the oracle, harness and payloads of the hostile-input tests.
"""
