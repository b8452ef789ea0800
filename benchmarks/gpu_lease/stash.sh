#!/usr/bin/env bash
# Run on the GPU machine from the repo root, once per call: bash .gpu/stash.sh cK
# Copies the carried chunk folder .gpu/cK (its payload piece and MANIFEST) to /tmp/parts/, which
# survives between calls only while the machine stays warm; also picks up any other .gpu/c*/
# folder still present in the working tree. Says how many of the pieces /tmp/parts now holds.
set -euo pipefail
chunk="${1:?usage: stash.sh cK}"
here="$(cd "$(dirname "$0")" && pwd)"
[ -d "$here/$chunk" ] || { echo "no $here/$chunk: carry .gpu/$chunk in this call"; exit 2; }
mkdir -p /tmp/parts
for dir in "$here/$chunk" "$here"/c[0-9]*; do
  [ -d "$dir" ] && cp -f "$dir"/payload.part-* "$dir"/MANIFEST /tmp/parts/ 2>/dev/null || true
done
cd /tmp/parts
have=$(ls payload.part-* | wc -l); want=$(awk '/^pieces/{print $2}' MANIFEST)
echo "stashed $chunk: $have of $want piece(s) in /tmp/parts ($(du -sm . | cut -f1) MiB): $(ls payload.part-* | tr '\n' ' ')"
