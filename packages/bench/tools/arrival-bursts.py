# Used by arrival-bursts.mjs.
# recv PORT SECS: binds, asks for kernel arrival timestamps (SO_TIMESTAMPNS) and a 4 MiB
#   buffer, reads until 3 s pass without a datagram, then prints: received; within2us (share
#   of datagrams that arrived < 2 us after the previous one); max100us / max1ms (most arrivals
#   in any 100 us / 1 ms window); burst_p50/p99/max (groups of arrivals < 2 us apart).
# send HOST PORT MBITS SECS: 1400-byte datagrams at MBITS, paced in ~0.5 ms ticks.
import socket, struct, sys, time, json
mode = sys.argv[1]
if mode == "recv":
    port = int(sys.argv[2]); secs = float(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
    s.bind(("0.0.0.0", port))
    s.settimeout(secs + 5)
    print("ready", flush=True)
    ts = []
    try:
        while True:
            data, anc, flags, addr = s.recvmsg(2048, 64)
            for lvl, typ, d in anc:
                if typ == 35:
                    sec, ns = struct.unpack("qq", d[:16]); ts.append(sec * 1e9 + ns)
            s.settimeout(3.0)
    except socket.timeout:
        pass
    ts.sort()
    n = len(ts)
    gaps = [ts[i] - ts[i - 1] for i in range(1, n)]
    close = sum(1 for g in gaps if g < 2000)
    # largest number of arrivals within any 100 us and 1 ms window
    def maxwin(w):
        best = j = 0
        for i in range(n):
            while ts[i] - ts[j] > w: j += 1
            best = max(best, i - j + 1)
        return best
    # bursts: maximal groups with gaps < 2 us
    bursts = []; cur = 1
    for g in gaps:
        if g < 2000: cur += 1
        else: bursts.append(cur); cur = 1
    bursts.append(cur); bursts.sort()
    p = lambda q: bursts[min(len(bursts) - 1, int(q * len(bursts)))] if bursts else 0
    print(json.dumps({"received": n, "within2us": round(close / max(1, n - 1), 3),
        "max100us": maxwin(100_000), "max1ms": maxwin(1_000_000),
        "burst_p50": p(0.5), "burst_p99": p(0.99), "burst_max": bursts[-1] if bursts else 0}), flush=True)
else:
    host, port, rate, secs = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    per_ms = rate * 1e6 / 8 / 1400 / 1000
    buf = b"x" * 1400
    t0 = time.monotonic(); sent = 0
    while True:
        el = time.monotonic() - t0
        if el >= secs: break
        due = int(el * 1000 * per_ms)
        while sent < due:
            s.sendto(buf, (host, port)); sent += 1
        time.sleep(0.0005)
    print(sent)
