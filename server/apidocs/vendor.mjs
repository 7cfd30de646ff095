// Copies Swagger UI and ReDoc from node_modules into static/vendor/ (served by the Turnout server: no CDN).
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "static", "vendor");
const files = [
  ["swagger-ui-dist/swagger-ui-bundle.js", "swagger-ui-bundle.js"],
  ["swagger-ui-dist/swagger-ui.css", "swagger-ui.css"],
  ["swagger-ui-dist/LICENSE", "swagger-ui.LICENSE.txt"],
  ["redoc/bundles/redoc.standalone.js", "redoc.standalone.js"],
  ["redoc/LICENSE", "redoc.LICENSE.txt"],
];
mkdirSync(out, { recursive: true });
for (const [src, dst] of files) {
  copyFileSync(join(here, "node_modules", src), join(out, dst));
  console.log(`vendor: ${src} -> static/vendor/${dst}`);
}
