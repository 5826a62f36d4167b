#!/bin/sh
# Install Debian's prometheus package (the `prometheus` server and `promtool`)
# when promtool is missing, for tests/test_ops.py. `make test` runs this first.
#
# It installs only as root or with password-less sudo, and never leaves the
# Debian service running: the tests start their own Prometheus on a free
# loopback port, and a daemon on :9090 would be a surprise on a CI machine.
# Without the rights (or without apt) it prints how to install and returns 0,
# so the suite still runs and the ops tests skip with that reason.
set -eu

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    exit 0
fi

hint="ops: promtool not found; install Debian's prometheus package (sudo apt-get install --no-install-recommends prometheus) to run tests/test_ops.py, which skip without it"

if ! command -v apt-get >/dev/null 2>&1; then
    echo "$hint"
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
else
    echo "$hint"
    exit 0
fi

# policy-rc.d answering 101 tells the package's maintainer scripts not to start
# the service. Containers usually ship one; where there is none, put one in
# place for the install only and take it out again.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    own_policy=1
fi
cleanup() {
    if [ "$own_policy" -eq 1 ]; then
        $sudo rm -f "$policy"
    fi
}
trap cleanup EXIT

echo "ops: installing Debian's prometheus package for tests/test_ops.py"
# A failed install (no network, a held lock) must not stop the suite: say so and
# let those tests skip.
if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
       $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; then
    echo "ops: installing prometheus failed; $hint"
    exit 0
fi

# An existing policy-rc.d may allow starts: then stop and disable the service.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
echo "ops: installed $(promtool --version 2>&1 | head -n 1)"
