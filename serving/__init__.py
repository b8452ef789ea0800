"""Online serving: Ray Serve deployments over ONNX models, the Feast online store, query
reward, calibration and utility (design §5).

Torch-free by contract (ONNX Runtime only); nothing happens at import time. Entry points:
`serving.app.build_app` (the bound application), `serving.app.app_builder` (for
`serve run serving/config.yaml`), `serving.app.serve_forever` / `serving.app.demo` (for the
`pinfeed serve` and `pinfeed run` commands).
"""
