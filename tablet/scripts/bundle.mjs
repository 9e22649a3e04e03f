// One bundle, no resource from the internet: dist/ holds index.html, app.css and app.js (never committed).
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const tablet = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(tablet, "dist");
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
await build({
  entryPoints: [join(tablet, "src", "main.ts")],
  bundle: true,
  minify: true,
  sourcemap: true,
  target: ["chrome110", "safari16", "firefox115"],
  format: "esm",
  outfile: join(dist, "app.js"),
  logLevel: "warning",
});
for (const f of ["index.html", "app.css"]) copyFileSync(join(tablet, "static", f), join(dist, f));
console.log(`bundle: ${dist}`);
