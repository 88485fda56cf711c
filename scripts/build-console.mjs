#!/usr/bin/env node
// Builds the web console (console/) into dist/console: one ES module bundle (Preact, JSX through
// esbuild), one stylesheet and index.html, served by `couchtrove server` at /console/ (src/api/console.ts).
// Run by `npm run build` and `npm ci` (prepare); the output is never committed.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';

const out = 'dist/console';
// Type check first (console/tsconfig.json: DOM types, Preact's JSX): esbuild strips types without checking.
const tsc = spawnSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'console/tsconfig.json'], { stdio: 'inherit' });
if (tsc.status !== 0) process.exit(tsc.status ?? 1);
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await build({
  entryPoints: { app: 'console/src/main.tsx' },
  outdir: out,
  bundle: true,
  format: 'esm',
  target: ['es2022'],
  minify: true,
  sourcemap: true,
  jsx: 'automatic',
  jsxImportSource: 'preact',
  legalComments: 'none',
  logLevel: 'warning',
});
copyFileSync('console/style.css', `${out}/app.css`);
copyFileSync('console/index.html', `${out}/index.html`);
console.log(`console built into ${out}`);
