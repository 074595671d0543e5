"""What tests/integration/test_hostile_nats.py sends and how it judges the answers.

- `oracle`: the verdict every request must get (the router's decoders, and a model
  of the registry for valid requests), and `check_reply`.
- `harness`: `Harness` sends requests to a real router, checks each reply and checks
  that the router is unharmed; `hostile_settings` bounds the hypothesis examples.
- `payloads`: msgpack built byte for byte (exact sizes, deep nesting, raw splices).
- `strategies`: hypothesis strategies for hostile and valid payloads.
"""
