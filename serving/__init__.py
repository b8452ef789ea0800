"""Online serving: Ray Serve deployments over ONNX models, the Feast online store, query
reward, calibration and utility (design §5). Torch-free by contract (ONNX Runtime only),
no import of `training/`, nothing done at import but skipping Feast's typechecks (below).
Layers, bottom to top:

- `config`: typed config (the app's args, the served models, deployment settings);
- `stages/`: the stages as plain classes, testable without Ray;
- `deployments/`: thin Serve shells hosting the stages;
- `http/`: request/response models, errors, the FastAPI ingress;
- `app`, `deploy`, `client`: the bound graph and its entry points (`serve run
  serving/config.yaml`, `pinfeed serve`), declarative deploys and reloads, an HTTP client.
"""

from pinfeed.feast_import import skip_feast_typechecks

skip_feast_typechecks()  # before any module here imports Feast: pinfeed/feast_import.py
