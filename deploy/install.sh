#!/usr/bin/env bash
# Installs, upgrades or rolls back the traffic analytics services from an offline bundle
# (scripts/bundle.sh; README: Deploying offline). Needs no network.
#
#   install.sh [--keyring FILE] [--ort cpu|gpu] [--no-backup] [--no-start] BUNDLE.tar.gz
#   install.sh --rollback [--no-start]
#   install.sh --status
#
# Install and upgrade: checks the archive's detached signature (BUNDLE.tar.gz.sig) against
# the operator's keys (--keyring, else /etc/traffic/trusted-keys.gpg) and refuses a bad or
# missing one before anything is touched; unpacks it into /opt/traffic/releases/VERSION and
# checks every file against MANIFEST.sha256; installs the Debian packages in debs/ that the
# box lacks or has older; makes the service user, /etc/traffic and the state folders
# (/var/lib/traffic/{edge,aggregator}); on an upgrade stops the services and copies their
# state to /var/lib/traffic/backups/ first; then points /opt/traffic/current at the new
# release in one step and starts the services whose config is in /etc/traffic.
# State (outbox, registry, certificates, databases, configs) lives outside the releases and
# is kept across upgrades and rollbacks.
#
# Rollback: back to the release installed before, keeping the state when that release can
# read it; if it refuses it (a newer schema: an upgrade migrated it), the state is moved
# aside (never deleted) and the copy taken before the upgrade restored.
set -euo pipefail
PREFIX=/opt/traffic
STATE=/var/lib/traffic
ETC=/etc/traffic
UNITS=/etc/systemd/system
SERVICES=(traffic-aggregator traffic-edge)

say() { printf 'install: %s\n' "$*" >&2; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

MODE=install KEYRING="" ORT=cpu BACKUP=1 START=1 BUNDLE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --keyring) KEYRING=$2; shift 2 ;;
    --ort) ORT=$2; shift 2 ;;
    --no-backup) BACKUP=0; shift ;;
    --no-start) START=0; shift ;;
    --rollback) MODE=rollback; shift ;;
    --status) MODE=status; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [ -z "$BUNDLE" ] || die "one bundle at a time ('$BUNDLE' and '$1')"; BUNDLE=$1; shift ;;
  esac
done
[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages, a user and services)"
case "$ORT" in cpu|gpu) ;; *) die "--ort $ORT: use cpu or gpu" ;; esac

systemd_up() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }
release_of() { basename "$(readlink -f "$1")"; }

stop_services() {
  systemd_up || return 0
  for s in "${SERVICES[@]}"; do
    systemctl is-active --quiet "$s" && { say "stopping $s"; systemctl stop "$s"; }
  done
  return 0
}

start_services() {
  [ "$START" = 1 ] || { say "not starting the services (--no-start)"; return 0; }
  if ! systemd_up; then
    say "systemd is not running here: start the services by hand, as user traffic, with the ExecStart lines of $UNITS/traffic-*.service"
    return 0
  fi
  systemctl daemon-reload
  local started=0
  [ -f "$ETC/aggregator.toml" ] && { systemctl enable --quiet traffic-aggregator; systemctl restart traffic-aggregator; started=1; say "started traffic-aggregator"; }
  [ -f "$ETC/edge.toml" ] && { systemctl enable --quiet traffic-edge; systemctl restart traffic-edge; started=1; say "started traffic-edge"; }
  [ "$started" = 1 ] || say "no $ETC/edge.toml or $ETC/aggregator.toml yet: copy one from $PREFIX/share/configs/, edit it, then: systemctl enable --now traffic-edge (or traffic-aggregator)"
}

