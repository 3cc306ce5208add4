#!/usr/bin/env bash
# Docker NAT-traversal rig: builds the images, brings docker/compose.yaml up (client behind a
# masquerading router that drops all UDP on its wan side, server on wan, a WireGuard pair as
# the UDP application), then checks that WireGuard works only through the fake-TCP tunnel:
# handshake, ping, an iperf3 UDP run, and a capture on the router's wan side showing only TCP.
# Tears everything down at the end, on failure and on Ctrl-C, and leaves the host's firewall
# as it found it. Only checks of the product count as tests (PASS/FAIL); the rig's own steps
# (engine, images, bring-up, capture, teardown, host left as found) are reported as ok/ERROR
# and not counted, but any of them failing fails the run. Exit 0 only when every step and
# every check passed; the last line is
# `docker-rig: N passed, N failed; infrastructure: N ok, N failed`.
#
# The Docker engine: an engine already running is used (and left running). Otherwise Debian's
# docker.io is installed if missing and dockerd is started for the run, with --iptables=false
# (it never touches the host's firewall: the router container does the NAT inside the rig) and
# --bridge=none, then stopped at the end.
#
# Env: BASE_IMAGE (default: node:24-bookworm-slim if present or pullable, else the local base
#      that docker/make-local-base.sh makes), RIG_IPERF_RATE (20M), RIG_IPERF_SECONDS (3),
#      RIG_KEEP_LOGS=1 (keep the work directory), FAKE_TCP_LOG_LEVEL (info),
#      RIG_NO_BUILD=1 (use the images already built),
#      RIG_SOURCE (worktree: the files git would track, as they are now; or a commit, e.g. HEAD).
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo" || exit 2

project=fake-tcp-rig
image=fake-tcp:latest
rig_image=fake-tcp-rig:latest
build_image=fake-tcp-build-cache:latest
official_base=node:24-bookworm-slim
local_base=fake-tcp-local-base:bookworm-node24
lan=10.231.10 wan=10.231.20 wgnet=10.231.30 tcp_port=4567
iperf_rate=${RIG_IPERF_RATE:-20M}
iperf_seconds=${RIG_IPERF_SECONDS:-3}
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}
export FAKE_TCP_IMAGE=$image FAKE_TCP_RIG_IMAGE=$rig_image
export RIG_LAN_PREFIX=$lan RIG_WAN_PREFIX=$wan RIG_WG_PREFIX=$wgnet RIG_TCP_PORT=$tcp_port

work=$(mktemp -d /tmp/fake-tcp-docker-rig.XXXXXX)
started_at=$(date +%s)
passed=0 failed=0 infra_ok=0 infra_failed=0
declare -a summary=()
engine_started=0 dockerd_pid= compose_up=0 torn_down=0
compose=()

say() { echo "docker-rig: $*"; }
# A check of the product: counted as a test.
pass() { passed=$((passed + 1)); summary+=("PASS  $1"); say "PASS $1"; }
fail() { failed=$((failed + 1)); summary+=("FAIL  $1"); say "FAIL $1" >&2; }
# A step of the rig itself: reported, not counted as a test; a failed one fails the run.
step_ok() { infra_ok=$((infra_ok + 1)); summary+=("ok    $1"); say "ok $1"; }
step_failed() { infra_failed=$((infra_failed + 1)); summary+=("ERROR $1"); say "ERROR $1" >&2; }
elapsed() { echo $(($(date +%s) - started_at)); }
# Every external command is bounded; --foreground keeps it in the terminal's process group so
# that Ctrl-C reaches it at once.
bounded() {
  local seconds=$1
  shift
  timeout --foreground -k 5 "$seconds" "$@"
}

# ---------------------------------------------------------------------------------------------
# Teardown: always runs (EXIT trap), itself bounded.

dump_logs() {
  [ "$compose_up" = 1 ] || return 0
  say "container logs (last 40 lines each) follow"
  bounded 30 "${compose[@]}" logs --no-color --tail 40 >&2 2>&1 || true
}

