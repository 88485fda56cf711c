#!/usr/bin/env node
// Writes docs/options.md from the option catalogue (run after npm run build).
import { writeFileSync } from 'node:fs';
import { commands } from '../dist/src/cli/main.js';
import { renderOptionsDoc } from '../dist/src/cli/options-doc.js';

writeFileSync(new URL('../docs/options.md', import.meta.url), renderOptionsDoc(commands));
console.log('wrote docs/options.md');