# As the service user: the checks of a release's binaries against the state and configs.
as_traffic() { setpriv --reuid=traffic --regid=traffic --init-groups -- "$@"; }
state_refused_by() {
  local rel=$1 out=""
  if [ -f "$ETC/edge.toml" ]; then
    out+=$(cd "$STATE/edge" && as_traffic "$rel/bin/edge-node" --config "$ETC/edge.toml" --check 2>&1) || true
  fi
  if [ -f "$ETC/aggregator.toml" ]; then
    out+=$(cd "$STATE/aggregator" && as_traffic "$rel/bin/aggregator" check --config "$ETC/aggregator.toml" --state 2>&1) || true
  fi
  grep -i "newer than this" <<< "$out" || return 1
}

if [ "$MODE" = status ]; then
  [ -e "$PREFIX/current" ] || { echo "not installed"; exit 0; }
  echo "current:  $(release_of "$PREFIX/current")"
  [ -e "$PREFIX/previous" ] && echo "previous: $(release_of "$PREFIX/previous")"
  echo "releases: $(ls "$PREFIX/releases" | tr '\n' ' ')"
  echo "backups:  $(ls "$STATE/backups" 2>/dev/null | tr '\n' ' ')"
  exit 0
fi

if [ "$MODE" = rollback ]; then
  [ -e "$PREFIX/previous" ] || die "no earlier release recorded in $PREFIX/previous: nothing to roll back to"
  from=$(readlink -f "$PREFIX/current"); to=$(readlink -f "$PREFIX/previous")
  [ -x "$to/bin/edge-node" ] || die "the earlier release $to is incomplete; install its bundle again instead"
  stop_services
  ln -sfn "$to" "$PREFIX/current.new" && mv -T "$PREFIX/current.new" "$PREFIX/current"
  ln -sfn "$from" "$PREFIX/previous.new" && mv -T "$PREFIX/previous.new" "$PREFIX/previous"
  say "rolled back: $(basename "$from") -> $(basename "$to")"
  if why=$(state_refused_by "$to"); then
    backup=$(ls -d "$STATE/backups/$(basename "$to")-to-$(basename "$from")-"* 2>/dev/null | tail -1 || true)
    [ -n "$backup" ] || die "$(basename "$to") refuses the state ($why) and there is no backup from the upgrade to restore: install $(basename "$from") again (install.sh --rollback), or restore your own backup"
    aside=$STATE/backups/set-aside-$(basename "$from")-$(date -u +%Y%m%dT%H%M%SZ)
    mkdir -p "$aside"
    for d in edge aggregator; do [ -e "$STATE/$d" ] && mv "$STATE/$d" "$aside/"; done
    cp -a "$backup"/. "$STATE/"
    say "$(basename "$to") refuses the state the newer release left ($why): restored the copy taken before the upgrade ($backup); the newer state is kept in $aside"
  else
    say "state kept: $(basename "$to") reads it"
  fi
  start_services
  exit 0
fi

# --- install or upgrade ----------------------------------------------------------------------
[ -n "$BUNDLE" ] || die "name the bundle: install.sh traffic-VERSION-x86_64.tar.gz (see --help)"
[ -f "$BUNDLE" ] || die "no bundle '$BUNDLE'"
BUNDLE=$(readlink -f "$BUNDLE")
SIG=$BUNDLE.sig
[ -f "$SIG" ] || die "no signature '$SIG' beside the bundle: a bundle is installed only with its signature"
if [ -z "$KEYRING" ]; then
  KEYRING=$ETC/trusted-keys.gpg
  [ -f "$KEYRING" ] || die "no operator keys: give --keyring FILE (the public key that signs your bundles: gpg --export KEY > FILE) on the first install; it is kept as $KEYRING"
fi
[ -f "$KEYRING" ] || die "no keyring '$KEYRING'"
KEYRING=$(readlink -f "$KEYRING")
command -v gpgv >/dev/null || die "gpgv not found (Debian's apt depends on it; apt-get install gpgv)"
if ! gpgv_out=$(gpgv --keyring "$KEYRING" "$SIG" "$BUNDLE" 2>&1); then
  printf '%s\n' "$gpgv_out" >&2
  die "signature check failed for '$BUNDLE' against $KEYRING: the archive is not the one the key signed (damaged or tampered) or was signed by another key; nothing installed"
