/**
 * Automatic host setup (`--auto-rules`, on by default): IP forwarding and the nftables table
 * of the program, each logged exactly, with their removal registered for exit.
 *
 * Only what is needed is changed, and it is changed back: forwarding is turned on only where
 * it is off, and (IPv6) interfaces that accept router advertisements keep accepting them
 * (`accept_ra=2`). What an instance changed is recorded in the namespace's own nftables, in
 * the table `inet fake-tcp-restore` (a set per kind of change), so that the last instance of
 * the programs to exit puts every such setting back, whichever instance changed it: an
 * instance that exits while another still runs leaves forwarding on for it.
 */
import { UsageError } from "./errors.js";
import type { Cleanup } from "./lifecycle.js";
import type { Logger } from "./logger.js";
import {
  type NftCommand,
  NftTable,
  nftFailure,
  nftNotFound,
  programTables,
  type RulesSpec,
  ruleLines,
  runNft,
} from "./nft.js";
import { DEFAULT_SHARE_QUEUE, queueRuleLine, ShareQueueRules } from "./share-rules.js";
import {
  disableForwarding,
  enableForwarding,
  FORWARDING_SETTINGS,
  IPV4_FORWARDING,
  IPV6_FORWARDING,
  keepAcceptingRouterAdvertisements,
  readSysctl,
  restoreAcceptRouterAdvertisements,
} from "./sysctl.js";
import { interfaceExists } from "./tunnel.js";

/** Options of {@link setUpHost}. */
export interface HostSetupOptions {
  readonly rules: RulesSpec;
  /** Enable IPv6 forwarding too (only when IPv6 is in use). */
  readonly ipv6Forwarding: boolean;
  readonly logger: Logger;
  /** Undo steps are added here (the table's removal, settings put back). */
  readonly cleanup: Cleanup;
  /** How to run nft (default `["nft"]`). */
  readonly nft?: NftCommand;
  /**
   * True when this program has already created its TUN device. Otherwise an existing device
   * of that name means another instance runs, and its table must not be touched.
   */
  readonly deviceOpened?: boolean;
  /**
   * Port sharing (server rules with `share`): the NFQUEUE number of the verdict program,
   * whose queueing rule is added after the table (and removed before it).
   */
  readonly shareQueue?: number;
}

/** The table that records what the programs changed on the host, for the last one to undo. */
export const RESTORE_TABLE = "fake-tcp-restore";

/**
 * Enables forwarding and installs the program's nft table (replacing a stale one), logging
 * each change; registers their undoing with `cleanup`. Throws a `UsageError` when nft is
 * missing or not permitted, or when the table belongs to an instance that is running.
 */
export async function setUpHost(options: HostSetupOptions): Promise<NftTable> {
  const { logger } = options;
  const nft = options.nft ?? ["nft"];
  const table = new NftTable(options.rules, nft);
  const tun = options.rules.tun;
  // Check first: the table of a running instance (its TUN device exists) is never replaced.
  const exists = await table.exists();
  if (exists && options.deviceOpened !== true && interfaceExists(tun)) {
    throw new UsageError(
      `--tun: an interface named "${tun}" already exists with its nft table inet ${table.name} (another instance running?); stop it or choose another --tun`,
    );
  }

  // From here on every change is undone on a failed start as on exit.
  options.cleanup.add("settings changed by the programs", () => restoreHostSettings(nft, logger));
  const settings = options.ipv6Forwarding ? [IPV4_FORWARDING, IPV6_FORWARDING] : [IPV4_FORWARDING];
  for (const setting of settings) {
    if (setting === IPV6_FORWARDING && (await readSysctl(setting.path)) !== "1") {
      // Before forwarding goes on: not one router advertisement is ignored.
      const kept = await keepAcceptingRouterAdvertisements();
      if (kept.length > 0) {
        await recordChanges(nft, "accept_ra", kept);
        logger.info(
          { sysctl: "net.ipv6.conf.*.accept_ra=2", interfaces: kept },
          "router advertisements kept while forwarding (restored at exit)",
        );
      }
    }
    const changed = await enableForwarding(setting);
    if (changed) await recordChanges(nft, "forwarding", [setting.key]);
    logger.info(
      { sysctl: `${setting.sysctl}=1`, changed },
      changed ? "forwarding enabled (restored at exit)" : "forwarding already enabled",
    );
  }

  // Rules last.
  const { staleRemoved } = await table.apply();
  if (staleRemoved) {
    logger.warn({ table: `inet ${table.name}` }, "removed stale nft table left by an earlier run");
  }
  options.cleanup.add(`nft table inet ${table.name}`, async () => {
    const removed = await table.remove();
    logger.info({ table: `inet ${table.name}`, removed }, "nft rules removed");
  });
  logger.info({ table: `inet ${table.name}`, rules: ruleLines(options.rules) }, "nft rules added");
  const rules = options.rules;
  if (rules.role === "server" && rules.share === true) {
    const families: (4 | 6)[] = [];
    if (rules.tunnel4) families.push(4);
    if (rules.tunnel6) families.push(6);
    const spec = {
      tun,
      port: rules.port,
      queue: options.shareQueue ?? DEFAULT_SHARE_QUEUE,
      families,
    };
    const queueRules = new ShareQueueRules(spec, nft.slice(0, -1));
    options.cleanup.add("share NFQUEUE rule", async () => {
      const removed = await queueRules.remove();
      logger.info({ removed }, "share NFQUEUE rule removed");
    });
    const stale = await queueRules.apply();
    if (stale > 0)
      logger.warn({ stale }, "removed stale share NFQUEUE rule left by an earlier run");
    logger.info(
      { rules: families.map((family) => queueRuleLine(spec, family)) },
      "share NFQUEUE rule added",
    );
  }
  return table;
}

