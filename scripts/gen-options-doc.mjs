#!/usr/bin/env node
// Writes docs/options.md from the option catalogue and docs/configuration-parameters.md from the
// catalogue of CouchDB parameters (run after npm run build).
import { writeFileSync } from 'node:fs';
import { commands } from '../dist/src/cli/main.js';
import { renderOptionsDoc } from '../dist/src/cli/options-doc.js';
import { renderParametersDoc } from '../dist/src/cli/parameters-doc.js';

writeFileSync(new URL('../docs/options.md', import.meta.url), renderOptionsDoc(commands));
console.log('wrote docs/options.md');
writeFileSync(new URL('../docs/configuration-parameters.md', import.meta.url), renderParametersDoc());
console.log('wrote docs/configuration-parameters.md');
