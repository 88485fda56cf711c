// `couchtrove agent entry`: the container's entry point (image/Dockerfile). It starts `agent serve` with
// CAP_CHOWN, CAP_FOWNER and CAP_SETPCAP removed from its bounding set (util-linux setpriv; no way back for it or
// its children) and in the instance user's group (so it can give its own files that group without CAP_CHOWN),
// and keeps those capabilities itself only to answer the agent's few requests to give files to the instance
// (privileged.ts). It forwards stop signals and ends with the agent, so the container stops when the agent dies.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import type { Duplex } from 'node:stream';
import { servePrivileged, type PrivilegedPolicy } from './privileged.js';

/** The capabilities the agent itself never has in a container; docs/compute.md says what each is for. */
export const ENTRY_ONLY_CAPS = ['chown', 'fowner', 'setpcap'];

export interface EntryOptions extends PrivilegedPolicy {
  /** The agent's own arguments after `agent serve`. */
  serveArgs: string[];
  log: (line: string) => void;
}

export async function runEntry(o: EntryOptions): Promise<number> {
  const args = [
    `--bounding-set=${ENTRY_ONLY_CAPS.map((c) => `-${c}`).join(',')}`,
    '--inh-caps=-all',
    `--groups=${o.owner.gid}`,
    '--',
    process.execPath,
    process.argv[1] ?? '',
    'agent',
    'serve',
    ...o.serveArgs,
    '--privileged-fd',
    '3',
  ];
  const child = spawn('setpriv', args, { stdio: ['ignore', 'inherit', 'inherit', 'pipe'] });
  const stop = (sig: NodeJS.Signals) => () => child.kill(sig);
  process.on('SIGTERM', stop('SIGTERM'));
  process.on('SIGINT', stop('SIGINT'));
  const served = servePrivileged(child.stdio[3] as Duplex, o, o.log).catch((err: unknown) => o.log(`privileged: ${String(err)}`));
  const code = await new Promise<number>((resolve) => {
    child.once('error', (err) => {
      o.log(`cannot start the agent: ${err.message}`);
      resolve(127);
    });
    // A signal's death as a shell reports it (128 + its number): the container's exit code says what ended the agent.
    child.once('exit', (c, sig) => resolve(c ?? (sig ? 128 + (constants.signals[sig] ?? 0) : 1)));
  });
  (child.stdio[3] as Duplex | null)?.destroy();
  await served;
  return code;
}
