/** The parts of the e2e rig the benchmark uses, and where the repository is. */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export { destroyAllNamespaces, Rig, SERVER_MAIN } from "fake-tcp-e2e";

/** The repository root (this module lives in packages/bench/src or dist). */
export const REPO_ROOT_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
