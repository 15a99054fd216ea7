#!/bin/bash
# The device path: runs INSIDE the arm64 userland (chroot + qemu-user-static), started by
# tools/arm64_check.py; everything it needs lies in $C, results go to $C/out.
# Timings here are emulation, never device numbers: nothing below prints or records any.
# Also run on x86 with another Python (the requires-python floor): C=... V=venv SKIP_INSTALL=1
# EXPECT_MACHINE=x86_64 bash guest_check.sh
set -euo pipefail
C=${C:-/opt/edgesdk-check}
V=${V:-/opt/edgesdk-venv}
OUT=$C/out
SUFFIX=${SUFFIX:-arm64}
FRAMES=${MAX_FRAMES:-14}
mkdir -p "$OUT"
step() { echo "== $*"; }

if [[ -z ${SKIP_INSTALL:-} ]]; then
    step "venv + pip install of the device packages (offline, from the aarch64 wheelhouse)"
    [[ -x $V/bin/python ]] || python3 -m venv "$V"
    "$V/bin/pip" install -q --no-index --find-links "$C/wheels" --force-reinstall --no-deps "$C"/wheels/edgesdk-*.whl
    "$V/bin/pip" install -q --no-index --find-links "$C/wheels" "$(ls "$C"/wheels/edgesdk-*.whl)[litert]"
fi
step "machine: $("$V/bin/python" -c 'import platform; print(platform.machine())'), $("$V/bin/python" --version)"
[[ $("$V/bin/python" -c 'import platform; print(platform.machine())') == "${EXPECT_MACHINE:-aarch64}" ]] \
    || { echo "not ${EXPECT_MACHINE:-aarch64}" >&2; exit 1; }
"$V/bin/python" -c 'import edgesdk, runtimes, numpy, cv2, onnxruntime, ai_edge_litert; print("versions:", "numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__, "opencv", cv2.__version__)'
E() { "$V/bin/python" -m edgesdk "$@"; }
E --version 2>/dev/null || true

step "edgesdk detect on recorded Raspberry Pi 4 device-tree data"
E detect --root "$C/hosts/raspberry-pi-4" --json > "$OUT/detect_rpi4.json"
"$V/bin/python" -c "import json,sys; d=json.load(open('$OUT/detect_rpi4.json')); print('detect:', json.dumps(d)[:300])"
step "edgesdk detect on recorded Raspberry Pi 5 device-tree data"
E detect --root "$C/hosts/raspberry-pi-5" --json > "$OUT/detect_rpi5.json"

step "edgesdk install of the INT8 det package packed on x86 (signature + health check)"
ROOT=${ROOT:-/opt/edgesdk-root}
rm -rf "$ROOT" "$ROOT-fp32"
E install "$C/det_ort_int8.edgepkg" --root "$ROOT" --trusted-keys "$C/trusted" --profile generic-arm64 \
    2>&1 | tee "$OUT/install.log"
E status --root "$ROOT" --check-health --json > "$OUT/status.json"
echo "status: $(head -c 400 "$OUT/status.json")"

step "edgesdk install of the fp32 det package packed on x86 (its health check compares raw outputs with x86's)"
rm -rf "$ROOT-fp32"
E install "$C/det_ort_fp32.edgepkg" --root "$ROOT-fp32" --trusted-keys "$C/trusted" --profile generic-arm64 \
    2>&1 | tee "$OUT/install_fp32.log"
E status --root "$ROOT-fp32" --json > "$OUT/status_fp32.json"

step "edgesdk install of a package built for the generic-x86-64 profile (expect a clear warning)"
E install "$C/det_x86_profile.edgepkg" --root "$ROOT" --trusted-keys "$C/trusted" \
    > "$OUT/install_x86_profile.log" 2>&1 && echo "exit 0" >> "$OUT/install_x86_profile.log" \
    || echo "exit $?" >> "$OUT/install_x86_profile.log"
cat "$OUT/install_x86_profile.log"

step "decode the video with this machine's OpenCV (compared with x86's decode on the host)"
"$V/bin/python" -c "
import cv2, numpy as np
cap, frames = cv2.VideoCapture('$C/video.mp4'), []
while True:
    ok, f = cap.read()
    if not ok: break
    frames.append(f)
np.save('$OUT/frames.$SUFFIX.npy', np.stack(frames))"

for b in blazeface_litert det_ort_fp32 det_ort_int8; do
    step "edgesdk run $b on the sample video ($FRAMES frames)"
    rm -f "$OUT/$b.$SUFFIX.jsonl"
    E run "$C/bundles/$b" --source "video=$C/video.mp4" --sink "$OUT/$b.$SUFFIX.jsonl" --max-frames "$FRAMES" \
        --no-status > "$OUT/$b.run.log" 2>&1 || { cat "$OUT/$b.run.log"; exit 1; }
    echo "frames written: $(wc -l < "$OUT/$b.$SUFFIX.jsonl")"
done
step "guest done"
