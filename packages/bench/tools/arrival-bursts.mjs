// How densely datagrams reach the application on B (kernel arrival timestamps), direct and
// through the tunnel at each --udp-run value: a paced Python sender on A, a Python receiver
// with SO_TIMESTAMPNS and a 4 MiB buffer on B (it must not lose: only arrival times count).
// Run as root after `pnpm run build`:
//   node packages/bench/tools/arrival-bursts.mjs [MODES=direct,tunnel:64,tunnel:8,tunnel:1] [RATES=100,300]
// Prints one JSON line per path and rate (see arrival-bursts.py for the figures).
import { fileURLToPath } from "node:url";
import { ADDR, Rig } from "../../e2e/dist/index.js";

const script = fileURLToPath(new URL("./arrival-bursts.py", import.meta.url));
const modes = (process.env.MODES ?? "direct,tunnel:64,tunnel:8,tunnel:1").split(",");
const rates = (process.env.RATES ?? "100,300").split(",").map(Number);
const seconds = 3;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

for (const mode of modes) {
  const cap = mode.split(":")[1];
  const args = cap ? ["--udp-run", cap] : [];
  const rig = await Rig.create({
    mode: mode.startsWith("tunnel") ? "tunnel" : "direct",
    clientArgs: args,
    serverArgs: args,
  });
  try {
    for (const rate of rates) {
      const port = String(rig.appPort);
      const receiver = rig.b.spawn("python3", [script, "recv", port, String(seconds)]);
      let out = "";
      receiver.stdout.on("data", (d) => {
        out += d;
      });
      for (let i = 0; i < 200 && !out.includes("ready"); i++) await sleep(50);
      // One datagram first: it opens the tunnel's connection before the measured stream.
      rig.a.exec("python3", [script, "send", ADDR.appServer, port, "1", "0.2"]);
      await sleep(300);
      rig.a.exec("python3", [script, "send", ADDR.appServer, port, String(rate), String(seconds)]);
      await new Promise((resolve) => receiver.on("exit", resolve));
      const result = out.split("\n").find((l) => l.startsWith("{")) ?? "{}";
      console.log(JSON.stringify({ mode, rate, ...JSON.parse(result) }));
    }
  } finally {
    await rig.destroy();
  }
}
