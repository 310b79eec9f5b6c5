// Builds the JavaScript example interceptors into components, with both toolchains:
//   node build.mjs [OUT_DIR]        (default: dist; `npm run build` after `npm ci`)
// gives OUT_DIR/NAME.spidermonkey.wasm (ComponentizeJS) and OUT_DIR/NAME.quickjs.wasm
// (componentize-qjs). SLUICEGATE_JS_BIN names another directory holding both tools.

import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, "dist"));
const bin = process.env.SLUICEGATE_JS_BIN ?? join(here, "node_modules", ".bin");
const wit = join(here, "..", "..", "wit");
mkdirSync(out, { recursive: true });

// `drop` is a batch-world interceptor; the guards over text are text-world ones.
const worlds = { drop: "batch-interceptor", redact: "text-interceptor", "deny-phrases": "text-interceptor",
  "token-budget": "text-interceptor", bsn: "text-interceptor" };
for (const [name, world] of Object.entries(worlds)) {
  // ComponentizeJS resolves imports from the working directory; the guest does no HTTP, so the
  // wasi:http imports that it adds by default are left out.
  execFileSync(join(bin, "componentize-js"), [
    `${name}/${name}.js`, "--wit", wit, "--world-name", world,
    "--disable", "http", "fetch-event", "--out", join(out, `${name}.spidermonkey.wasm`),
  ], { cwd: here, stdio: ["ignore", "ignore", "inherit"] });
  execFileSync(join(bin, "componentize-qjs"), [
    "--wit", wit, "--world", world, "--js", join(here, name, `${name}.js`),
    "--module-root", here, "--sync", "--output", join(out, `${name}.quickjs.wasm`),
  ], { cwd: here, stdio: ["ignore", "ignore", "inherit"] });
  console.log(`built ${out}/${name}.spidermonkey.wasm and ${name}.quickjs.wasm`);
}
