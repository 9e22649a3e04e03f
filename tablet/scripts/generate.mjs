// The TypeScript client from the service's contract: protoc (grpcio-tools, from the project's .venv) with
// @bufbuild/protoc-gen-es writes src/gen/ (never committed; `npm run build` writes it again).
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const tablet = resolve(here, "..");
const root = resolve(tablet, "..");
const python = process.env.PYTHON ?? join(root, ".venv", "bin", "python");
if (!existsSync(python)) {
  console.error(`generate: no Python at ${python} (run scripts/setup.sh first, or set PYTHON)`);
  process.exit(1);
}
const include = execFileSync(
  python,
  ["-c", "import grpc_tools, pathlib; print(pathlib.Path(grpc_tools.__file__).parent / '_proto')"],
  { encoding: "utf8" },
).trim();
const out = join(tablet, "src", "gen");
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
execFileSync(
  python,
  [
    "-m", "grpc_tools.protoc",
    `-I${join(root, "protos")}`,
    `-I${include}`,
    `--plugin=protoc-gen-es=${join(tablet, "node_modules", ".bin", "protoc-gen-es")}`,
    `--es_out=${out}`,
    "--es_opt=target=ts",
    "positioning/v1/positioning.proto",
  ],
  { stdio: "inherit" },
);
console.log(`generate: ${out}`);
