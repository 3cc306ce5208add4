/**
 * The mark of forged data: every datagram payload the rig's injector forges starts with these
 * bytes, so the applications at both ends can count forgeries that got through a tunnel.
 */
export const FORGED_MARKER = Buffer.from("FORGED-BY-THE-E2E-INJECTOR");

/** True when `datagram` carries the mark anywhere (a forgery may arrive cut or shifted). */
export function isForged(datagram: Buffer): boolean {
  return datagram.indexOf(FORGED_MARKER) >= 0;
}
