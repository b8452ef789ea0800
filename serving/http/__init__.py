"""The HTTP layer: request and response models (`api`), errors in one body shape (`errors`),
and the FastAPI ingress deployment that maps routes onto the model deployments (`ingress`)."""
