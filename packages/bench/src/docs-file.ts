/**
 * Appending a run to docs/benchmarks.md: inside the "## Tunnel (pnpm bench)" section (created
 * with its description when missing), after the runs already there, leaving every other
 * section as it is.
 */

export const SECTION_TITLE = "## Tunnel (pnpm bench)";

/** The section's description, written once when the section is created. */
export const SECTION_INTRO = `Command: \`pnpm bench [--label NAME] [--quick] [--keyed] [--buffers 4m[,default]] [--udp-run N,...]\` (builds, then runs
\`node packages/bench/dist/tunnel-bench.js\` as root; about 10 minutes with both buffer sizes, plus about 4 per \`--udp-run\` value;
a watchdog sized to the options tears everything down and exits non-zero past that). It builds the e2e namespace NAT rig
(\`packages/e2e\`: app client A and tunnel client C behind router R, tunnel server S with DNAT,
app server B) twice, in the same run: "direct" (R lets UDP through: the reference path) and
"tunnel" (R's WAN passes only TCP; UDP rides fake-tcp-client → fake-tcp-server). All traffic
stays inside the rig's namespaces. Each run appends a subsection below, a chart
\`docs/bench-<date>-<label>.svg\` and every step's raw figures in the \`.json\` beside it.

How it measures:

- **Highest rate under 1 % loss**: iperf3 UDP with 1400-byte datagrams (\`-l 1400\`), A→B and
  B→A (\`-R\`), loss and rate measured by the receiver. Bounded sweep per path and direction:
  start at 100 Mbit/s, double while loss < 1 %, then bisect between the best good and the
  lowest bad rate (3 steps); at most 11 steps of 4 s, and no step starts after 2 minutes (a
  hung iperf3 run, killed after 24 s and repeated once, counts against that). The first bad rate is measured twice
  (the second result counts), since other work on the machine can spoil a single step. The
  sweep also stops when iperf3 itself cannot send the offered rate ("sender-limited": then
  the figure is iperf3's limit, not the path's). The table gives the highest delivered rate
  among the steps under 1 % loss, and the **headline is tunnel/direct of that rate**: every
  process shares the same 2 cores, so only ratios within one run compare well across runs.
- **CPU per gigabit**: utime + stime of fake-tcp-client and fake-tcp-server from
  \`/proc/PID/stat\` (all threads of each process) across that iperf3 step, divided by the gigabits the receiver got; also at the sweep's fixed first rate
  (100 Mbit/s), which compares across runs whatever their highest rate. Each iperf3 run is a
  new flow, so a step includes one tunnel connection set-up.
- **Echo RTT**: a probe on A sends 32-byte datagrams at a fixed interval to an echo on B and
  times each echo with the monotonic clock (probe and echo are Node programs, so the figures
  include their event loops); p50 and p99, idle and alongside an iperf3 A→B load. The last
  column is the latency the tunnel adds (tunnel − direct). Since 2026-12-01 the probe first
  sends 20 warm-up probes that are left out: each probe run is a new UDP peer, whose first
  datagram waits for the tunnel's handshake (10-30 ms, connection set-up, not round-trip time;
  the run's JSON keeps it as \`firstUs\`). Earlier runs' p99 included those.
- **Receiver socket buffers** (\`--buffers 4m,default\`, the default; \`--buffers 4m\` skips the
  second): every path sweeps each direction twice, with iperf3's \`-w 4M\` at both ends and
  with no \`-w\` (the kernel's \`net.core.rmem_default\`, 208 KiB: about 95 queued 1400-byte
  datagrams, 1 ms at 1 Gbit/s, what an application that never sizes its socket gets). Every
  step records the receiving namespace's \`RcvbufErrors\` (/proc/net/snmp in B for A→B, in A
  for B→A: datagrams the receiving application's full buffer dropped), and those of C and S
  (the tunnel programs' own sockets). The "Receiver socket buffers" table lists both sizes,
  the errors of every step and the loaded echo p99 with the latency the tunnel adds.
  \`--udp-run 64,1\` measures the tunnel once more per value, both programs started with
  \`--udp-run N\` (rate sweeps and echo latency), in the same run and table.
- **Concurrent flows**: A opens that many UDP sockets (source ports); each sends a 64-byte
  datagram to the echo on B, all at once, and every socket still unanswered resends each
  250 ms (a datagram can be lost while its flow is being set up; "datagrams sent" counts the
  resends); set-up rate = flows / time until every flow got its first echo (15 s at most).
  In tunnel mode each flow is a fake TCP connection (handshake through R), and the programs
  are restarted just before, so RSS "before" is a freshly started program.
`;

/** Returns the new file text with `runSection` appended to the tunnel section. */
export function appendRun(existing: string | null, runSection: string): string {
  let text = existing ?? "# Benchmarks\n";
  if (!text.endsWith("\n")) text += "\n";
  const start = findSectionStart(text);
  if (start < 0) {
    return `${text}\n${SECTION_TITLE}\n\n${SECTION_INTRO}\n${runSection}`;
  }
  // The section ends where the next level-2 heading starts (or at the end of the file).
  const afterTitle = start + SECTION_TITLE.length;
  const next = text.slice(afterTitle).search(/^## /m);
  const end = next < 0 ? text.length : afterTitle + next;
  const before = text.slice(0, end).replace(/\n*$/, "\n");
  const after = text.slice(end);
  return `${before}\n${runSection}${after ? `\n${after}` : ""}`;
}

function findSectionStart(text: string): number {
  const m = /^## Tunnel \(pnpm bench\)[ \t]*$/m.exec(text);
  return m ? m.index : -1;
}
