"""Breaks a `perf script` of the tunnel programs (see cpu-profile.mjs) down by where the CPU
went: kernel work by the system call it runs under (a TUN write runs the kernel's forwarding
through the rig's namespaces in the writer's context), and user work by kind (JIT-compiled
JavaScript, V8 builtins, N-API/V8 glue, GC, compiler, libuv, libc, the addon).
Usage: perf script -i perf-100-A→B.data | python3 cpu-breakdown.py
"""
import collections
import re
import sys


def frames_of(block):
    out = []
    for line in block[1:]:
        m = re.match(r"([0-9a-f]+) (.*) \((.*)\)$", line.strip())
        if m:
            out.append((m.group(2), m.group(3)))
    return out


KERNEL = [
    (("tun_chr_write_iter", "tun_get_user"), "kernel: TUN write (+ forwarding in the writer's context)"),
    (("tun_chr_read_iter", "tun_do_read"), "kernel: TUN read"),
    (("__sys_sendmmsg", "__sys_sendmsg", "udp_sendmsg"), "kernel: UDP send (+ delivery to the receiver)"),
    (("do_recvmmsg", "__sys_recvmsg", "udp_recvmsg"), "kernel: UDP receive"),
    (("epoll",), "kernel: epoll_wait"),
]


def classify(frames):
    if not frames:
        return "unknown"
    leaf, dso = frames[0]
    if dso == "[kernel.kallsyms]":
        names = " ".join(s for s, d in frames if d == "[kernel.kallsyms]")
        for keys, name in KERNEL:
            if any(k in names for k in keys):
                return name
        if "do_syscall_64" in names or "entry_SYSCALL" in names:
            return "kernel: system call entry/exit, other calls"
        return "kernel: other (interrupts, scheduler, faults)"
    if dso.startswith("/tmp/perf-") or leaf.startswith("JS:"):
        return "user: JavaScript (JIT code)"
    if "tun.node" in dso:
        return "user: addon (tun.node)"
    if re.search(r"Heap|Scaveng|MarkCompact|ConcurrentMarking|Sweeper|Marking|Evacuat", leaf):
        return "user: GC"
    if re.search(r"compiler::|maglev|Maglev|baseline|Compile|Parser", leaf):
        return "user: V8 compiler"
    if leaf.startswith("Builtins_"):
        return "user: V8 builtins (interpreter, ICs, typed arrays)"
    if re.search(r"napi|v8impl|HandleApiCall|FunctionCallback|v8::Function|Invoke|Execution::|"
                 r"CallbackScope|MakeCallback|AsyncHooks|AsyncWrap|HandleScope|v8::Context|node::", leaf):
        return "user: N-API / V8 / Node callback glue"
    if leaf.startswith("uv_") or leaf.startswith("uv__"):
        return "user: libuv"
    if "libc" in dso:
        return "user: libc"
    if dso == "[vdso]":
        return "user: clock (vdso)"
    return "user: other V8/Node"


def main():
    blocks, cur = [], []
    for line in sys.stdin:
        if line.strip() == "":
            if cur:
                blocks.append(cur)
            cur = []
        else:
            cur.append(line.rstrip("\n"))
    if cur:
        blocks.append(cur)
    counts = collections.Counter(classify(frames_of(b)) for b in blocks)
    n = sum(counts.values()) or 1
    for name, count in counts.most_common():
        print(f"{100 * count / n:5.1f} %  {name}")
    kernel = sum(c for k, c in counts.items() if k.startswith("kernel"))
    print(f"{100 * kernel / n:5.1f} %  kernel in all ({n} samples)")


main()