teardown() {
  [ "$torn_down" = 1 ] && return 0
  torn_down=1
  trap '' INT TERM
  if [ "$failed" -gt 0 ] || [ "$infra_failed" -gt 0 ]; then dump_logs; fi
  if [ ${#compose[@]} -gt 0 ] && docker info >/dev/null 2>&1; then
    bounded 90 "${compose[@]}" down --volumes --remove-orphans --timeout 5 >"$work/down.log" 2>&1 || true
    # Whatever `down` missed (an interrupted `up`): by the project label.
    local left
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$project" 2>/dev/null)
    [ -n "$left" ] && bounded 60 docker rm -f $left >/dev/null 2>&1
    left=$(docker network ls -q --filter "label=com.docker.compose.project=$project" 2>/dev/null)
    [ -n "$left" ] && bounded 60 docker network rm $left >/dev/null 2>&1
    if [ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$project")" ] &&
      [ -z "$(docker network ls -q --filter "label=com.docker.compose.project=$project")" ]; then
      step_ok "teardown: no rig container or network left"
    else
      step_failed "teardown: rig containers or networks are left"
    fi
  fi
  if [ "$engine_started" = 1 ]; then
    stop_engine
  fi
  if [ -f "$work/nft-before.txt" ]; then
    check_firewall_restored
  fi
}

stop_engine() {
  [ -n "$dockerd_pid" ] || return 0
  kill -TERM "$dockerd_pid" 2>/dev/null
  local i
  for i in $(seq 1 60); do
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$dockerd_pid" 2>/dev/null; then
    kill -KILL "$dockerd_pid" 2>/dev/null
    step_failed "engine: dockerd (pid $dockerd_pid) did not stop within 30 s, killed"
  else
    step_ok "engine: the dockerd this run started is stopped"
  fi
}

# The host's ruleset must be what it was. An engine started here runs with --iptables=false and
# adds nothing; should any table with Docker's chains have appeared anyway, it is removed.
check_firewall_restored() {
  nft -s list ruleset >"$work/nft-after.txt" 2>&1
  if ! cmp -s "$work/nft-before.txt" "$work/nft-after.txt"; then
    local family name
    while read -r family name; do
      if ! grep -q "^table $family $name {" "$work/nft-before.txt" &&
        [ "$(nft -s list table "$family" "$name" 2>/dev/null | grep -c DOCKER)" -gt 0 ]; then
        say "removing nftables table $family $name left by Docker"
        nft delete table "$family" "$name" || true
      fi
    done < <(nft list tables 2>/dev/null | awk '{ print $2, $3 }')
    nft -s list ruleset >"$work/nft-after.txt" 2>&1
  fi
  if cmp -s "$work/nft-before.txt" "$work/nft-after.txt"; then
    step_ok "host firewall: nftables ruleset unchanged"
  else
    step_failed "host firewall: nftables ruleset changed (diff in $work)"
    diff "$work/nft-before.txt" "$work/nft-after.txt" >&2 || true
  fi
  if [ "$(sysctl -n net.ipv4.ip_forward)" = "$(cat "$work/ip_forward-before.txt")" ]; then
    step_ok "host: net.ipv4.ip_forward unchanged"
  else
    step_failed "host: net.ipv4.ip_forward changed"
  fi
}

finish() {
  local code=$?
  teardown
  echo
  say "summary ($(elapsed) s):"
  local line
  for line in "${summary[@]}"; do echo "  $line"; done
  if [ "$failed" -eq 0 ] && [ "$infra_failed" -eq 0 ] && [ "$passed" -gt 0 ] && [ "$code" -eq 0 ]; then
    [ "${RIG_KEEP_LOGS:-0}" = 1 ] || rm -rf "$work"
  else
    say "logs kept in $work"
    # An exit that no step or check reported (e.g. an unset variable under `set -u`): the rig
    # did not run as it should.
    if [ "$failed" -eq 0 ] && [ "$infra_failed" -eq 0 ] && [ "$code" -ne 0 ]; then
      infra_failed=1
      echo "  ERROR exit $code without a reported failure"
    fi
  fi
  echo "docker-rig: $passed passed, $failed failed; infrastructure: $infra_ok ok, $infra_failed failed"
  [ "$failed" -eq 0 ] && [ "$infra_failed" -eq 0 ] && [ "$passed" -gt 0 ] && exit 0
  exit 1
}
trap finish EXIT
trap 'step_failed "interrupted by a signal"; exit 130' INT TERM

# A step of the rig that the checks need: stops at the first that fails.
require() {
  local what=$1
  shift
  if "$@"; then step_ok "$what"; else
    step_failed "$what"
    exit 1
  fi
}

# ---------------------------------------------------------------------------------------------
# Engine and tools

# One rig at a time on a machine: the subnets and the project name are fixed.
exec 9>/tmp/fake-tcp-docker-rig.lock
if ! flock -w 900 9; then
  step_failed "another docker rig held the lock for 15 minutes"
  exit 1
fi

nft -s list ruleset >"$work/nft-before.txt" 2>&1 || true
sysctl -n net.ipv4.ip_forward >"$work/ip_forward-before.txt"

apt_install() {
  [ "$(id -u)" -eq 0 ] || return 1
  export DEBIAN_FRONTEND=noninteractive
  say "installing $* (Debian)"
  bounded 300 apt-get update -qq >/dev/null 2>&1
  bounded 600 apt-get install -y -qq --no-install-recommends "$@" >"$work/apt.log" 2>&1
}

start_engine() {
  if docker info >/dev/null 2>&1; then
    say "using the Docker engine already running"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    say "no Docker engine runs and starting one needs root"
    return 1
  fi
  command -v dockerd >/dev/null 2>&1 || apt_install docker.io || return 1
  say "starting dockerd (--iptables=false --bridge=none; log: $work/dockerd.log)"
  # In a session of its own: a Ctrl-C (sent to the terminal's whole process group) must reach
  # this script, which tears the rig down through the engine, and not stop the engine first.
  setsid dockerd --iptables=false --ip-masq=false --ip-forward=false --bridge=none \
    --pidfile "$work/dockerd.pid" >"$work/dockerd.log" 2>&1 </dev/null &
  local launcher=$! i
  engine_started=1
  for i in $(seq 1 60); do
    [ -z "$dockerd_pid" ] && [ -s "$work/dockerd.pid" ] && dockerd_pid=$(cat "$work/dockerd.pid")
    [ -n "$dockerd_pid" ] && docker info >/dev/null 2>&1 && return 0
    [ -n "$dockerd_pid" ] && ! kill -0 "$dockerd_pid" 2>/dev/null && break
    [ -z "$dockerd_pid" ] && ! kill -0 "$launcher" 2>/dev/null && break
    sleep 0.5
  done
  tail -20 "$work/dockerd.log" >&2
  return 1
}

pick_compose() {
  if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose; then
    compose=(docker-compose)
  else
    return 1
  fi
  say "compose: ${compose[*]} ($("${compose[@]}" version --short 2>/dev/null || echo '?'))"
  compose+=(-p "$project" -f docker/compose.yaml)
}

require "engine: a Docker engine answers" start_engine
require "compose: docker compose or docker-compose available" pick_compose

# ---------------------------------------------------------------------------------------------
# Images

pick_base() {
  if [ -n "${BASE_IMAGE:-}" ]; then
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || bounded 120 docker pull "$BASE_IMAGE"
    return
  fi
  if docker image inspect "$official_base" >/dev/null 2>&1; then
    BASE_IMAGE=$official_base
  elif docker image inspect "$local_base" >/dev/null 2>&1; then
    BASE_IMAGE=$local_base
  elif bounded 60 docker pull -q "$official_base" >"$work/pull.log" 2>&1; then
    BASE_IMAGE=$official_base
  else
    say "$official_base cannot be pulled: making $local_base (debootstrap)"
    bounded 900 bash docker/make-local-base.sh "$local_base" || return 1
    BASE_IMAGE=$local_base
  fi
  say "base image: $BASE_IMAGE"
}

# The build context is streamed as a tar of the files git would track (so no node_modules,
# dist, build, .git), plus the CA bundle of this host for npm behind an inspecting proxy.
build_images() {
  local ca=${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt} src=$repo
  if [ "${RIG_SOURCE:-worktree}" != worktree ]; then
    # A commit instead of the working tree (e.g. RIG_SOURCE=HEAD while others edit the tree).
    src="$work/src"
    mkdir -p "$src"
    git archive --format=tar "$RIG_SOURCE" | tar -xf - -C "$src" || return 1
  fi
  mkdir -p "$work/ctx/docker"
  [ -f "$ca" ] && cp "$ca" "$work/ctx/docker/extra-ca.crt"
  if [ "$src" = "$repo" ] && git rev-parse --git-dir >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard
  elif [ "$src" = "$repo" ]; then
    # Not a git checkout: everything but what .dockerignore names.
    find . \( -name node_modules -o -name dist -o -name build -o -name .git -o -name coverage \
      -o -path ./docker/.base -o -name '*.tsbuildinfo' \) -prune -o -type f -print0
  else
    (cd "$src" && find . -type f -print0)
  fi | while IFS= read -r -d '' f; do [ -f "$src/$f" ] && printf '%s\0' "$f"; done >"$work/context.lst"
  local target tag
  # The build stage is tagged too, so that it stays as the cache of the next run while the
  # untagged images of earlier builds are pruned (each is about 1 GB).
  for target in build runtime rig; do
    case $target in
      build) tag=$build_image ;;
      runtime) tag=$image ;;
      rig) tag=$rig_image ;;
    esac
    say "building $tag (target $target, base $BASE_IMAGE; log: $work/build-$target.log)"
    local t0=$SECONDS
    if ! tar -cf - -C "$src" --null -T "$work/context.lst" -C "$work/ctx" $(cd "$work/ctx" && find docker -type f) |
      bounded 1500 docker build -f docker/Dockerfile --network host --force-rm --target "$target" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$tag" - >"$work/build-$target.log" 2>&1; then
      tail -40 "$work/build-$target.log" >&2
      return 1
    fi
    say "built $tag in $((SECONDS - t0)) s"
  done
  bounded 120 docker image prune -f --filter label=org.fake-tcp.image >/dev/null 2>&1 || true
}

