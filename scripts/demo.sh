#!/usr/bin/env bash
# The demo: an aggregator (SQLite, zenoh peer on loopback, HTTP on 127.0.0.1:8080) and an
# edge node with two cameras: the pedestrian crossing of the sample video vtest.avi, and a
# vehicle checkpoint playing a clip the plate generator renders (plates painted on real
# vehicle photos over real video frames). Installs what is missing first.
# When the video ends it prints the node's summary, what the aggregator stored, and queries
# to paste.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
./scripts/setup.sh
# shellcheck disable=SC1091
source "${TRAFFIC_CACHE:-$ROOT/.cache}/env.sh"

echo "demo: building (release; the first build takes several minutes)" >&2
cargo build --release --locked -q -p edge-node -p aggregator
BIN=$ROOT/target/release

# The checkpoint clip: 40 vehicles, the first eight one of each registry case (wanted,
# night coach, fake plate, class mismatch, unregistered, hazardous goods, scrapped).
PLATES=${TRAFFIC_CACHE:-$ROOT/.cache}/media/plates
if [ ! -s "$PLATES/checkpoint.truth.json" ]; then
  echo "demo: rendering the plate checkpoint clip (once)" >&2
  "$BIN/plategen" --out "$PLATES" --name checkpoint --vehicles 40 --seed 7 --scripted
fi

mkdir -p out
rm -rf out/state
# The demo config names files under .cache/; point it at the cache in use (TRAFFIC_CACHE).
CACHE_DIR=${TRAFFIC_CACHE:-$ROOT/.cache}
sed -e "s|\"\.cache/|\"$CACHE_DIR/|g" configs/edge-demo.toml > out/edge-demo.toml
rm -f out/demo-aggregator.db out/demo-aggregator.db-wal out/demo-aggregator.db-shm
# The demo replays a recording with fixed frame times (2026-11-29): keep its events whatever
# today's date, instead of purging them as past their retention period.
sed -e 's|^sqlite_path = .*|sqlite_path = "out/demo-aggregator.db"|' \
    -e 's|^default_days = .*|default_days = 0|' -e 's|^days = .*|days = {}|' \
    -e "s|\"\.cache/|\"$CACHE_DIR/|g" \
    configs/aggregator-demo.toml > out/aggregator-demo.toml

"$BIN/aggregator" run --config out/aggregator-demo.toml --addr-file out/aggregator.addr 2> out/aggregator.log &
AGG=$!
trap 'kill -TERM $AGG 2>/dev/null || true; wait $AGG 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  [ -s out/aggregator.addr ] && break
  kill -0 $AGG 2>/dev/null || { cat out/aggregator.log >&2; echo "demo: the aggregator did not start (see above)" >&2; exit 1; }
  sleep 0.1
done
ADDR=$(cat out/aggregator.addr)
# The API wants a login: the demo's city operator (read-only; see [auth] in the config).
export TRAFFIC_API_USER=city TRAFFIC_API_PASSWORD=demo-city

echo "demo: edge node on vtest.avi (795 frames) and the checkpoint clip, side by side..." >&2
status=0
"$BIN/edge-node" --config out/edge-demo.toml --summary-json out/edge-summary.json 2> out/edge-node.log || status=$?
[ $status -eq 0 ] || { tail -20 out/edge-node.log >&2; echo "demo: the edge node exited with $status (log: out/edge-node.log)" >&2; }

# Give the last events and evidence images (sent at a lower priority) a moment to be stored.
read -r want_ev want_img < <(python3 -c 'import json;s=json.load(open("out/edge-summary.json"));print(s["events_published"], s["evidence_published"])' 2>/dev/null || echo 0 0)
for _ in $(seq 1 100); do
  read -r got_ev got_img < <("$BIN/aggregator" get "$ADDR" /health | python3 -c 'import json,sys;i=json.load(sys.stdin)["ingest"];print(i["stored"], i["evidence_stored"])')
  [ "$got_ev" -ge "$want_ev" ] && [ "$got_img" -ge "$want_img" ] && break
  sleep 0.1
done
echo
"$BIN/aggregator" summary "$ADDR"
echo
echo "Pedestrian red-light violations, with their evidence pictures saved under out/evidence/:"
rm -rf out/evidence
"$BIN/aggregator" violations "$ADDR" --save out/evidence
echo
echo "Vehicle passes and plate anomalies at the checkpoint (camera 32050500051320000002):"
"$BIN/aggregator" get "$ADDR" "/api/v1/events?kind=vehicle_pass&limit=500" | python3 -c '
import json, sys
ev = json.load(sys.stdin)["events"]
read = [e for e in ev if e["body"].get("plate")]
print(f"  {len(ev)} passes, {len(read)} with the plate read; the first five:")
for e in ev[:5]:
    b = e["body"]
    print("   ", e["event_id"], (b.get("plate") or "unread").ljust(9), b.get("plate_colour"), b.get("vehicle_class"), "lane", e.get("lane"), b.get("direction"))'
"$BIN/aggregator" get "$ADDR" "/api/v1/events?kind=plate_anomaly&limit=500" | python3 -c '
import json, sys
ev = json.load(sys.stdin)["events"]
print(f"  {len(ev)} plate anomalies:")
for e in ev:
    b = e["body"]
    print("   ", b["anomaly"].ljust(16), (b.get("plate") or "").ljust(9), b.get("detail", ""))'

cat <<MSG

Query the API while the aggregator runs (it stops when this script ends; run
  target/release/aggregator run --config out/aggregator-demo.toml
to keep it up), for example, after logging in (demo users in configs/aggregator-demo.toml):
  curl -s -c out/cookies -H 'Content-Type: application/json' -d '{"user":"city","password":"demo-city"}' http://$ADDR/api/v1/login
  curl -s -b out/cookies 'http://$ADDR/api/v1/events?kind=object_track&class=person&limit=5'
  curl -s -b out/cookies 'http://$ADDR/api/v1/events?camera=32050500051320000001&from=2026-11-29T00:00:30Z&to=2026-11-29T00:01:00Z'
  curl -s -b out/cookies 'http://$ADDR/api/v1/stats'
  curl -s -b out/cookies 'http://$ADDR/api/v1/events?kind=plate_anomaly'
  curl -s -b out/cookies 'http://$ADDR/api/v1/events?kind=vehicle_pass&plate=%E8%8B%8F*'   (plates starting with 苏)
The dashboard: http://$ADDR/dashboard/ (log in as city / demo-city, or reviewer / demo-review
to confirm violations).
Logs: out/edge-node.log, out/aggregator.log; summary: out/edge-summary.json.
MSG
exit $status
