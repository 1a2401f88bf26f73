#!/usr/bin/env bash
# The offline install, tried as a deployer would on a bare box (run by
# edge-node/tests/offline_install.rs; needs root):
#   deploy/tests/offline-install.sh BIN_DIR EDGE_TOML AGGREGATOR_TOML VIDEO
# Builds two signed bundles of the binaries in BIN_DIR (versions 0.0.1-test1 and
# 0.0.2-test2), copies the cached minimal Debian 12 root (scripts/debian-root.sh), and in it,
# with no network but loopback (its own network namespace), checks that a tampered archive
# and one signed by another key are refused, installs the first bundle, starts both services
# from their installed systemd units as the service user, plays VIDEO through the edge node
# and sees its events stored by the aggregator; then upgrades to the second bundle (state
# kept, a backup taken), runs again (the first events still there, the new ones added), and
# rolls back (state kept). Prints what it checked; exits non-zero on the first failure.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN_DIR=$1 EDGE_TOML=$2 AGG_TOML=$3 VIDEO=$4
say() { printf 'offline-install: %s\n' "$*" >&2; }
die() { printf 'offline-install: FAILED: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (a chroot in its own mount and network namespace)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/traffic-offline.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# The operator's release key, and another one that must not be trusted.
export GNUPGHOME=$WORK/gnupg
mkdir -m 0700 "$GNUPGHOME"
gpg --batch -q --passphrase '' --quick-gen-key 'Traffic test releases <releases@test.invalid>' ed25519 sign never 2>/dev/null
gpg --batch -q --passphrase '' --quick-gen-key 'Someone else <other@test.invalid>' ed25519 sign never 2>/dev/null
KEY=$(gpg --batch --with-colons --list-secret-keys 'releases@test.invalid' | awk -F: '/^fpr/{print $10; exit}')
OTHER=$(gpg --batch --with-colons --list-secret-keys 'other@test.invalid' | awk -F: '/^fpr/{print $10; exit}')
gpg --batch --export "$KEY" > "$WORK/trusted-keys.gpg"

for v in 0.0.1-test1 0.0.2-test2; do
  "$ROOT/scripts/bundle.sh" --sign-key "$KEY" --bin-dir "$BIN_DIR" --version "$v" --out "$WORK/bundles" >/dev/null
done
B1=traffic-0.0.1-test1-x86_64.tar.gz B2=traffic-0.0.2-test2-x86_64.tar.gz
say "bundles: $(cd "$WORK/bundles" && du -h ./*.tar.gz | tr '\n' ' ')"

BASE=$("$ROOT/scripts/debian-root.sh")
R=$WORK/root
cp -a "$BASE" "$R"
S=$R/srv/test
mkdir -p "$S"/{bundles,tampered,other-key,media,configs}
cp "$WORK"/bundles/* "$S/bundles/"
cp "$WORK/trusted-keys.gpg" "$S/"
# One byte in the middle of the archive flipped (every bit), the good signature beside it.
cp "$WORK/bundles/$B1" "$WORK/bundles/$B1.sig" "$S/tampered/"
at=$(( $(stat -c %s "$S/tampered/$B1") / 2 ))
byte=$(od -An -tu1 -j "$at" -N1 "$S/tampered/$B1" | tr -d ' ')
printf "\\x$(printf %02x $((byte ^ 255)))" | dd of="$S/tampered/$B1" bs=1 seek="$at" conv=notrunc status=none
cmp -s "$S/tampered/$B1" "$WORK/bundles/$B1" && die "the tampered copy is the same as the bundle"
# The right archive signed by a key the box does not trust.
cp "$WORK/bundles/$B1" "$S/other-key/"
gpg --batch -q --local-user "$OTHER" --detach-sign --output "$S/other-key/$B1.sig" "$S/other-key/$B1"
cp "$VIDEO" "$S/media/"
cp "$EDGE_TOML" "$S/configs/edge.toml"
cp "$AGG_TOML" "$S/configs/aggregator.toml"

cat > "$S/scenario.sh" <<'SCENARIO'
set -euo pipefail
cd /srv/test
say() { printf 'offline-install (in the root): %s\n' "$*" >&2; }
die() { printf 'offline-install: FAILED (in the root): %s\n' "$*" >&2; exit 1; }
B1=traffic-0.0.1-test1-x86_64.tar.gz B2=traffic-0.0.2-test2-x86_64.tar.gz
! getent hosts deb.debian.org >/dev/null 2>&1 || die "the network is reachable from the root"
! command -v gst-launch-1.0 >/dev/null && ! [ -e /usr/lib/x86_64-linux-gnu/libgstreamer-1.0.so.0 ] \
  || die "the root already has GStreamer: not a bare Debian"

# The first install as README: Deploying offline tells it: check the signature by hand,
# take the installer out of the checked archive.
gpgv --keyring /srv/test/trusted-keys.gpg bundles/$B1.sig bundles/$B1 2>/dev/null || die "gpgv refused the good bundle"
tar -xzf bundles/$B1 -O traffic-0.0.1-test1-x86_64/install.sh > install.sh

for bad in tampered other-key; do
  if out=$(bash install.sh --keyring /srv/test/trusted-keys.gpg $bad/$B1 2>&1); then
    die "the $bad archive was installed: $out"
  fi
  grep -q "signature check failed" <<< "$out" || die "the $bad archive was refused without the signature message: $out"
  [ ! -e /opt/traffic ] || die "the $bad archive left /opt/traffic behind"
  say "refused the $bad archive: $(tail -1 <<< "$out")"
done

bash install.sh --keyring /srv/test/trusted-keys.gpg bundles/$B1 2> install1.log || { cat install1.log >&2; die "install of $B1"; }
grep -q "all .* files match MANIFEST.sha256" install1.log || die "no manifest check in: $(cat install1.log)"
[ "$(basename "$(readlink -f /opt/traffic/current)")" = 0.0.1-test1 ] || die "current is not 0.0.1-test1"
dpkg-query -W -f='${Status}\n' gstreamer1.0-libav gstreamer1.0-plugins-ugly fonts-wqy-microhei chrony | grep -vq "install ok installed" \
  && die "a Debian package of the bundle is not installed"
getent passwd traffic >/dev/null || die "no user traffic"
say "installed: $(tail -2 install1.log | head -1)"
cp configs/edge.toml configs/aggregator.toml /etc/traffic/
chgrp traffic /etc/traffic/*.toml && chmod 0640 /etc/traffic/*.toml

# A service as systemd starts it: the unit's user (and HOME, USER as systemd sets them),
# environment, folder, ExecStartPre, ExecStart.
unit_value() { sed -n "s/^$2=//p" "/etc/systemd/system/$1.service"; }
start_unit() {
  local unit=$1 log=$2 envs=(HOME=/var/lib/traffic USER=traffic LOGNAME=traffic) e
  while read -r e; do [ -n "$e" ] && envs+=("$e"); done < <(unit_value "$unit" Environment)
  local wd; wd=$(unit_value "$unit" WorkingDirectory)
  local pre; pre=$(unit_value "$unit" ExecStartPre)
  local start; start=$(unit_value "$unit" ExecStart)
  (cd "$wd" && setpriv --reuid=traffic --regid=traffic --init-groups env "${envs[@]}" $pre) >> "$log" 2>&1 \
    || { cat "$log" >&2; die "ExecStartPre of $unit failed"; }
  cd "$wd"
  setpriv --reuid=traffic --regid=traffic --init-groups env "${envs[@]}" $start >> "$log" 2>&1 &
  cd /srv/test
}
AGG=127.0.0.1:18080
# Events and evidence images in the aggregator's database.
stat_of() { /opt/traffic/bin/aggregator get $AGG /api/v1/stats | grep -o "\"$1\": *[0-9]*" | grep -o '[0-9]*$'; }
stored() { stat_of events_total; }
run_round() {
  local round=$1
  start_unit traffic-aggregator agg-$round.log
  local agg=$!
  for _ in $(seq 1 100); do /opt/traffic/bin/aggregator get $AGG /health >/dev/null 2>&1 && break; sleep 0.2; done
  /opt/traffic/bin/aggregator get $AGG /health >/dev/null || { cat agg-$round.log >&2; die "the aggregator did not answer"; }
  start_unit traffic-edge edge-$round.log
  local edge=$!
  wait $edge || { tail -30 edge-$round.log >&2; die "the edge node exited with $?"; }
  local published pictures
  published=$(grep -o '"events_published": *[0-9]*' /var/lib/traffic/edge/last-summary.json | head -1 | grep -o '[0-9]*$')
  pictures=$(grep -o '"evidence_published": *[0-9]*' /var/lib/traffic/edge/last-summary.json | head -1 | grep -o '[0-9]*$')
  [ "${published:-0}" -gt 0 ] || die "the edge node published nothing: $(cat /var/lib/traffic/edge/last-summary.json)"
  for _ in $(seq 1 150); do
    [ "$(stored)" -ge "$((published + $2))" ] && [ "$(stat_of evidence_images)" -ge "$((pictures + $3))" ] && break
    sleep 0.2
  done
  LAST_PUBLISHED=$published LAST_PICTURES=$pictures
  LAST_STORED=$(stored) LAST_IMAGES=$(stat_of evidence_images)
  kill -TERM $agg; wait $agg || true
}

run_round 1 0 0
[ "$LAST_STORED" -ge "$LAST_PUBLISHED" ] || die "round 1: $LAST_STORED stored of $LAST_PUBLISHED published"
[ "$LAST_IMAGES" -ge "$LAST_PICTURES" ] || die "round 1: $LAST_IMAGES evidence images stored of $LAST_PICTURES published"
violations=$(grep -o '"violations": *[0-9]*' /var/lib/traffic/edge/last-summary.json | head -1 | grep -o '[0-9]*$')
[ "${violations:-0}" -gt 0 ] || die "no red-light violation in round 1"
FIRST=$LAST_STORED FIRST_IMAGES=$LAST_IMAGES
say "round 1 (0.0.1-test1): the edge published $LAST_PUBLISHED events ($violations red-light violations) and $LAST_PICTURES evidence pictures, the aggregator stored $FIRST and $FIRST_IMAGES"

bash /opt/traffic/current/install.sh bundles/$B2 2> install2.log || { cat install2.log >&2; die "upgrade to $B2"; }
[ "$(basename "$(readlink -f /opt/traffic/current)")" = 0.0.2-test2 ] || die "current is not 0.0.2-test2 after the upgrade"
[ "$(basename "$(readlink -f /opt/traffic/previous)")" = 0.0.1-test1 ] || die "previous is not 0.0.1-test1"
ls -d /var/lib/traffic/backups/0.0.1-test1-to-0.0.2-test2-*/aggregator >/dev/null || die "no state backup from the upgrade"
say "upgraded: $(grep -o 'upgraded:.*' install2.log)"

# The same clip a day later: new events, the same signal plan phase.
sed -i 's/2026-11-29T00:00:30Z/2026-11-30T00:00:30Z/' /etc/traffic/edge.toml
run_round 2 "$FIRST" "$FIRST_IMAGES"
[ "$LAST_STORED" -ge "$((FIRST + LAST_PUBLISHED))" ] \
  || die "round 2: $LAST_STORED stored, expected the $FIRST of round 1 and the $LAST_PUBLISHED new ones"
[ "$LAST_IMAGES" -ge "$((FIRST_IMAGES + LAST_PICTURES))" ] \
  || die "round 2: $LAST_IMAGES evidence images stored, expected the $FIRST_IMAGES of round 1 and the $LAST_PICTURES new ones"
say "round 2 (0.0.2-test2): $LAST_PUBLISHED more events, $LAST_PICTURES more pictures; the aggregator has $LAST_STORED and $LAST_IMAGES (state kept)"
SECOND=$LAST_STORED

bash /opt/traffic/current/install.sh --rollback 2> rollback.log || { cat rollback.log >&2; die "rollback"; }
[ "$(basename "$(readlink -f /opt/traffic/current)")" = 0.0.1-test1 ] || die "current is not 0.0.1-test1 after the rollback"
grep -q "state kept" rollback.log || die "the rollback did not keep the state: $(cat rollback.log)"
start_unit traffic-aggregator agg-3.log
agg=$!
for _ in $(seq 1 100); do /opt/traffic/bin/aggregator get $AGG /health >/dev/null 2>&1 && break; sleep 0.2; done
[ "$(stored)" -eq "$SECOND" ] || die "after the rollback the aggregator has $(stored) events, before it $SECOND"
kill -TERM $agg; wait $agg || true
say "rolled back to 0.0.1-test1: the aggregator still has all $SECOND events"

# A rollback past a migration: upgrade again, let the newer release's database carry a schema
# version the older one does not know (as a migration would; bytes 60..64 of SQLite's header
# are its user_version), then roll back: the older release refuses that state, so the copy
# taken at the upgrade comes back and the newer state is set aside, not deleted.
bash /opt/traffic/current/install.sh bundles/$B2 2> install3.log || { cat install3.log >&2; die "second upgrade"; }
db=/var/lib/traffic/aggregator/events.db
[ ! -s $db-wal ] || die "the aggregator left a WAL file with pages in it after a clean stop"
printf '\x00\x00\x00\x63' | dd of=$db bs=1 seek=60 conv=notrunc status=none
bash /opt/traffic/current/install.sh --rollback 2> rollback2.log || { cat rollback2.log >&2; die "rollback past a migration"; }
grep -q "refuses the state" rollback2.log || die "the rollback did not see the newer schema: $(cat rollback2.log)"
aside=$(ls -d /var/lib/traffic/backups/set-aside-0.0.2-test2-*)
[ -f "$aside/aggregator/events.db" ] || die "the newer state was not set aside"
start_unit traffic-aggregator agg-4.log
agg=$!
for _ in $(seq 1 100); do /opt/traffic/bin/aggregator get $AGG /health >/dev/null 2>&1 && break; sleep 0.2; done
[ "$(stored)" -eq "$SECOND" ] || { cat agg-4.log >&2; die "after restoring the backup the aggregator has $(stored) events, before the upgrade $SECOND"; }
kill -TERM $agg; wait $agg || true
say "rolled back past a migration: the backup restored ($SECOND events), the newer state kept in $aside"
say "OK"
SCENARIO

# No network but loopback; its own mounts and process tree (everything started in it ends
# with it).
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  unshare --net --mount --pid --fork bash -c '
  set -e
  ip link set lo up
  mount --make-rprivate /
  mount -t proc proc "$1/proc"
  mount --rbind /dev "$1/dev"
  mount -t tmpfs tmpfs "$1/tmp"
  chroot "$1" /bin/bash /srv/test/scenario.sh
' offline-install "$R"
