# Reads `perf script` output of a `perf sched record` (receiver-sched-trace.mjs) and the
# step's JSON line, and tells for the receiving iperf3: who woke it, how long it waited for
# a core after each wake-up or preemption (p50/p90/p99/max), how often it then ran on the
# core its waker was on, which threads were switched in (anywhere) while it waited, and how
# often it was preempted while runnable. Usage: perf script -i X.data | python3 receiver-wakeups.py '<json line>'
import json
import re
import sys
from collections import Counter

meta = json.loads(sys.argv[1])
tids = meta["tids"]
role_of = {t: r for r, ts in tids.items() for t in ts}
receiver = set(tids["receiver"])
line_re = re.compile(r"^\s*(\S.*?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(sched:\S+):\s*(.*)$")
waking = {}  # tid -> (time, cpu, waker role)
running = {}  # cpu -> tid
waits = []
same_cpu = 0
wakeups = 0
ran_meanwhile = Counter()
wakers = Counter()
preempted = 0
for line in sys.stdin:
    m = line_re.match(line)
    if not m:
        continue
    comm, tid, cpu, t, ev, rest = m.group(1), int(m.group(2)), int(m.group(3)), float(m.group(4)), m.group(5), m.group(6)
    if ev in ("sched:sched_wakeup", "sched:sched_waking"):
        pm = re.search(r"pid=(\d+).*?target_cpu=(\d+)", rest)
        if not pm:
            continue
        wtid, tcpu = int(pm.group(1)), int(pm.group(2))
        if wtid in receiver and wtid not in waking:
            wakeups += 1
            waking[wtid] = (t, cpu, role_of.get(tid, "other"))
    elif ev == "sched:sched_switch":
        pm = re.search(r"prev_pid=(\d+).*?prev_state=(\S+).*?next_pid=(\d+)", rest)
        if not pm:
            continue
        prev, state, nxt = int(pm.group(1)), pm.group(2), int(pm.group(3))
        if prev in receiver and state.startswith("R"):
            preempted += 1
            waking[prev] = (t, cpu, "preempted")
        if nxt in waking:
            t0, wcpu, waker = waking.pop(nxt)
            waits.append((t - t0) * 1e6)
            if waker != "preempted":
                wakers[waker] += 1
                if wcpu == cpu:
                    same_cpu += 1
        for w, (t0, wcpu, _) in waking.items():
            if nxt not in receiver:
                ran_meanwhile[role_of.get(nxt, "other")] += 1
waits.sort()
q = lambda p: waits[min(len(waits) - 1, int(p * len(waits)))] if waits else None
print(json.dumps({
    "mode": meta["mode"], "args": meta["args"], "rate": meta["rate"], "loss": round(meta["loss"], 2),
    "rcvbufErrors": meta["rcvbufErrors"], "wakeups": wakeups,
    "wakers": dict(wakers), "ranOnWakersCore": same_cpu, "preemptedWhileRunnable": preempted,
    "waitUs": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": waits[-1] if waits else None,
               "over1ms": sum(1 for w in waits if w > 1000)},
    "switchesToOthersWhileWaiting": dict(ran_meanwhile),
}))
