export * from "./address.js";
export * from "./bytes.js";
export * from "./checksum.js";
export * from "./errors.js";
export * from "./ipv4.js";
export * from "./ipv6.js";
export * from "./segment.js";
export * from "./tcp.js";
