import { afterEach, describe, expect, it } from "vitest";
import { twoStacks } from "./helpers.js";

describe("smoke", () => {
  let cleanup: (() => void) | null = null;
  afterEach(() => cleanup?.());
  it("handshakes and carries datagrams both ways", async () => {
    const { client, server, close } = twoStacks();
    cleanup = close;
    server.listen(4567);
    const [c, s] = await Promise.all([client.connect("192.168.201.2:4567"), server.accept()]);
    const got: string[] = [];
    s.onDatagram((d) => got.push(d.toString()));
    c.send(Buffer.from("hello"));
    c.send(Buffer.from("world"));
    const it = c[Symbol.asyncIterator]();
    s.send(Buffer.from("back"));
    expect((await it.next()).value.toString()).toBe("back");
    expect(got).toEqual(["hello", "world"]);
  });
});