/** Adds `names` to the set `kind` of the restore table (creating what is missing). */
async function recordChanges(nft: NftCommand, kind: string, names: readonly string[]) {
  const elements = names.map((name) => `"${name}"`).join(", ");
  const script =
    `add table inet ${RESTORE_TABLE}\n` +
    `add set inet ${RESTORE_TABLE} ${kind} { type ifname; }\n` +
    `add element inet ${RESTORE_TABLE} ${kind} { ${elements} }\n`;
  const result = await runNft(nft, ["-f", "-"], script);
  if (result.code !== 0) throw nftFailure(`recording changes in ${RESTORE_TABLE}`, result.stderr);
}

/** The restore record: kind -> names. Empty when there is none. */
async function readRecord(nft: NftCommand): Promise<Record<string, string[]>> {
  const result = await runNft(nft, ["-j", "list", "table", "inet", RESTORE_TABLE]);
  if (result.code !== 0) {
    if (nftNotFound(result.stderr)) return {};
    throw nftFailure(`listing ${RESTORE_TABLE}`, result.stderr);
  }
  const record: Record<string, string[]> = {};
  const parsed = JSON.parse(result.stdout) as {
    nftables?: { set?: { name: string; elem?: unknown[] } }[];
  };
  for (const item of parsed.nftables ?? []) {
    if (item.set === undefined) continue;
    record[item.set.name] = (item.set.elem ?? []).filter((e): e is string => typeof e === "string");
  }
  return record;
}

/**
 * When no other instance of the programs runs in this namespace (no `fake_tcp_*` table is
 * left), puts back every setting the programs changed and removes the record.
 */
export async function restoreHostSettings(nft: NftCommand, logger: Logger): Promise<void> {
  const others = await programTables(nft);
  if (others.length > 0) {
    const record = await readRecord(nft);
    if (Object.keys(record).length > 0) {
      logger.info({ tables: others }, "settings left as they are: another instance still runs");
    }
    return;
  }
  const record = await readRecord(nft);
  for (const key of record.forwarding ?? []) {
    const setting = FORWARDING_SETTINGS[key];
    if (setting === undefined) continue;
    const restored = await disableForwarding(setting);
    logger.info({ sysctl: `${setting.sysctl}=0`, restored }, "forwarding restored");
  }
  const acceptRa = record.accept_ra ?? [];
  if (acceptRa.length > 0) {
    const restored = await restoreAcceptRouterAdvertisements(acceptRa);
    logger.info(
      { sysctl: "net.ipv6.conf.*.accept_ra=1", interfaces: restored },
      "router advertisement setting restored",
    );
  }
  if (Object.keys(record).length > 0) {
    const result = await runNft(nft, ["delete", "table", "inet", RESTORE_TABLE]);
    if (result.code !== 0 && !nftNotFound(result.stderr)) {
      throw nftFailure(`deleting ${RESTORE_TABLE}`, result.stderr);
    }
  }
}
