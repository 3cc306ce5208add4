export * from "./device.js";
