// Unit tests of the app's pure modules: bundled with esbuild (TypeScript), run with node:test.
import { build } from "esbuild";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const tablet = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const out = mkdtempSync(join(tmpdir(), "tablet-test-"));
const entries = readdirSync(join(tablet, "test")).filter((f) => f.endsWith(".test.ts"));
await build({
  entryPoints: entries.map((f) => join(tablet, "test", f)),
  bundle: true,
  platform: "node",
  format: "esm",
  outdir: out,
  outExtension: { ".js": ".mjs" },
  logLevel: "warning",
});
const r = spawnSync(process.execPath, ["--test", ...entries.map((f) => join(out, f.replace(/\.ts$/, ".mjs")))], {
  stdio: "inherit",
});
rmSync(out, { recursive: true, force: true });
process.exit(r.status ?? 1);
