import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { commands } from '../../src/cli/main.js';
import { renderOptionsDoc } from '../../src/cli/options-doc.js';
import { renderParametersDoc } from '../../src/cli/parameters-doc.js';
import { catalogue } from '../../src/config/catalogue.js';

test('docs/options.md is generated from the current catalogue', () => {
  const file = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../docs/options.md');
  assert.equal(readFileSync(file, 'utf8'), renderOptionsDoc(commands), 'run: npm run build && node scripts/gen-options-doc.mjs');
});

test('docs/configuration-parameters.md is generated from the current catalogue of CouchDB parameters', () => {
  const file = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../docs/configuration-parameters.md');
  assert.equal(readFileSync(file, 'utf8'), renderParametersDoc(), 'run: npm run build && node scripts/gen-options-doc.mjs');
});

test('every flag is unique and every command option is in the catalogue', () => {
  const flags = Object.values(catalogue).map((o) => o.flag);
  assert.equal(new Set(flags).size, flags.length, `duplicate flags: ${flags.filter((f, i) => flags.indexOf(f) !== i).join(', ')}`);
  for (const c of commands) for (const n of [...c.required, ...c.optional]) assert.ok(catalogue[n], `${c.path.join(' ')}: ${String(n)}`);
});
