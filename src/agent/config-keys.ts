// Configuration overrides ('section/key' = value) as the agent receives them (ini text). Only keys of
// the published catalogue (src/config/couchdb-parameters.ts) are accepted, whatever the control plane
// sent: the agent is the last line before CouchDB, so it checks again (defence in depth). The catalogue
// also says which keys CouchDB applies live through /_node/_local/_config and which need a restart.
import { checkIniValue, couchdbParameter, notSettableReason } from '../config/couchdb-parameters.js';
import { AgentError, invalid } from './errors.js';

export type KeyKind = 'live' | 'restart';

export interface ParsedOverride {
  section: string;
  key: string;
  /** null: back to CouchDB's default (only where the caller allows it). */
  value: string | null;
  kind: KeyKind;
}

const SECTION_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const KEY_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/** Parses and checks one override; throws INVALID_ARGUMENT or REFUSED naming the key. */
export function parseOverride(name: string, value: unknown, allowReset = false): ParsedOverride {
  const slash = name.indexOf('/');
  const section = slash > 0 ? name.slice(0, slash) : '';
  const key = slash > 0 ? name.slice(slash + 1) : '';
  if (!SECTION_RE.test(section) || !KEY_RE.test(key)) {
    throw invalid(`invalid configuration key ${JSON.stringify(name.slice(0, 200))}: expected section/key (letters, digits, _ . -)`);
  }
  const p = couchdbParameter(name);
  if (!p) throw new AgentError('REFUSED', `configuration key ${name} cannot be overridden: ${notSettableReason(name)}`);
  const kind: KeyKind = p.restartRequired ? 'restart' : 'live';
  if (value === null && allowReset) return { section, key, value: null, kind };
  if (typeof value !== 'string') throw invalid(`value of ${name} must be a string`);
  const problem = checkIniValue(p, value);
  if (problem) throw invalid(`invalid value ${JSON.stringify(value.slice(0, 200))} for ${name}: ${problem}`);
  return { section, key, value, kind };
}

/** Checks every override before any is applied; returns them in a stable order. */
export function parseOverrides(overrides: unknown, allowEmpty = false, allowReset = false): ParsedOverride[] {
  if (!overrides || typeof overrides !== 'object' || Array.isArray(overrides)) throw invalid('overrides must be an object of "section/key": "value"');
  const entries = Object.entries(overrides as Record<string, unknown>);
  if (entries.length === 0 && !allowEmpty) throw invalid('no configuration overrides given');
  return entries.sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => parseOverride(k, v, allowReset));
}
