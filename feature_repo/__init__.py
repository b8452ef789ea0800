"""The Feast feature repo (definitions, feature_store.yaml) and the offline feature pipeline
that fills its sources. `feast -c feature_repo ...` reads the definitions; `.feastignore` keeps
Feast from importing the pipeline modules."""

from pinfeed.feast_import import skip_feast_typechecks

skip_feast_typechecks()  # before any module here imports Feast: pinfeed/feast_import.py
