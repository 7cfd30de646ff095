// Copies the browser files the dashboard needs from node_modules into static/vendor/ (served by the server).
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "static", "vendor");
const files = [
  ["uplot/dist/uPlot.iife.min.js", "uPlot.iife.min.js"],
  ["uplot/dist/uPlot.min.css", "uPlot.min.css"],
  ["uplot/LICENSE", "uPlot.LICENSE.txt"],
];
mkdirSync(out, { recursive: true });
for (const [src, dst] of files) {
  copyFileSync(join(here, "node_modules", src), join(out, dst));
  console.log(`vendor: ${src} -> static/vendor/${dst}`);
}
