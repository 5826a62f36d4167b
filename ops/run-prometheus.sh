#!/bin/sh
# Run Prometheus in the foreground against a running `aideploy serve`, with the
# shipped scrape config (ops/prometheus/prometheus.yml) and alerting rules
# (ops/prometheus/rules.yml). Stop it with Ctrl-C.
#
#   aideploy serve artifacts/repository &      # 127.0.0.1:8000
#   ops/run-prometheus.sh                      # then open http://127.0.0.1:9090
#
# Usage: ops/run-prometheus.sh [TARGET] [PORT]
#   TARGET  host:port of the aideploy server to scrape (default 127.0.0.1:8000)
#   PORT    the port Prometheus listens on, on 127.0.0.1 only (default 9090)
# Environment:
#   PROMETHEUS_INTERVAL  scrape and rule-evaluation interval (default 15s)
#   PROMETHEUS_DATA      keep the time series in this folder (default: a
#                        temporary folder, deleted when Prometheus stops)
#
# Needs Debian's prometheus package (ops/install-tools.sh installs it).
set -eu

target=${1:-127.0.0.1:8000}
port=${2:-9090}
interval=${PROMETHEUS_INTERVAL:-15s}
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v prometheus >/dev/null 2>&1; then
    echo "prometheus not found: install Debian's prometheus package (sudo sh ops/install-tools.sh)" >&2
    exit 1
fi

workdir=$(mktemp -d "${TMPDIR:-/tmp}/aideploy-prometheus.XXXXXX")
data=${PROMETHEUS_DATA:-$workdir/data}
cleanup() { rm -rf "$workdir"; }
trap cleanup EXIT

# The shipped config with this target, interval and the rules' absolute path.
sed -e "s|\"127.0.0.1:8000\"|\"$target\"|" \
    -e "s|_interval: 15s|_interval: $interval|" \
    -e "s|- rules.yml|- $here/prometheus/rules.yml|" \
    "$here/prometheus/prometheus.yml" > "$workdir/prometheus.yml"

echo "Prometheus on http://127.0.0.1:$port scraping http://$target/metrics every $interval"
prometheus --config.file="$workdir/prometheus.yml" --storage.tsdb.path="$data" \
    --web.listen-address="127.0.0.1:$port" --log.level=warn &
child=$!
# Forward Ctrl-C and SIGTERM to Prometheus (a graceful stop), then clean up.
trap 'kill -TERM "$child" 2>/dev/null || true' INT TERM
status=0
wait "$child" || status=$?
if [ "$status" -gt 128 ] && kill -0 "$child" 2>/dev/null; then
    # wait returned because a trapped signal arrived: wait for Prometheus's own exit.
    status=0
    wait "$child" || status=$?
fi
exit "$status"
