/**
 * Automatic host setup (`--auto-rules`, on by default): IP forwarding and the nftables table
 * of the program, each logged exactly, with their removal registered for exit.
 */
import type { Cleanup } from "./lifecycle.js";
import type { Logger } from "./logger.js";
import { type NftCommand, NftTable, type RulesSpec, ruleLines } from "./nft.js";
import { enableForwarding, IPV4_FORWARDING, IPV6_FORWARDING } from "./sysctl.js";

/** Options of {@link setUpHost}. */
export interface HostSetupOptions {
  readonly rules: RulesSpec;
  /** Enable IPv6 forwarding too (only when IPv6 is in use: it turns off accepting RAs). */
  readonly ipv6Forwarding: boolean;
  readonly logger: Logger;
  /** Undo steps are added here (the table's removal). */
  readonly cleanup: Cleanup;
  /** How to run nft (default `["nft"]`). */
  readonly nft?: NftCommand;
}

/**
 * Enables forwarding and installs the program's nft table (replacing a stale one), logging
 * each change; registers the table's removal with `cleanup`. Throws a `UsageError` when nft
 * is missing or not permitted.
 */
export async function setUpHost(options: HostSetupOptions): Promise<NftTable> {
  const { logger } = options;
  const table = new NftTable(options.rules, options.nft);
  const { staleRemoved } = await table.apply();
  if (staleRemoved) {
    logger.warn({ table: `inet ${table.name}` }, "removed stale nft table left by an earlier run");
  }
  options.cleanup.add(`nft table inet ${table.name}`, async () => {
    const removed = await table.remove();
    logger.info({ table: `inet ${table.name}`, removed }, "nft rules removed");
  });
  logger.info({ table: `inet ${table.name}`, rules: ruleLines(options.rules) }, "nft rules added");
  const settings = options.ipv6Forwarding ? [IPV4_FORWARDING, IPV6_FORWARDING] : [IPV4_FORWARDING];
  for (const setting of settings) {
    const changed = await enableForwarding(setting);
    logger.info(
      { sysctl: `${setting.sysctl}=1`, changed },
      changed ? "forwarding enabled (left enabled at exit)" : "forwarding already enabled",
    );
  }
  return table;
}
