// Output for people (issue 23, item 5): nested objects as one line per field, never raw JSON; and what
// `log tail --follow` prints from two overlapping tails of a log.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { details } from '../../src/api/client.js';
import { newLines } from '../../src/cli/commands/log/index.js';

test('details: nested objects as dotted lines, named entries a line each, references and datastores on one line', () => {
  const text = details({
    id: 'i1',
    archive: { enabled: true, window: { from: '2026-12-07T04:00:00.000Z', to: '2026-12-07T04:05:00.000Z' }, cuts: 12 },
    replication: { role: 'replica', errors: [], databases: [{ name: 'orders', state: 'running', lag: 0 }, { name: 'logs', state: 'error', lag: null, error: 'gone' }] },
    task: { kind: 'instance.resize', step: 'restart' },
    flavor: { id: '2', name: 'small', links: [{ href: 'x', rel: 'self' }] },
    datastore: { type: 'couchdb', version: '3.5' },
    replicas: [{ id: 'r1', links: [] }, { id: 'r2', links: [] }],
    links: [{ href: 'x', rel: 'self' }],
  });
  assert.deepEqual(text.split('\n').map((l) => l.replace(/\s+/, ' ')), [
    'id i1',
    'archive.enabled true',
    'archive.window.from 2026-12-07T04:00:00.000Z',
    'archive.window.to 2026-12-07T04:05:00.000Z',
    'archive.cuts 12',
    'replication.role replica',
    'replication.errors',
    'replication.databases.orders state running, lag 0',
    'replication.databases.logs state error, lag , error gone',
    'task.kind instance.resize',
    'task.step restart',
    'flavor small (2)',
    'datastore couchdb 3.5',
    'replicas r1, r2',
    '',
  ]);
  assert.doesNotMatch(text, /[{[]"/);
});

test('log tail --follow: only the lines after those already printed; all of a log that shares none', () => {
  const log = Array.from({ length: 30 }, (_, i) => `[notice] 2026-12-07T04:00:${String(i).padStart(2, '0')} line ${i}`);
  // The first tail was 5 lines; the next reads a longer window that holds them and what came after.
  assert.deepEqual(newLines(log.slice(10, 15), log.slice(0, 20)), log.slice(15, 20));
  assert.deepEqual(newLines(log.slice(0, 20), log.slice(0, 20)), []);
  assert.deepEqual(newLines([], log.slice(0, 3)), log.slice(0, 3));
  // Rotated (or more than a window written between two polls): nothing in common, every line is new.
  assert.deepEqual(newLines(log.slice(0, 12), log.slice(20, 30)), log.slice(20, 30));
});
