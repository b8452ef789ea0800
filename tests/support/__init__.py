"""The one place test helpers live; a test module imports helpers from here, never from
another test module (and benchmarks never import tests).

- `redis`: a real Redis server for the tests (the one on 6379 with a database of our own, or a
  process the tests start), and the prefix of this session's Feast projects;
- `homes`: isolated project homes, the tiny worlds built by `pinfeed run`'s data steps, and the
  shared serving home with quickly trained models (two runs);
- `serving`: the app deployed declaratively on a free port, and an HTTP caller;
- `events`, `tables`: hand-made event sets and feature tables;
- `ranking_data`, `utility_data`: learnable synthetic ranking data and a validation slice for the
  utility search.
"""
