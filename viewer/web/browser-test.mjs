#!/usr/bin/env node
// Browser test of the web viewer (viewer/dist, built by viewer/build-web.sh) in headless Chromium.
//
//   node viewer/web/browser-test.mjs [report.json ...]    (default: fixtures/reports/*.json)
//
// Serves viewer/dist and copies of the reports from a temporary folder on 127.0.0.1, then for each page:
//   - index.html?url=<report>.json: waits for the console line `mdiff-viewer: loaded <name>`, checks
//     document.title is `mdiff — <name>`, takes a screenshot and checks the canvas was drawn (many colours);
//   - a truncated (corrupt) report and a missing one: waits for `mdiff-viewer: error: ...`;
//   - index.html with no report: the app starts and draws, with no error;
//   - `mdiff serve <first report> --web-dir <dist> --port 0` (the binary in MDIFF_BIN): the address it prints
//     opens the viewer with the report loaded, drawn, with the right title (a screenshot of the overview).
// Any uncaught exception or Rust panic on a page fails it. Exits non-zero with a message on failure.
//
// Environment:
//   MDIFF_WEB_DIST        the built viewer, default viewer/dist
//   MDIFF_BIN             the mdiff binary for the `mdiff serve` page, default target/debug/mdiff
//   BROWSER_TEST_OUT      where screenshots go, default target/browser-test
//   CHROMIUM              the browser, default /usr/bin/chromium
//   BROWSER_TEST_TIMEOUT  seconds per page, default 60
import { chromium } from "playwright-core";
import { createServer } from "node:http";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, copyFileSync, cpSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { inflateSync } from "node:zlib";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const dist = resolve(process.env.MDIFF_WEB_DIST ?? join(root, "viewer", "dist"));
const outDir = resolve(process.env.BROWSER_TEST_OUT ?? join(root, "target", "browser-test"));
const browserPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const mdiffBin = resolve(process.env.MDIFF_BIN ?? join(root, "target", "debug", "mdiff"));
const timeoutMs = Number(process.env.BROWSER_TEST_TIMEOUT ?? 60) * 1000;
// A drawn egui report has hundreds of colours (text antialiasing, plots); a blank or
// "loading…" page has a handful to a few dozen.
const MIN_COLOURS = 100;

// The flags of shared TOOLCHAIN.md: software WebGL2 through SwiftShader. No WebGPU flags.
const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--enable-unsafe-swiftshader",
];

function fail(msg) {
  console.error(`browser-test: FAIL: ${msg}`);
  process.exit(1);
}
const log = (msg) => console.log(`browser-test: ${msg}`);

// ---------------------------------------------------------------------------------------------
// Inputs

for (const f of ["index.html", "mdiff_viewer.js", "mdiff_viewer_bg.wasm"]) {
  if (!existsSync(join(dist, f))) fail(`${join(dist, f)} is missing: run viewer/build-web.sh first`);
}
if (!existsSync(mdiffBin)) fail(`no mdiff at ${mdiffBin} for the \`mdiff serve\` page: cargo build -p diff-cli, or set MDIFF_BIN`);
if (!existsSync(browserPath)) fail(`no browser at ${browserPath} (apt-get install chromium, or set CHROMIUM)`);

let reports = process.argv.slice(2).map((p) => resolve(p));
if (reports.length === 0) {
  const dir = join(root, "fixtures", "reports");
  if (existsSync(dir)) {
    reports = readdirSync(dir).filter((f) => f.endsWith(".json")).sort().map((f) => join(dir, f));
  }
  if (reports.length === 0) fail(`no reports given and none in ${dir}`);
}

// Serve a temporary folder holding the built viewer and copies of the reports.
const site = mkdtempSync(join(tmpdir(), "mdiff-browser-test-"));
cpSync(dist, site, { recursive: true });
const served = []; // { file, name }
for (const r of reports) {
  if (!existsSync(r)) fail(`no report at ${r}`);
  let name = basename(r);
  for (let i = 2; served.some((s) => s.name === name); i++) name = `${basename(r, ".json")}-${i}.json`;
  copyFileSync(r, join(site, name));
  served.push({ file: r, name });
}
const firstBytes = readFileSync(reports[0]);
writeFileSync(join(site, "corrupt-report.json"), firstBytes.subarray(0, Math.floor(firstBytes.length / 2)));
writeFileSync(join(site, "not-a-report.json"), '{"hello": "world", "numbers": [1, 2, 3]}\n');

// ---------------------------------------------------------------------------------------------
// A static server (what `python3 -m http.server` does, with the right MIME types, on a free port).

