#!/usr/bin/env bash
# Builds the offline bundle for a roadside box or an aggregator machine with no network
# (README: Deploying offline): one archive with both binaries, the ONNX Runtime library (CPU;
# and the GPU build with --gpu), the models, the shipped configs, the systemd units, the
# Debian packages a minimal Debian 12 lacks to run them (GStreamer with its decoders and the
# H.264 encoder, the CJK font, chrony) and the installer (deploy/install.sh). Every file is
# listed with its sha256 in MANIFEST.sha256; the archive gets a detached OpenPGP signature by
# the operator's key, which the installer checks before it touches anything.
#
#   scripts/bundle.sh --sign-key KEY [--gnupghome DIR] [--out DIR] [--gpu]
#                     [--profile release|dev | --bin-dir DIR] [--version V]
#
# Writes OUT/traffic-VERSION-x86_64.tar.gz and its .sig (default OUT: out/bundle). The
# Debian packages are worked out against a minimal Debian 12 (scripts/debian-root.sh makes
# one in the cache) and downloaded once into the cache; a second run needs no network.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
say() { printf 'bundle: %s\n' "$*" >&2; }
die() { printf 'bundle: error: %s\n' "$*" >&2; exit 1; }

SIGN_KEY="" OUT=$ROOT/out/bundle GPU=0 PROFILE=release VERSION="" BIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --sign-key) SIGN_KEY=$2; shift 2 ;;
    --gnupghome) export GNUPGHOME=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --gpu) GPU=1; shift ;;
    --profile) PROFILE=$2; shift 2 ;;
    # Binaries built already (the suite's own), instead of a cargo build of --profile.
    --bin-dir) BIN=$(cd "$2" && pwd); PROFILE=given; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ -n "$SIGN_KEY" ] || die "--sign-key KEY is required: the installer refuses an unsigned archive. Make a key once with 'gpg --quick-gen-key \"Traffic releases <ops@example>\" ed25519 sign never', keep it offline, and give each box its public part (gpg --export KEY > trusted-keys.gpg; README: Deploying offline)"
command -v gpg >/dev/null || die "gpg not found: apt-get install gnupg"
gpg --batch --list-secret-keys "$SIGN_KEY" >/dev/null 2>&1 \
  || die "no secret key '$SIGN_KEY' in ${GNUPGHOME:-~/.gnupg} (--gnupghome names another keyring)"
case "$PROFILE" in release|dev|given) ;; *) die "--profile $PROFILE: use release or dev" ;; esac
[ "$(uname -m)" = x86_64 ] || die "bundles are built for x86_64 on x86_64 only (README: Deploying offline, aarch64)"

# Cache: models, ONNX Runtime (and its GPU build with --gpu), the minimal Debian root.
# (--gpu: setup fetches the GPU build, then runs again so that this machine's env.sh names
# the library its own hardware wants, as before.)
[ "$GPU" = 1 ] && TRAFFIC_ORT=gpu ./scripts/setup.sh
./scripts/setup.sh
CACHE=${TRAFFIC_CACHE:-$ROOT/.cache}
# shellcheck disable=SC1091
source "$CACHE/env.sh"
BASE=$(./scripts/debian-root.sh)

if [ -z "$BIN" ]; then
  cargo build --locked -q --profile "$PROFILE" -p edge-node -p aggregator
  [ "$PROFILE" = dev ] && BIN=$ROOT/target/debug || BIN=$ROOT/target/release
fi
for b in edge-node aggregator; do [ -x "$BIN/$b" ] || die "no $BIN/$b"; done
if [ -z "$VERSION" ]; then
  VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
  commit=$(git rev-parse --short=10 HEAD 2>/dev/null || echo unknown)
  VERSION="$VERSION+g$commit"
  git diff --quiet HEAD 2>/dev/null || VERSION="$VERSION.dirty"
fi
[[ "$VERSION" =~ ^[0-9A-Za-z.+_-]+$ ]] || die "version '$VERSION': letters, digits and . + _ - only"
NAME=traffic-$VERSION-x86_64

# --- Debian packages a minimal Debian 12 lacks ----------------------------------------------
# apt works out the closure against the minimal root's package list (not this machine's) and
# downloads into the cache; the installer installs only those the box lacks or has older.
RUNTIME_PACKAGES=(
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav fonts-wqy-microhei chrony
)
DEBS=$CACHE/bundle-debs
mkdir -p "$DEBS/partial"
list=$(mktemp)
trap 'rm -f "$list"' EXIT
apt_base=(-o Dir::State::status="$BASE/var/lib/dpkg/status" -o Dir::Cache::archives="$DEBS"
  -o Debug::NoLocking=1 -o APT::Sandbox::User=root -o APT::Install-Recommends=false -q)
