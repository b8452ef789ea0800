"""The one place test helpers live; a test module imports helpers from here, never from
another test module (and benchmarks never import tests).

- `redis`: a real Redis server for the tests (the one on 6379 with a database of our own, or a
  process the tests start);
- `homes`: isolated project homes, the tiny worlds built by `pinfeed run`'s data steps, and the
  shared serving home with quickly trained models;
- `events`, `tables`: hand-made event sets and feature tables;
- `ranking_data`: a learnable synthetic ranking problem.
"""
