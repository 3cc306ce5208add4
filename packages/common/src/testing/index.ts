export * from "./recording-socket.js";