apt-get "${apt_base[@]}" -s install "${RUNTIME_PACKAGES[@]}" 2>/dev/null \
  | sed -n 's/^Inst \([^ ]*\) \(\[[^]]*\] \)\?(\([^ ]*\) .*/\1 \3/p' > "$list"
[ -s "$list" ] || die "apt could not work out the packages for ${RUNTIME_PACKAGES[*]} (apt-get update?)"
need_download=0
while read -r pkg ver; do
  f=$(ls "$DEBS/${pkg}_${ver//:/%3a}_"*.deb 2>/dev/null | head -1 || true)
  [ -n "$f" ] || need_download=1
done < "$list"
if [ "$need_download" = 1 ]; then
  say "downloading $(wc -l < "$list") Debian packages into $DEBS (once)"
  apt-get "${apt_base[@]}" -y --download-only install "${RUNTIME_PACKAGES[@]}" >/dev/null \
    || die "could not download the Debian packages (apt-get update, or the mirror in sources.list)"
fi

# --- the tree ----------------------------------------------------------------------------------
STAGE=$(mktemp -d)
trap 'rm -f "$list"; rm -rf "$STAGE"' EXIT
T=$STAGE/$NAME
mkdir -p "$T"/{bin,share/onnxruntime,share/models,share/configs,systemd,debs}
install -m 0755 "$BIN/edge-node" "$BIN/aggregator" "$T/bin/"
ORT_CPU=$CACHE/onnxruntime/libonnxruntime.so.1.32.0
install -m 0644 "$ORT_CPU" "$T/share/onnxruntime/"
ln -s "$(basename "$ORT_CPU")" "$T/share/onnxruntime/libonnxruntime.so"
if [ "$GPU" = 1 ]; then
  mkdir -p "$T/share/onnxruntime-gpu"
  install -m 0644 "$CACHE"/onnxruntime-gpu/*.so* "$T/share/onnxruntime-gpu/"
  ln -s libonnxruntime.so.1.31.1 "$T/share/onnxruntime-gpu/libonnxruntime.so"
fi
# The models the manifests in models/ name, each checked against its manifest's sha256.
for toml in models/*.toml; do
  file=$(sed -n 's/^file = "\(.*\)"$/\1/p' "$toml")
  sha=$(sed -n 's/^sha256 = "\([0-9a-f]*\)"$/\1/p' "$toml")
  [ -n "$file" ] && [ -n "$sha" ] || continue
  src=$CACHE/models/$file
  [ "$(sha256sum "$src" | cut -d' ' -f1)" = "$sha" ] || die "$src does not have the sha256 of $toml"
  install -m 0644 "$src" "$T/share/models/"
  install -m 0644 "$toml" "$T/share/models/"
done
install -m 0644 configs/*.toml "$T/share/configs/"
install -m 0644 README.md "$T/share/README.md"
install -m 0644 deploy/systemd/* "$T/systemd/"
install -m 0755 deploy/install.sh "$T/install.sh"
while read -r pkg ver; do
  cp "$(ls "$DEBS/${pkg}_${ver//:/%3a}_"*.deb | head -1)" "$T/debs/"
done < "$list"
# An index that makes debs/ a flat apt repository: the installer lets apt order the
# installation (dpkg -i of them all at once cannot honour Pre-Depends among them).
(cd "$T/debs" && for f in *.deb; do
  dpkg-deb -f "$f"
  printf 'Filename: ./%s\nSize: %s\nSHA256: %s\n\n' "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)"
done > Packages)
cat > "$T/VERSION" <<V
version=$VERSION
target=x86_64-linux-gnu debian-12
profile=$PROFILE
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
gpu=$GPU
V
(cd "$T" && find . -type f ! -name MANIFEST.sha256 -printf '%P\n' | LC_ALL=C sort \
  | xargs -d '\n' sha256sum > MANIFEST.sha256)

mkdir -p "$OUT"
ARCHIVE=$OUT/$NAME.tar.gz
tar -C "$STAGE" --owner=0 --group=0 --numeric-owner -czf "$ARCHIVE.part" "$NAME"
mv "$ARCHIVE.part" "$ARCHIVE"
rm -f "$ARCHIVE.sig"
gpg --batch --yes --local-user "$SIGN_KEY" --detach-sign --output "$ARCHIVE.sig" "$ARCHIVE"
say "wrote $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1), $(wc -l < "$T/MANIFEST.sha256") files, $(ls "$T/debs" | wc -l) Debian packages) and $ARCHIVE.sig"
echo "$ARCHIVE"