images_present() {
  docker image inspect "$image" >/dev/null 2>&1 && docker image inspect "$rig_image" >/dev/null 2>&1
}
if [ "${RIG_NO_BUILD:-0}" = 1 ]; then
  require "images present ($image, $rig_image; RIG_NO_BUILD=1)" images_present
else
  require "base image available" pick_base
  require "images built ($image, $rig_image)" build_images
fi

# ---------------------------------------------------------------------------------------------
# Keys and the rig

gen_keys() {
  local out
  out=$(bounded 60 docker run --rm --network none --entrypoint sh "$rig_image" -c \
    'for side in client server; do k=$(wg genkey); echo "$k $(echo "$k" | wg pubkey)"; done') ||
    return 1
  local client_key server_key
  read -r client_key RIG_WG_CLIENT_PUB server_key RIG_WG_SERVER_PUB <<<"$(echo $out)"
  # Private keys go to the containers as Compose secrets (files), never in the environment.
  (
    umask 077
    printf '%s\n' "$client_key" >"$work/wg-client.key"
    printf '%s\n' "$server_key" >"$work/wg-server.key"
  )
  export RIG_WG_CLIENT_KEY_FILE=$work/wg-client.key RIG_WG_SERVER_KEY_FILE=$work/wg-server.key
  export RIG_WG_CLIENT_PUB RIG_WG_SERVER_PUB
  [ -n "$RIG_WG_SERVER_PUB" ]
}
require "WireGuard keys generated" gen_keys