fi
say "signature good: $(grep -o 'Good signature from.*' <<< "$gpgv_out" | head -1)"

NAME=$(basename "$BUNDLE" .tar.gz)
[[ "$NAME" =~ ^traffic-([0-9A-Za-z.+_-]+)-x86_64$ ]] || die "'$BUNDLE' is not named traffic-VERSION-x86_64.tar.gz"
VERSION=${BASH_REMATCH[1]}
[ "$(uname -m)" = x86_64 ] || die "this bundle is for x86_64, the machine is $(uname -m)"
REL=$PREFIX/releases/$VERSION
if [ -e "$PREFIX/current" ] && [ "$(readlink -f "$PREFIX/current")" = "$REL" ]; then
  say "$VERSION is already the installed release; checking its files"
  (cd "$REL" && sha256sum -c --quiet MANIFEST.sha256) || die "files of $REL differ from its manifest: remove $REL, then install the bundle again"
  start_services
  exit 0
fi

mkdir -p "$PREFIX/releases"
TMP=$PREFIX/releases/.unpack-$$
rm -rf "$TMP"; mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
tar -xzf "$BUNDLE" -C "$TMP" --no-same-owner || die "could not unpack '$BUNDLE'"
[ -d "$TMP/$NAME" ] || die "'$BUNDLE' does not hold the folder $NAME"
(cd "$TMP/$NAME" && sha256sum -c --quiet --strict MANIFEST.sha256) \
  || die "files in '$BUNDLE' differ from its MANIFEST.sha256; nothing installed"
listed=$(wc -l < "$TMP/$NAME/MANIFEST.sha256")
present=$(cd "$TMP/$NAME" && find . -type f ! -name MANIFEST.sha256 | wc -l)
[ "$listed" = "$present" ] || die "'$BUNDLE' holds $present files but its manifest lists $listed; nothing installed"
say "all $listed files match MANIFEST.sha256"

