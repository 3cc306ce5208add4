#!/usr/bin/env node
/** Bin entry point of `fake-tcp-client`. */
import { runClientMain } from "./main-logic.js";

void runClientMain(process.argv.slice(2));
