/**
 * Drives `fixtures/tun-agent.mjs` (a TUN device in a test namespace) from a test: sends
 * commands, collects the JSON-line events it reports, waits for events with a deadline.
 */
import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { Netns } from "../../../test-support/netns.js";

export const AGENT = fileURLToPath(new URL("./fixtures/tun-agent.mjs", import.meta.url));

// biome-ignore lint/suspicious/noExplicitAny: events are free-form JSON from the child
export type AgentEvent = Record<string, any>;

export class Agent {
  readonly events: AgentEvent[] = [];
  readonly stderr: string[] = [];
  private nextId = 1;
  private waiters: { pred: (e: AgentEvent) => boolean; resolve: (e: AgentEvent) => void }[] = [];

  private constructor(readonly child: ChildProcess) {
    let pending = "";
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      pending += chunk;
      let nl = pending.indexOf("\n");
      while (nl >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        nl = pending.indexOf("\n");
        if (line.trim() === "") continue;
        const event = JSON.parse(line) as AgentEvent;
        this.events.push(event);
        this.waiters = this.waiters.filter((w) => {
          if (!w.pred(event)) return true;
          w.resolve(event);
          return false;
        });
      }
    });
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => this.stderr.push(chunk));
  }

  /** Starts an agent in `ns` with device options `opts` and waits until the device is open. */
  static async start(
    ns: Netns,
    opts: Record<string, unknown>,
  ): Promise<{ agent: Agent; open: AgentEvent }> {
    const child = ns.spawn(process.execPath, [AGENT, "serve", JSON.stringify(opts)], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    const agent = new Agent(child);
    const open = await agent.waitFor((e) => e.ev === "open", 10_000, "device open");
    return { agent, open };
  }

  /** Resolves with the first event (already seen or future) matching `pred`. */
  waitFor(pred: (e: AgentEvent) => boolean, timeoutMs: number, what: string): Promise<AgentEvent> {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      // One exit listener per pending wait, removed when the wait settles (tests wait often).
      const onExit = (code: number | null) => {
        if (this.waiters.some((w) => w.resolve === done))
          reject(
            new Error(`agent exited (${code}) before ${what}; stderr: ${this.stderr.join("")}`),
          );
      };
      const timer = setTimeout(() => {
        this.child.off("exit", onExit);
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}; stderr: ${this.stderr.join("")}`,
          ),
        );
      }, timeoutMs);
      const done = (e: AgentEvent) => {
        clearTimeout(timer);
        this.child.off("exit", onExit);
        resolve(e);
      };
      this.waiters.push({ pred, resolve: done });
      this.child.once("exit", onExit);
    });
  }

  /** Runs one command in the agent and returns its result (throws on an agent-side error). */
  async request(op: string, args: Record<string, unknown> = {}, timeoutMs = 10_000) {
    const id = this.nextId++;
    this.child.stdin?.write(`${JSON.stringify({ id, op, ...args })}\n`);
    const result = await this.waitFor((e) => e.ev === "result" && e.id === id, timeoutMs, op);
    if (result.error) throw Object.assign(new Error(result.error.message), result.error);
    return result.value;
  }

  /** Packets the agent has read so far, as buffers, with their queue index. */
  packets(): { q: number; data: Buffer }[] {
    return this.events
      .filter((e) => e.ev === "pkt")
      .map((e) => ({ q: e.q as number, data: Buffer.from(e.hex as string, "hex") }));
  }

  /** Closes the device and waits for the agent to exit. */
  async close(): Promise<AgentEvent | undefined> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return undefined;
    await this.request("exit");
    const bye = await this.waitFor((e) => e.ev === "bye", 5_000, "bye");
    this.child.stdin?.end();
    await new Promise((resolve) => {
      if (this.child.exitCode !== null) resolve(null);
      else this.child.once("exit", resolve);
    });
    return bye;
  }
}
