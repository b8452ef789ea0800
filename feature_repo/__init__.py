"""The Feast feature repo (definitions, feature_store.yaml) and the offline feature pipeline
that fills its sources. `feast -c feature_repo ...` reads the definitions; `.feastignore` keeps
Feast from importing the pipeline modules."""
