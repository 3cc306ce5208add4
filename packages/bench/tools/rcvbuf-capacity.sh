#!/usr/bin/env bash
# How many 1400-byte datagrams a receive buffer of the kernel's default size holds before it
# drops (RcvbufErrors), when they arrive one per send or in runs of k (UDP_SEGMENT). Two
# throw-away namespaces (bu_tx, bu_rx) joined by a veth pair; the receiver does not read until
# the sender is done. Root; no timing involved. Usage: bash rcvbuf-capacity.sh
set -euo pipefail
py=$(cat <<'PY'
import socket, sys
if sys.argv[1] == "recv":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.77.0.2", 9000))
    print("ready", flush=True)
    sys.stdin.readline()
    s.setblocking(False)
    n = 0
    try:
        while True:
            s.recv(2048); n += 1
    except BlockingIOError:
        pass
    print(n, flush=True)
else:
    k, total = int(sys.argv[2]), int(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    if k > 1: s.setsockopt(17, 103, 1400)  # SOL_UDP, UDP_SEGMENT
    sent = 0
    while sent < total:
        s.sendto(b"x" * (1400 * k), ("10.77.0.2", 9000)); sent += k
PY
)
ip netns add bu_tx
ip netns add bu_rx
trap 'ip netns del bu_tx; ip netns del bu_rx' EXIT
ip link add bu_a type veth peer name bu_b
ip link set bu_a netns bu_tx
ip link set bu_b netns bu_rx
ip -n bu_tx addr add 10.77.0.1/24 dev bu_a
ip -n bu_rx addr add 10.77.0.2/24 dev bu_b
for ns in bu_tx bu_rx; do ip -n "$ns" link set lo up; done
ip -n bu_tx link set bu_a up
ip -n bu_rx link set bu_b up
sleep 0.5
echo "net.core.rmem_default = $(cat /proc/sys/net/core/rmem_default)"
for k in 1 4 8 16 32 46; do
  coproc RX { ip netns exec bu_rx python3 -c "$py" recv; }
  read -r _ <&"${RX[0]}"
  ip netns exec bu_tx python3 -c "$py" send "$k" 1840
  sleep 0.3
  echo >&"${RX[1]}"
  read -r n <&"${RX[0]}"
  wait "$RX_PID" 2>/dev/null || true
  echo "datagrams per send $k: $n queued before the buffer was full"
done
