#!/usr/bin/env bash
# Installs what this project needs on a fresh Debian machine with Node >= 20, then builds it.
# Idempotent: each step runs only when its result is missing. Set SETUP_SKIP_APT=1 to skip
# the system packages (for machines without root).
set -euo pipefail
cd "$(dirname "$0")/.."

need_node_major=20
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt "$need_node_major" ]; then
  echo "setup: Node.js >= $need_node_major is required (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 2
fi

# System tools the programs and the end-to-end tests use, by command -> Debian package.
# prometheus: the metrics tests scrape the programs with a real Prometheus and lint their
# output with promtool (the package's service is not needed: the tests start their own).
# iptables-nft: kernels built without nft's queue statement (CONFIG_NFT_QUEUE) reach NFQUEUE
# only through the xtables target (the netfilter queue tests fall back to it).
declare -A tools=(
  [ip]=iproute2 [nft]=nftables [iptables-nft]=iptables [iperf3]=iperf3 [tcpdump]=tcpdump
  [wireguard-go]=wireguard-go [wg]=wireguard-tools [conntrack]=conntrack
  [socat]=socat [make]=make [g++]=g++ [python3]=python3 [docker-compose]=docker-compose
  [promtool]=prometheus [systemd-nspawn]=systemd-container [debootstrap]=debootstrap
)
missing=()
for cmd in "${!tools[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${tools[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ] && [ "${SETUP_SKIP_APT:-0}" != 1 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing system packages (${missing[*]}); run as root or install them with apt-get" >&2
    exit 2
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v pnpm >/dev/null 2>&1; then
  echo "setup: installing pnpm 10"
  npm install -g pnpm@10 >/dev/null
fi

if [ ! -d node_modules/.pnpm ] || [ pnpm-lock.yaml -nt node_modules/.modules.yaml ]; then
  pnpm install --frozen-lockfile
fi

pnpm run build
