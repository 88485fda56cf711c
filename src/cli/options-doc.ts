// docs/options.md, generated from the option catalogue and the command table (scripts/gen-options-doc.mjs
// writes it; a test checks that it is current).
import { catalogue, type OptionSpec } from '../config/catalogue.js';
import type { AnyCommand } from './command.js';

export function renderOptionsDoc(commands: AnyCommand[]): string {
  const lines = [
    '# couchtrove options',
    '',
    'Generated from the option catalogue (`src/config/options/*.ts`) by `node scripts/gen-options-doc.mjs`; do not edit by hand.',
    'A flag given on the command line wins over its environment variable, which wins over the default.',
    '',
    '## Commands',
    '',
    '| command | what it does | options (required in bold) |',
    '|---|---|---|',
  ];
  for (const c of commands) {
    const flag = (n: keyof typeof catalogue): string => `--${catalogue[n].flag}${n === c.positional ? ' (or as the argument)' : ''}`;
    const opts = [...c.required.map((n) => `**${flag(n)}**`), ...c.optional.map(flag)];
    lines.push(`| \`couchtrove ${c.path.join(' ')}\` | ${c.summary} | ${opts.join(' ')} |`);
  }
  const groups = new Map<string, OptionSpec<unknown>[]>();
  for (const spec of Object.values(catalogue) as OptionSpec<unknown>[]) {
    groups.set(spec.group, [...(groups.get(spec.group) ?? []), spec]);
  }
  for (const [group, specs] of groups) {
    lines.push('', `## ${group}`, '', '| flag | environment | default | meaning |', '|---|---|---|---|');
    for (const s of specs) {
      lines.push(`| \`--${s.flag}${s.arg ? ` ${s.arg}` : ''}\` | ${s.env ? `\`${s.env}\`` : ''} | ${s.default !== undefined ? `\`${s.default}\`` : ''} | ${s.description} |`);
    }
  }
  return `${lines.join('\n')}\n`;
}
