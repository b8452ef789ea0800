#!/usr/bin/env bash
# Build the carry chunks for a lent GPU machine that has torch but no ray, onnxruntime-gpu,
# pydantic or network (README.md beside this file). Run here, from the repo root:
#   bash benchmarks/gpu_lease/make_bundle.sh [chunk bytes, default 60790000]
# Writes .gpu/ (git-ignored): the scripts, .gpu/c1..cN (xz'd tar of the wheels, split, with a
# MANIFEST of sha256 sums), ready for `bash .gpu/stash.sh cK` calls.
set -euo pipefail
chunk="${1:-60790000}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo /.gpu/ >> .git/info/exclude; }
mkdir -p .gpu && cp -r "$here"/gpu_check.py "$here"/run_gpu.sh "$here"/stash.sh "$here"/shim .gpu/
wheels=(ray==2.60.0 onnxruntime-gpu==1.31.0 pydantic==2.14.4 pydantic-core==2.50.5
        annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
        jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
        rpds-py==2026.9.1 tensorboardx==2.6.5)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$work/whl" "${wheels[@]}"
mkdir -p "$work/stored" "$work/split"
python3 "$here/repack.py" "$work/stored" "$work"/whl/*.whl   # stored zips: xz sees raw bytes
tar -C "$work/stored" -cf - . | xz -T2 -6 > "$work/payload.tar.xz"
split -b "$chunk" -d "$work/payload.tar.xz" "$work/split/payload.part-"
pieces=$(ls "$work"/split/payload.part-* | wc -l)
{ echo "pieces $pieces"; echo "# sha256 of each piece";
  (cd "$work/split" && sha256sum payload.part-*);
  echo "# sha256 of each wheel"; (cd "$work/stored" && sha256sum ./*.whl | sed 's# \./# #'); } > "$work/MANIFEST"
rm -rf .gpu/c[0-9]*
for i in $(seq 1 "$pieces"); do
  mkdir -p ".gpu/c$i"
  cp "$work/MANIFEST" ".gpu/c$i/"
  mv "$work/split/payload.part-$(printf %02d $((i - 1)))" ".gpu/c$i/"
done
rm -rf "$work"
du -sh .gpu/c*