cid() { "${compose[@]}" ps -q "$1" 2>/dev/null; }
in_svc() {
  local svc=$1
  shift
  docker exec "$(cid "$svc")" "$@"
}

bring_up() {
  # A rig left by an interrupted run (lock held by nobody now) goes first.
  bounded 90 "${compose[@]}" down --volumes --remove-orphans --timeout 2 >/dev/null 2>&1
  compose_up=1
  bounded 180 "${compose[@]}" up -d --no-build >"$work/up.log" 2>&1 || {
    cat "$work/up.log" >&2
    return 1
  }
  # Running now, and still running 3 s later (a program that exits at start-up shows here).
  local round svc id
  for round in 1 2; do
    for svc in router client wg-client server wg-server; do
      id=$(cid "$svc")
      if [ -z "$id" ] || [ "$(docker inspect -f '{{.State.Running}}' "$id" 2>/dev/null)" != true ]; then
        say "service $svc is not running"
        return 1
      fi
    done
    if [ "$round" = 1 ]; then sleep 3; fi
  done
  return 0
}
require "compose up: router, client, wg-client, server, wg-server running" bring_up

# ---------------------------------------------------------------------------------------------
# Checks

# The capture runs on the router's wan interface for the whole tunnel traffic.
start_capture() {
  in_svc router sh -c 'tcpdump -i "$(cat /run/rig-wan-interface)" -n -U -B 8192 -w /tmp/wan.pcap \
    >/tmp/tcpdump.log 2>&1 & echo $! >/tmp/tcpdump.pid' || return 1
  local i
  for i in $(seq 1 50); do
    in_svc router grep -q listening /tmp/tcpdump.log 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
require "capture started on the router's wan side" start_capture

handshake_seconds=
wait_handshake() {
  local t0=$SECONDS i hs
  for i in $(seq 1 30); do
    # A ping makes WireGuard initiate at once (keepalive would, within 5 s).
    in_svc wg-client ping -c 1 -W 1 "$wgnet.2" >/dev/null 2>&1
    hs=$(in_svc wg-client wg show wg0 latest-handshakes 2>/dev/null | awk '{ print $2 }')
    if [ -n "$hs" ] && [ "$hs" != 0 ]; then
      handshake_seconds=$((SECONDS - t0))
      return 0
    fi
  done
  return 1
}
if wait_handshake; then
  pass "WireGuard handshake through the tunnel (seen after ${handshake_seconds} s of waiting)"
else
  fail "WireGuard handshake through the tunnel (none within 30 tries)"
fi

ping_line=
ping_check() {
  local out received
  out=$(bounded 20 docker exec "$(cid wg-client)" ping -c 10 -i 0.2 -W 2 "$wgnet.2" 2>&1)
  received=$(echo "$out" | sed -n 's/.* \([0-9]\+\) received.*/\1/p')
  ping_line=$(echo "$out" | grep -E 'received|rtt' | tr '\n' ' ')
  [ "${received:-0}" -ge 9 ]
}
if ping_check; then pass "ping through WireGuard: $ping_line"; else
  fail "ping through WireGuard: ${ping_line:-no answer}"
fi

iperf_line=
iperf_check() {
  local server
  server=$(cid wg-server)
  docker exec -d "$server" iperf3 -s -1 -B "$wgnet.2" || return 1
  sleep 1
  bounded $((iperf_seconds + 30)) docker exec "$(cid wg-client)" iperf3 -c "$wgnet.2" -u \
    -b "$iperf_rate" -t "$iperf_seconds" -l 1200 -J >"$work/iperf.json" 2>"$work/iperf.err" ||
    return 1
  # The receiver's view: what crossed the tunnel. Node parses the JSON (jq is not required).
  iperf_line=$(node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    if (r.error) { console.log("error: " + r.error); process.exit(1); }
    const s = r.end.sum_received ?? r.end.sum;
    const lost = s.lost_percent ?? 0;
    console.log(`${(s.bits_per_second / 1e6).toFixed(1)} Mbit/s received, ${s.packets} packets, ` +
      `${lost.toFixed(2)} % lost, jitter ${(s.jitter_ms ?? 0).toFixed(3)} ms`);
    // A functional check (the datagrams cross), not a speed target: the machine may be
    // loaded by other work, so the loss figure is reported and only a majority lost fails.
    process.exit(s.packets > 0 && lost < 50 ? 0 : 1);
  ' "$work/iperf.json")
}
if iperf_check; then pass "iperf3 UDP through WireGuard ($iperf_rate, ${iperf_seconds} s): $iperf_line"; else
  fail "iperf3 UDP through WireGuard: ${iperf_line:-$(tail -3 "$work/iperf.err" 2>/dev/null)}"
fi

count_wan() {
  in_svc router sh -c "tcpdump -r /tmp/wan.pcap -n '$1' 2>/dev/null | wc -l"
}
capture_check() {
  in_svc router sh -c 'kill "$(cat /tmp/tcpdump.pid)"; for i in $(seq 1 50); do
    kill -0 "$(cat /tmp/tcpdump.pid)" 2>/dev/null || exit 0; sleep 0.1; done; exit 1' || return 1
  local tcp udp other_v4 v6
  tcp=$(count_wan "tcp port $tcp_port")
  udp=$(count_wan "udp")
  other_v4=$(count_wan "ip and not tcp")
  v6=$(count_wan "ip6 and not udp")
  capture_line="$tcp TCP segments to/from port $tcp_port, $udp UDP, $other_v4 other IPv4, $v6 IPv6 link-local/ND"
  [ "$tcp" -gt 0 ] && [ "$udp" -eq 0 ] && [ "$other_v4" -eq 0 ]
}
capture_line=
if capture_check; then pass "wan capture: only TCP crossed ($capture_line)"; else
  fail "wan capture: ${capture_line:-capture failed}"
fi

udp_dropped() {
  in_svc router nft list counter inet rig_router udp_dropped 2>/dev/null |
    sed -n 's/.*packets \([0-9]\+\).*/\1/p'
}
control_check() {
  local before after
  before=$(udp_dropped)
  # Plain UDP from the lan host to the server: the router must drop it.
  in_svc client bash -c "for i in 1 2 3; do echo probe >/dev/udp/$wan.10/9; done" || return 1
  sleep 0.5
  after=$(udp_dropped)
  control_line="router UDP drop counter $before -> $after"
  [ -n "$before" ] && [ -n "$after" ] && [ "$before" -eq 0 ] && [ "$after" -ge 3 ]
}
control_line=
if control_check; then
  pass "control: no UDP reached the router during the tunnel test, direct UDP is dropped ($control_line)"
else
  fail "control: router UDP drop ($control_line)"
fi
still_running() {
  local svc id
  for svc in router client wg-client server wg-server; do
    id=$(cid "$svc")
    [ "$(docker inspect -f '{{.State.Running}}' "$id" 2>/dev/null)" = true ] || {
      say "service $svc stopped during the test"
      return 1
    }
  done
}
if still_running; then pass "every service still running after the traffic"; else
  fail "a service stopped during the test"
fi
# tini must hand SIGTERM to the programs, which then exit 0 after removing their rules.
clean_stop() {
  local svc id code
  for svc in client server; do
    id=$(cid "$svc")
    bounded 30 docker stop -t 5 "$id" >/dev/null || return 1
    code=$(docker inspect -f '{{.State.ExitCode}}' "$id")
    stop_line+="$svc exit $code; "
    # grep -c reads to the end: with -q, `docker logs` could die of SIGPIPE (pipefail).
    [ "$code" = 0 ] || return 1
    [ "$(docker logs "$id" 2>&1 | grep -c 'nft rules removed')" -gt 0 ] || return 1
  done
}
stop_line=
if clean_stop; then pass "docker stop: both programs exit 0 on SIGTERM, rules removed (${stop_line%; })"; else
  fail "docker stop: a program did not stop cleanly (${stop_line:-no exit code})"
fi
# finish (EXIT trap) tears down, checks the host and prints the summary.