# Debian packages the box lacks or has older, installed by apt from the bundle's debs/ as
# its only source (a flat repository whose index, debs/Packages, is in the signed archive):
# apt orders them (Pre-Depends included) and never reaches for the network.
want=()
for deb in "$TMP/$NAME"/debs/*.deb; do
  [ -e "$deb" ] || continue
  pkg=$(dpkg-deb -f "$deb" Package); ver=$(dpkg-deb -f "$deb" Version); arch=$(dpkg-deb -f "$deb" Architecture)
  [ "$arch" = all ] && q=$pkg || q=$pkg:$arch
  have=$(dpkg-query -W -f='${Status} ${Version}' "$q" 2>/dev/null || true)
  if [[ "$have" == "install ok installed "* ]] && dpkg --compare-versions "${have##* }" ge "$ver"; then
    continue
  fi
  want+=("$q")
done
if [ ${#want[@]} -gt 0 ]; then
  say "installing ${#want[@]} Debian packages from the bundle"
  A=$TMP/apt
  mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/parts"
  echo "deb [trusted=yes] file:$TMP/$NAME/debs ./" > "$A/sources.list"
  apt_local=(-o Dir::Etc::SourceList="$A/sources.list" -o Dir::Etc::SourceParts="$A/parts"
    -o Dir::State::Lists="$A/lists" -o Dir::Cache="$A/cache" -o APT::Sandbox::User=root -q)
  { apt-get "${apt_local[@]}" update \
      && DEBIAN_FRONTEND=noninteractive apt-get "${apt_local[@]}" install -y --no-install-recommends \
        -o Dpkg::Options::=--force-confold "${want[@]}"; } > "$TMP/apt.log" 2>&1 \
    || { cp "$TMP/apt.log" "$PREFIX/install-apt.log"
         grep -E '^(E:|dpkg: error)' "$PREFIX/install-apt.log" | head -20 >&2; tail -5 "$PREFIX/install-apt.log" >&2
         die "the bundle's Debian packages could not be installed (above; log kept in $PREFIX/install-apt.log); nothing else changed"; }
fi

# The service user, its folders and the operator's keys.
if command -v systemd-sysusers >/dev/null; then
  systemd-sysusers "$TMP/$NAME/systemd/traffic.sysusers.conf"
elif ! getent passwd traffic >/dev/null; then
  useradd --system --user-group --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin \
    --comment "Checkpoint and crossing analytics" traffic
fi
for g in video render; do getent group "$g" >/dev/null && usermod -a -G "$g" traffic; done
install -d -m 0750 -o root -g traffic "$ETC"
install -d -m 0755 "$STATE"
install -d -m 0750 -o traffic -g traffic "$STATE/edge" "$STATE/aggregator"
install -d -m 0700 "$STATE/backups"
[ -f "$ETC/trusted-keys.gpg" ] || install -m 0644 "$KEYRING" "$ETC/trusted-keys.gpg"

# An upgrade: services stopped, their state copied before the new release touches it.
OLD=""
if [ -e "$PREFIX/current" ]; then
  OLD=$(readlink -f "$PREFIX/current")
  stop_services
  if [ "$BACKUP" = 1 ]; then
    b=$STATE/backups/$(basename "$OLD")-to-$VERSION-$(date -u +%Y%m%dT%H%M%SZ)
    mkdir -p "$b"
    cp -a "$STATE/edge" "$STATE/aggregator" "$b/"
    say "state copied to $b ($(du -sh "$b" | cut -f1))"
  fi
fi

rm -rf "$REL"
mv "$TMP/$NAME" "$REL"
ln -sfn "$REL" "$PREFIX/current.new" && mv -T "$PREFIX/current.new" "$PREFIX/current"
if [ -n "$OLD" ] && [ "$OLD" != "$REL" ]; then
  ln -sfn "$OLD" "$PREFIX/previous.new" && mv -T "$PREFIX/previous.new" "$PREFIX/previous"
fi
for d in bin share; do
  [ -L "$PREFIX/$d" ] || { [ ! -e "$PREFIX/$d" ] || die "$PREFIX/$d is not a link into the releases: move it aside"; ln -s "current/$d" "$PREFIX/$d"; }
done

# Units and, for --ort gpu, a drop-in that points the edge node at the GPU build.
mkdir -p "$UNITS" /usr/lib/sysusers.d
install -m 0644 "$REL"/systemd/*.service "$UNITS/"
install -m 0644 "$REL/systemd/traffic.sysusers.conf" /usr/lib/sysusers.d/traffic.conf
dropin=$UNITS/traffic-edge.service.d/onnxruntime.conf
if [ "$ORT" = gpu ]; then
  [ -e "$REL/share/onnxruntime-gpu/libonnxruntime.so" ] || die "this bundle has no GPU build of ONNX Runtime (scripts/bundle.sh --gpu makes one)"
  mkdir -p "$(dirname "$dropin")"
  printf '[Service]\nEnvironment=ORT_DYLIB_PATH=%s\n' "$PREFIX/share/onnxruntime-gpu/libonnxruntime.so" > "$dropin"
else
  rm -f "$dropin"
fi

# Keep the current, the previous and one more release.
keep=("$(basename "$REL")")
[ -e "$PREFIX/previous" ] && keep+=("$(release_of "$PREFIX/previous")")
n=0
for r in $(ls -t "$PREFIX/releases"); do
  printf '%s\n' "${keep[@]}" | grep -qxF "$r" && continue
  n=$((n + 1)); [ $n -le 1 ] && continue
  rm -rf "${PREFIX:?}/releases/$r"; say "removed the old release $r"
done

if [ -n "$OLD" ] && [ "$OLD" != "$REL" ]; then
  say "upgraded: $(basename "$OLD") -> $VERSION (install.sh --rollback goes back)"
else
  say "installed $VERSION in $REL"
fi
start_services
