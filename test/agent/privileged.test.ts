// The privileged parent of a container's agent (src/agent/privileged.ts): it gives files to the instance user
// only inside the volume, never through a link, never to anyone else. Plays a confused or taken-over agent's
// requests over a real socket, as root (chown needs it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { privilegedOver, servePrivileged } from '../../src/agent/privileged.js';

const root = process.getuid?.() === 0;

test('agent entry gives files only inside the volume, only to the instance user, never through a link', { skip: root ? false : 'needs root (chown)' }, async () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-privileged-'));
  const volume = path.join(base, 'volume');
  const outside = path.join(base, 'outside');
  const owner = { uid: 5984, gid: 5984 };
  fs.mkdirSync(path.join(volume, 'data'), { recursive: true });
  fs.mkdirSync(path.join(volume, 'agent', 'home'), { recursive: true });
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(outside, 'secret'), 'x', { mode: 0o600 });
  fs.symlinkSync(outside, path.join(volume, 'link'));
  const sock = path.join(base, 'socket');
  const logged: string[] = [];
  const server = net.createServer((s) => void servePrivileged(s, { owner, within: volume }, (l) => logged.push(l)));
  await new Promise<void>((r) => server.listen(sock, r));
  const client = net.connect(sock);
  await new Promise<void>((r) => client.once('connect', r));
  const priv = privilegedOver(client);
  try {
    await priv.give(path.join(volume, 'data'), owner, true);
    const data = fs.statSync(path.join(volume, 'data'));
    assert.deepEqual([data.uid, data.gid, data.mode & 0o7777], [5984, 5984, 0o700]);
    await priv.giveFile(path.join(volume, 'agent', 'home', '.erlang.cookie'), 'c00kie', 0o400, owner);
    const cookie = fs.lstatSync(path.join(volume, 'agent', 'home', '.erlang.cookie'));
    assert.deepEqual([cookie.uid, cookie.mode & 0o7777], [5984, 0o400]);

    const refused: Array<[string, Promise<void>, RegExp]> = [
      ['outside the volume', priv.give(outside, owner, true), /not a path inside/],
      ['.. out of the volume', priv.give(`${volume}/data/../../outside`, owner, true), /not a path inside/],
      ['the volume itself', priv.give(volume, owner, true), /not a path inside/],
      ['through a link', priv.give(path.join(volume, 'link'), owner, true), /is a link/],
      ['below a link', priv.giveFile(path.join(volume, 'link', 'new'), 'x', 0o400, owner), /is a link/],
      ['to another user', priv.give(path.join(volume, 'data'), { uid: 0, gid: 0 }, false), /given only to 5984:5984/],
      ['a readable file', priv.giveFile(path.join(volume, 'agent', 'home', 'x'), 'x', 0o644, owner), /0600 or narrower/],
      ['into the instance\'s own directory', priv.giveFile(path.join(volume, 'data', 'x'), 'x', 0o400, owner), /not the agent's directory/],
    ];
    for (const [what, p, message] of refused) await assert.rejects(p, message, what);
    // Nothing outside changed owner.
    for (const f of [outside, path.join(outside, 'secret')]) assert.equal(fs.statSync(f).uid, 0, `${f} changed owner`);
    assert.equal(fs.existsSync(path.join(outside, 'new')), false);
    assert.ok(logged.length >= refused.length, 'each refusal is logged');
  } finally {
    client.destroy();
    server.close();
    fs.rmSync(base, { recursive: true, force: true });
  }
});
