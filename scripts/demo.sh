#!/usr/bin/env bash
# The demo: an aggregator (SQLite, zenoh peer on loopback, HTTP on 127.0.0.1:8080) and an
# edge node with one camera on the sample video vtest.avi. Installs what is missing first.
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

mkdir -p out
rm -f out/demo-aggregator.db out/demo-aggregator.db-wal out/demo-aggregator.db-shm
# The demo replays a recording with fixed frame times (2026-11-29): keep its events whatever
# today's date, instead of purging them as past their retention period.
sed -e 's|^sqlite_path = .*|sqlite_path = "out/demo-aggregator.db"|' \
    -e 's|^default_days = .*|default_days = 0|' -e 's|^days = .*|days = {}|' \
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

echo "demo: edge node on vtest.avi (795 frames)..." >&2
status=0
"$BIN/edge-node" --config configs/edge-demo.toml --summary-json out/edge-summary.json 2> out/edge-node.log || status=$?
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
cat <<MSG

Query the API while the aggregator runs (it stops when this script ends; run
  target/release/aggregator run --config out/aggregator-demo.toml
to keep it up), for example:
  curl -s 'http://$ADDR/api/v1/events?kind=object_track&class=person&limit=5'
  curl -s 'http://$ADDR/api/v1/events?camera=32050500051320000001&from=2026-11-29T00:00:30Z&to=2026-11-29T00:01:00Z'
  curl -s 'http://$ADDR/api/v1/stats'
Logs: out/edge-node.log, out/aggregator.log; summary: out/edge-summary.json.
MSG
exit $status
