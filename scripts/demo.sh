#!/usr/bin/env bash
# `npm run demo`: installs and builds what is missing (scripts/setup.sh), then runs the demo:
# a NAT router that blocks UDP, the tunnel through it, iperf3 UDP both ways, and a capture on
# the router's WAN proving that only TCP crossed. Everything runs in throw-away network
# namespaces and is removed at the end (also on failure and Ctrl-C). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: needs root (network namespaces, TUN devices, nftables); try: sudo npm run demo" >&2
  exit 2
fi

echo "demo: setting up (packages, pnpm, build)..."
bash scripts/setup.sh >/tmp/fake-tcp-demo-setup.log 2>&1 || {
  echo "demo: setup failed; its output:" >&2
  cat /tmp/fake-tcp-demo-setup.log >&2
  exit 1
}

# The demo itself is bounded (it aborts and cleans up after 50 s); `timeout` is a last resort.
exec timeout --foreground --signal=INT --kill-after=10 58 node packages/e2e/dist/demo.js "$@"
