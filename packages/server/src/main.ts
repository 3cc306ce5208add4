#!/usr/bin/env node
/** Bin entry point of `fake-tcp-server`. */
import { runServerMain } from "./main-logic.js";

void runServerMain(process.argv.slice(2));