const MIME = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm", ".json": "application/json", ".png": "image/png",
};
const server = createServer((req, res) => {
  const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
  const file = resolve(site, "." + (path.endsWith("/") ? path + "index.html" : path));
  if (!file.startsWith(site + sep) || !existsSync(file)) {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    return;
  }
  res.writeHead(200, { "content-type": MIME[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
  res.end(readFileSync(file));
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const base = `http://127.0.0.1:${server.address().port}/`;
log(`serving ${dist} and ${served.length} report(s) at ${base}`);

// ---------------------------------------------------------------------------------------------
// PNG → number of distinct colours (8-bit RGB/RGBA, non-interlaced: what Chromium writes).

function pngColours(buf) {
  if (buf.readUInt32BE(0) !== 0x89504e47) throw new Error("not a PNG");
  let pos = 8, width = 0, height = 0, bitDepth = 0, colourType = 0, interlace = 0;
  const idat = [];
  while (pos < buf.length) {
    const len = buf.readUInt32BE(pos);
    const type = buf.toString("latin1", pos + 4, pos + 8);
    const data = buf.subarray(pos + 8, pos + 8 + len);
    if (type === "IHDR") {
      width = data.readUInt32BE(0); height = data.readUInt32BE(4);
      bitDepth = data[8]; colourType = data[9]; interlace = data[12];
    } else if (type === "IDAT") idat.push(data);
    else if (type === "IEND") break;
    pos += 12 + len;
  }
  const bpp = { 2: 3, 6: 4 }[colourType];
  if (bitDepth !== 8 || !bpp || interlace) throw new Error(`unsupported PNG (depth ${bitDepth}, type ${colourType})`);
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * bpp;
  const prev = Buffer.alloc(stride), cur = Buffer.alloc(stride);
  const colours = new Set();
  for (let y = 0; y < height; y++) {
    const off = y * (stride + 1), filter = raw[off];
    for (let i = 0; i < stride; i++) {
      const x = raw[off + 1 + i], a = i >= bpp ? cur[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
      let v;
      switch (filter) {
        case 0: v = x; break;
        case 1: v = x + a; break;
        case 2: v = x + b; break;
        case 3: v = x + ((a + b) >> 1); break;
        case 4: {
          const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
          v = x + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
          break;
        }
        default: throw new Error(`bad PNG filter ${filter}`);
      }
      cur[i] = v & 0xff;
    }
    for (let i = 0; i < stride; i += bpp) colours.add((cur[i] << 16) | (cur[i + 1] << 8) | cur[i + 2]);
    cur.copy(prev);
  }
  return colours.size;
}

// ---------------------------------------------------------------------------------------------
// The pages

mkdirSync(outDir, { recursive: true });
const browser = await chromium.launch({ executablePath: browserPath, headless: true, args: CHROMIUM_ARGS });
const failures = [];

/** Opens `query` under `at` (default: the test's own server) on a fresh page and runs `check(page, ctx)`;
 * records a failure with the console log. */
async function runPage(label, query, check, at = base) {
  const t0 = Date.now();
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const lines = [];
  const waiters = [];
  const errors = [];
  const onLine = (text) => {
    lines.push(text);
    for (const w of waiters) if (w.match(text)) w.ok(text);
  };
  page.on("console", (m) => {
    const text = m.text();
    onLine(m.type() === "log" ? text : `[${m.type()}] ${text}`);
    if (/panicked at|RuntimeError: unreachable/.test(text)) errors.push(`Rust panic: ${text.split("\n")[0]}`);
  });
  page.on("pageerror", (e) => { errors.push(`uncaught: ${e.message}`); onLine(`[pageerror] ${e.message}`); });
  page.on("requestfailed", (r) => onLine(`[requestfailed] ${r.url()} ${r.failure()?.errorText}`));
  const ctx = {
    /** Resolves with the first console line matching `re` (seen before or after the call). */
    waitForLine(re) {
      const seen = lines.find((l) => re.test(l));
      if (seen) return Promise.resolve(seen);
      return new Promise((ok) => waiters.push({ match: (l) => re.test(l), ok }));
    },
    errors,
    lines,
    shot: join(outDir, `${label}.png`),
  };
  let timer;
  try {
    const timeout = new Promise((_, no) => {
      timer = setTimeout(() => no(new Error(`timed out after ${timeoutMs / 1000} s`)), timeoutMs);
    });
    const work = (async () => {
      await page.goto(at + query, { waitUntil: "load" });
      await check(page, ctx);
    })();
    work.catch(() => {}); // on a timeout it fails later, when the page closes
    await Promise.race([work, timeout]);
    if (errors.length) throw new Error(errors.join("; "));
    log(`ok   ${label} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    await page.screenshot({ path: ctx.shot }).catch(() => {});
    failures.push(label);
    console.error(`browser-test: FAIL ${label} (${query}): ${e.message}`);
    console.error(`  screenshot: ${ctx.shot}`);
    console.error(`  console:${lines.length ? "" : " (nothing)"}`);
    for (const l of lines.slice(-40)) console.error(`    ${l.split("\n").slice(0, 6).join("\n    ")}`);
  } finally {
    clearTimeout(timer);
    await context.close();
  }
}

/** Screenshots until the page shows at least MIN_COLOURS colours (egui draws a few frames in). */
async function waitDrawn(page, ctx) {
  let n = 0;
  for (;;) {
    const png = await page.screenshot({ path: ctx.shot });
    n = pngColours(png);
    if (n >= MIN_COLOURS) return n;
    await page.waitForTimeout(500);
  }
}

/** Checks a page opened on report `name`: loaded (console line), titled after it, drawn. */
const loadsReport = (name) => async (page, ctx) => {
  const line = await ctx.waitForLine(/^mdiff-viewer: (loaded|error:) /);
  if (!line.startsWith("mdiff-viewer: loaded ")) throw new Error(`load failed: ${line}`);
  const source = line.slice("mdiff-viewer: loaded ".length).trim();
  if (!source.includes(basename(name, ".json"))) throw new Error(`loaded "${source}", expected a name with ${name}`);
  const title = await page.title();
  if (title !== `mdiff — ${source}`) throw new Error(`document.title is "${title}", expected "mdiff — ${source}"`);
  if (await page.locator("#status").count()) throw new Error(`the "loading…" text is still on the page`);
  const colours = await waitDrawn(page, ctx);
  log(`     ${name}: "${title}", ${colours} colours -> ${ctx.shot}`);
};

for (const { name } of served) {
  await runPage(`report-${basename(name, ".json")}`, `index.html?url=${encodeURIComponent(name)}`, loadsReport(name));
}

for (const [label, file] of [["corrupt", "corrupt-report.json"], ["not-a-report", "not-a-report.json"], ["missing", "missing-report.json"]]) {
  await runPage(`error-${label}`, `index.html?url=${file}`, async (page, ctx) => {
    const line = await ctx.waitForLine(/^mdiff-viewer: (loaded|error:) /);
    if (!line.startsWith("mdiff-viewer: error: ")) throw new Error(`a broken report loaded: ${line}`);
    await page.waitForTimeout(300);
    await page.screenshot({ path: ctx.shot });
    log(`     ${file}: ${line.split("\n")[0]}`);
  });
}

await runPage("no-report", "", async (page, ctx) => {
  const colours = await waitDrawn(page, ctx);
  const bad = ctx.lines.find((l) => /^mdiff-viewer: error/.test(l));
  if (bad) throw new Error(`unexpected: ${bad}`);
  log(`     start page: ${colours} colours -> ${ctx.shot}`);
});

// `mdiff serve`: the address it prints opens the viewer with the report, served from the same bundle.
const serveReport = reports[0];
const mdiff = spawn(mdiffBin, ["serve", serveReport, "--web-dir", dist, "--port", "0"], { stdio: ["ignore", "pipe", "pipe"] });
let serveStderr = "";
mdiff.stderr.on("data", (d) => { serveStderr += d; });
const serveUrl = await new Promise((ok) => {
  const timer = setTimeout(() => ok(null), timeoutMs);
  mdiff.on("exit", () => { clearTimeout(timer); ok(null); });
  createInterface({ input: mdiff.stdout }).on("line", (line) => {
    const m = /^Open:\s+(http:\/\/127\.0\.0\.1:\d+\/\S*)$/.exec(line.trim());
    if (m) { clearTimeout(timer); ok(m[1]); }
  });
});
if (!serveUrl) {
  failures.push("mdiff-serve");
  console.error(`browser-test: FAIL mdiff-serve: no address printed by ${mdiffBin} serve (stderr: ${serveStderr.trim()})`);
} else {
  log(`mdiff serve: ${serveUrl}`);
  await runPage(`serve-${basename(serveReport, ".json")}`, "", loadsReport(basename(serveReport)), serveUrl);
}
mdiff.kill("SIGINT");

await browser.close();
server.close();
rmSync(site, { recursive: true, force: true });

if (failures.length) fail(`${failures.length} page(s) failed: ${failures.join(", ")}`);
log(`all pages passed; screenshots in ${outDir}`);
