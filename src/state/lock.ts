// One control-plane process per SQLite state directory (issue 14): a second `couchtrove server` on the same
// directory recovered the first one's tasks (failing its running backup and deleting it), started a second
// scheduler, and then failed to listen. The lock is SQLite's own exclusive lock (POSIX fcntl) on
// <state>/server.lock, held by an open connection for the life of the process: the kernel drops it when the
// process dies, however it dies, so there is no stale lock to clean up and no pid that a later process could
// reuse. <state>/server.pid only names the holder in the message a second process prints.
import * as fs from 'node:fs';
import * as path from 'node:path';
import SQLite from 'better-sqlite3';
import { CouchtroveError } from '../util/errors.js';
import { makeSqlitePrivate } from '../util/fs.js';

export class StateDirLockedError extends CouchtroveError {
  constructor(message: string) {
    super(message);
    this.name = 'StateDirLockedError';
  }
}

export interface StateDirLock {
  readonly file: string;
  release(): void;
}

/** Takes the state directory's lock, or throws StateDirLockedError naming the holder. */
export function lockStateDir(dir: string): StateDirLock {
  const file = path.join(dir, 'server.lock');
  const pidFile = path.join(dir, 'server.pid');
  let db: SQLite.Database | undefined;
  try {
    makeSqlitePrivate(file);
    db = new SQLite(file, { timeout: 0 });
    // In exclusive locking mode SQLite keeps its lock from the first write until the connection closes.
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
    db.exec('CREATE TABLE IF NOT EXISTS holder (pid INTEGER NOT NULL, started TEXT NOT NULL)');
    db.exec('DELETE FROM holder');
    db.prepare('INSERT INTO holder (pid, started) VALUES (?, ?)').run(process.pid, new Date().toISOString());
    db.exec('COMMIT');
  } catch (err) {
    db?.close();
    const code = (err as { code?: string }).code;
    if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') {
      const pid = /^\d+/.exec(readText(pidFile))?.[0];
      throw new StateDirLockedError(
        `another couchtrove server${pid ? ` (pid ${pid})` : ''} is using the state directory ${dir} (it holds the lock ${file}): ` +
        'stop it first, or start this one with another --state-dir');
    }
    throw new CouchtroveError(`cannot lock the state directory ${dir} (${file}): ${(err as Error).message}`);
  }
  fs.writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o600 });
  fs.chmodSync(pidFile, 0o600); // the mode above applies only to a file created now
  const held = db;
  let released = false;
  return {
    file,
    release: () => {
      if (released) return;
      released = true;
      if (readText(pidFile).trim() === String(process.pid)) fs.rmSync(pidFile, { force: true });
      held.close();
    },
  };
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
