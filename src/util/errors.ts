// One line that names the cause, for the CLI's stderr and for task/agent error reports.

/** An error whose message is meant for the user as it is. */
export class CouchtroveError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CouchtroveError';
  }
}

export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EACCES' || code === 'ENOSPC' || code === 'EMFILE') {
      return `${err.message}`;
    }
    return err.message.split('\n')[0] ?? String(err);
  }
  return String(err);
}
