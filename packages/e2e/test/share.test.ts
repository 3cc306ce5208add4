/**
 * Port sharing (issue 12), end to end in the NAT rig: a real HTTP server (python3's
 * http.server) and our keyed server with --share on S's port 443. From the client side at
 * the same time: HTTP fetches all answered by the real server, byte-identical; a kernel-TCP
 * connect scan that sees what it sees without us; the keyed tunnel carrying echoed UDP. Then a
 * spoofed SYN flood at the port while both run, and the tunnel server stopped: the HTTP
 * service keeps working throughout and afterwards, and our rules are gone.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { realDeviceGate } from "../../../test-support/netns.js";
import { ADDR } from "../src/addresses.js";
import { destroyAllNamespaces } from "../src/namespace.js";
import { ManagedProcess } from "../src/process.js";
import { Rig } from "../src/rig.js";

const gate = realDeviceGate();
const PORT = 443;
const PAGE_BYTES = 20_000;
/** Ports the scan probes on S: the shared one, our default, and some closed ones. */
const SCAN_PORTS = [22, 80, 442, 443, 444, 4567, 8443];

/** A connect() scan from the namespace it runs in: port -> open | closed | filtered. */
const SCAN = `
import json, socket, sys
out = {}
for p in map(int, sys.argv[2].split(",")):
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect((sys.argv[1], p)); out[p] = "open"
    except ConnectionRefusedError: out[p] = "closed"
    except OSError: out[p] = "filtered"
    finally: s.close()
print(json.dumps(out))
`;

/** `count` fetches of the page from C, each hashed; prints one hash (or "fail") per line. */
function fetchScript(count: number): string {
  return `for i in $(seq ${count}); do curl -s --fail --max-time 5 http://${ADDR.tunnelServer}:${PORT}/page.bin | sha256sum | cut -c1-64 || echo fail; done`;
}

describe.skipIf(gate.skip)("port sharing (--share)", () => {
  let rig: Rig;
  let dir: string;
  let http: ManagedProcess;
  let pageHash: string;
  let keyFile: string;

  async function scan(): Promise<Record<string, string>> {
    const res = await rig.c.execAsync(
      "python3",
      ["-c", SCAN, ADDR.tunnelServer, SCAN_PORTS.join(",")],
      60_000,
    );
    return JSON.parse(res.stdout) as Record<string, string>;
  }

  async function fetches(count: number): Promise<string[]> {
    const res = await rig.c.execAsync("sh", ["-c", fetchScript(count)], 110_000);
    return res.stdout.trim().split("\n");
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "share-"));
    const page = randomBytes(PAGE_BYTES);
    writeFileSync(join(dir, "page.bin"), page);
    const { createHash } = await import("node:crypto");
    pageHash = createHash("sha256").update(page).digest("hex");
    keyFile = join(dir, "tunnel.key");
    writeFileSync(keyFile, `${randomBytes(32).toString("base64")}\n`, { mode: 0o600 });
    rig = await Rig.create({
      mode: "tunnel",
      serverPort: PORT,
      startTunnel: false,
      serverArgs: ["--key-file", keyFile, "--share"],
      clientArgs: ["--key-file", keyFile],
    });
    http = new ManagedProcess("http@S:443", rig.s, "python3", [
      "-u",
      "-m",
      "http.server",
      String(PORT),
      "--bind",
      "0.0.0.0",
      "--directory",
      dir,
    ]);
    await http.waitFor(/Serving HTTP/, 10_000);
  }, 60_000);

  afterAll(async () => {
    await http?.stop(2_000);
    await rig?.destroy();
    destroyAllNamespaces();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("keyed clients get the tunnel, everyone else the real service; stopping the tunnel leaves it working", async () => {
    const scanWithout = await scan();
    expect(scanWithout["443"]).toBe("open");
    expect((await fetches(5)).every((h) => h === pageHash)).toBe(true);

    await rig.startEcho();
    await rig.startServer();
    await rig.startClient();

    const [hashes, scanWith, echo] = await Promise.all([
      fetches(120),
      scan(),
      rig.udpEcho({ count: 1000, intervalMs: 5, size: 200 }),
    ]);
    const server = await rig.server!.requestStats();
    console.log(
      "share: during",
      JSON.stringify({ scanWithout, scanWith, echo: echo.totalReceived, server }),
    );
    expect(hashes.length).toBe(120);
    expect(hashes.filter((h) => h !== pageHash)).toEqual([]);
    expect(scanWith).toEqual(scanWithout);
    expect(echo.totalSent).toBe(1000);
    expect(echo.totalReceived).toBeGreaterThan(990);

    // A spoofed SYN flood at the shared port while both run.
    const [flood, floodHashes, floodEcho] = await Promise.all([
      rig.rawSend("syn-flood", 20_000),
      fetches(30),
      rig.udpEcho({ count: 500, intervalMs: 10, size: 200 }),
    ]);
    const cookies = rig.s.exec("nstat", ["-az", "TcpExtSyncookiesSent", "TcpExtListenOverflows"]);
    console.log("share: flood", JSON.stringify({ flood, echo: floodEcho.totalReceived }), cookies);
    expect(flood.sent).toBeGreaterThan(10_000);
    expect(floodHashes.filter((h) => h !== pageHash)).toEqual([]);
    expect(floodEcho.totalReceived).toBeGreaterThan(450);

    // Stop the tunnel server while fetches run: the service keeps answering, rules go.
    const during = fetches(40);
    await new Promise((r) => setTimeout(r, 300));
    const stats = await rig.server!.requestStats();
    rig.server!.signal("SIGTERM");
    expect(await rig.server!.waitExit(10_000)).toBe(true);
    const after = await during;
    expect(after.filter((h) => h !== pageHash)).toEqual([]);
    expect((await fetches(10)).filter((h) => h !== pageHash)).toEqual([]);
    const ruleset = rig.s.exec("nft", ["list", "ruleset"]);
    expect(ruleset).not.toContain("NFQUEUE");
    expect(ruleset).not.toContain("fake_tcp_");
    // One verdict per new connection: the two tunnel connections were admitted, and every
    // other SYN (fetches, scan, flood) was passed to the service.
    const verdicts = rig.server!.find((l) => l.json?.msg === "share verdicts stopped")[0]?.json;
    console.log("share: verdicts", JSON.stringify(verdicts), "server", JSON.stringify(stats));
    expect(verdicts?.admitted).toBe(2);
    expect(Number(verdicts?.passed)).toBeGreaterThan(20_000);
  }, 110_000);
});
