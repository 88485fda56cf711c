// CouchDB's ini files (local.ini and friends): read, and edit in place keeping every other line.
// CouchDB reads `[section]` headers and `key = value` lines; lines starting with ';' are comments,
// and a value is cut at the first ' ;' (an inline comment). Runtime changes are written to the last
// file of the chain and plain-text admin passwords are replaced by hashes in place, so an edit must
// change the existing line or section, never append a second `[admins]`.

type Line =
  | { kind: 'section'; name: string; raw: string }
  | { kind: 'entry'; section: string; key: string; value: string; raw: string }
  | { kind: 'other'; raw: string };

export interface IniProblem {
  line: number;
  text: string;
}

const SECTION_RE = /^\[([^\]]*)\]\s*$/;

/** The value CouchDB sees: trimmed, cut at an inline ' ;' comment. */
function cleanValue(raw: string): string {
  const cut = /[ \t];/.exec(raw);
  return (cut ? raw.slice(0, cut.index) : raw).trim();
}

export class IniFile {
  private constructor(private readonly lines: Line[], readonly problems: IniProblem[]) {}

  static parse(text: string): IniFile {
    const lines: Line[] = [];
    const problems: IniProblem[] = [];
    let section = '';
    text.split(/\r?\n/).forEach((raw, i) => {
      const t = raw.trim();
      if (t === '' || t.startsWith(';') || t.startsWith('#')) {
        lines.push({ kind: 'other', raw });
        return;
      }
      if (t.startsWith('[')) {
        const m = SECTION_RE.exec(t);
        if (!m || m[1]!.trim() === '') {
          problems.push({ line: i + 1, text: raw });
          lines.push({ kind: 'other', raw });
          return;
        }
        section = m[1]!.trim();
        lines.push({ kind: 'section', name: section, raw });
        return;
      }
      const eq = raw.indexOf('=');
      if (eq <= 0 || section === '') {
        problems.push({ line: i + 1, text: raw });
        lines.push({ kind: 'other', raw });
        return;
      }
      lines.push({ kind: 'entry', section, key: raw.slice(0, eq).trim(), value: cleanValue(raw.slice(eq + 1)), raw });
    });
    // A trailing newline leaves one empty line; keep the text round-trip exact.
    return new IniFile(lines, problems);
  }

  static empty(): IniFile {
    return IniFile.parse('');
  }

  get(section: string, key: string): string | undefined {
    let found: string | undefined;
    for (const l of this.lines) if (l.kind === 'entry' && l.section === section && l.key === key) found = l.value;
    return found;
  }

  /** Effective content: later entries win. Empty values are kept (CouchDB treats them as unset). */
  sections(): Map<string, Map<string, string>> {
    const out = new Map<string, Map<string, string>>();
    for (const l of this.lines) {
      if (l.kind === 'section' && !out.has(l.name)) out.set(l.name, new Map());
      if (l.kind === 'entry') {
        let s = out.get(l.section);
        if (!s) out.set(l.section, (s = new Map()));
        s.set(l.key, l.value);
      }
    }
    return out;
  }

  /** Sets key in place: the existing line if there is one, else at the end of the section's first block. */
  set(section: string, key: string, value: string): void {
    const rendered = `${key} = ${value}`;
    let last = -1;
    this.lines.forEach((l, i) => {
      if (l.kind === 'entry' && l.section === section && l.key === key) last = i;
    });
    if (last >= 0) {
      this.lines[last] = { kind: 'entry', section, key, value, raw: rendered };
      // Earlier duplicates would be shadowed anyway; drop them so the file says one thing.
      for (let i = last - 1; i >= 0; i--) {
        const l = this.lines[i]!;
        if (l.kind === 'entry' && l.section === section && l.key === key) this.lines.splice(i, 1);
      }
      return;
    }
    const header = this.lines.findIndex((l) => l.kind === 'section' && l.name === section);
    if (header < 0) {
      while (this.lines.length > 0 && isBlank(this.lines[this.lines.length - 1]!)) this.lines.pop();
      if (this.lines.length > 0) this.lines.push({ kind: 'other', raw: '' });
      this.lines.push({ kind: 'section', name: section, raw: `[${section}]` });
      this.lines.push({ kind: 'entry', section, key, value, raw: rendered });
      return;
    }
    // Insert after the last entry of this block (before trailing blank lines and the next header).
    let at = header + 1;
    for (let i = header + 1; i < this.lines.length; i++) {
      const l = this.lines[i]!;
      if (l.kind === 'section') break;
      if (l.kind === 'entry') at = i + 1;
    }
    this.lines.splice(at, 0, { kind: 'entry', section, key, value, raw: rendered });
  }

  /** Removes every line of section/key; true if there was one. */
  delete(section: string, key: string): boolean {
    const before = this.lines.length;
    for (let i = this.lines.length - 1; i >= 0; i--) {
      const l = this.lines[i]!;
      if (l.kind === 'entry' && l.section === section && l.key === key) this.lines.splice(i, 1);
    }
    return this.lines.length !== before;
  }

  toString(): string {
    const text = this.lines.map((l) => l.raw).join('\n');
    return text.endsWith('\n') || text === '' ? text : `${text}\n`;
  }
}

function isBlank(l: Line): boolean {
  return l.kind === 'other' && l.raw.trim() === '';
}

/** Merges a chain of ini files: later files win, as CouchDB reads COUCHDB_INI_FILES. */
export function mergeIni(files: IniFile[]): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  for (const f of files) {
    for (const [name, entries] of f.sections()) {
      let s = out.get(name);
      if (!s) out.set(name, (s = new Map()));
      for (const [k, v] of entries) s.set(k, v);
    }
  }
  return out;
}
