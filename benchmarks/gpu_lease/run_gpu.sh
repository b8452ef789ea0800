#!/usr/bin/env bash
# Run on the GPU machine from the repo root, after `bash .gpu/stash.sh c1` ... `cN` (all pieces
# in /tmp/parts): reassemble the wheel payload, install it into /tmp/site, run .gpu/gpu_check.py.
#   bash .gpu/run_gpu.sh [extra gpu_check.py args, e.g. --parts ort,ray,full --budget-s 300]
set -o pipefail
OUT="${OUT:-/tmp/gpu_out}"; mkdir -p "$OUT"
here="$(cd "$(dirname "$0")" && pwd)"
t0=$SECONDS

main() {
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY="${PY:-python3}"   # the GPU machine: python3 = /opt/torch/.venv/bin/python3 (3.12)

echo "== payload"
if [ -f /tmp/site/.installed ]; then
  echo "already installed in /tmp/site (warm machine)"
else
  n=$(ls /tmp/parts/payload.part-* 2>/dev/null | wc -l)
  want=$(awk '/^pieces/{print $2; exit}' /tmp/parts/MANIFEST 2>/dev/null)
  echo "pieces in /tmp/parts: $n (expected ${want:-?})"
  (cd /tmp/parts && grep ' payload.part-' MANIFEST | sha256sum -c) || { echo "MISSING OR BAD PIECES: run stash.sh for every chunk on this (warm) machine"; return 3; }
  rm -rf /tmp/whl && mkdir -p /tmp/whl
  if command -v xz >/dev/null; then unxz=(xz -dc -T0); else unxz=($PY -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer, 1<<22)'); fi
  cat /tmp/parts/payload.part-* | "${unxz[@]}" | tar -x -C /tmp/whl || { echo "reassembly failed"; return 4; }
  (cd /tmp/whl && grep '\.whl$' /tmp/parts/MANIFEST | sha256sum -c --quiet) || { echo "wheel checksum mismatch"; return 5; }
  ls -l /tmp/whl
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/whl/*.whl || { echo "pip install failed"; return 6; }
  touch /tmp/site/.installed && rm -rf /tmp/whl
  echo "installed in $((SECONDS - t0)) s"
fi
export PYTHONPATH="/tmp/site:$PWD"
if ! $PY -c 'import faiss' 2>/dev/null; then export PYTHONPATH="$PYTHONPATH:$here/shim"; echo "faiss: using .gpu/shim stand-in"; fi
# CUDA libs of the nvidia-* pip packages, for ORT's CUDA provider (torch finds its own)
nvlib=$($PY - <<'PY' 2>/dev/null
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
dirs = sorted({os.path.dirname(p) for r in roots for p in glob.glob(os.path.join(r, "**", "lib*.so*"), recursive=True)})
print(":".join(dirs))
PY
)
[ -n "$nvlib" ] && export LD_LIBRARY_PATH="$nvlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

echo "== machine"
nvidia-smi -L || true
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
$PY - <<'PY' || true
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
for name in ("ray", "onnxruntime", "pydantic", "numpy", "pandas", "pyarrow", "onnx"):
    try:
        m = __import__(name); print(f"{name} {getattr(m, '__version__', '?')} {m.__file__}")
    except Exception as e:
        print(f"{name}: {type(e).__name__}: {e}")
import onnxruntime as ort; print("ort providers", ort.get_available_providers())
PY
echo "setup took $((SECONDS - t0)) s"

echo "== gpu_check"
timeout -k 10 "${GPU_CHECK_TIMEOUT:-330}" $PY "$here/gpu_check.py" --inputs "$here/inputs" --out "$OUT" "$@"
rc=$?
echo "gpu_check rc=$rc; total $((SECONDS - t0)) s"
return $rc
}

main "$@" 2>&1 | tee -a "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
