// The agent's errors: a code from the RPC contract (protocol.ts) and a one-line message that names
// the cause. Messages never hold a password, a token or an Authorization header.
import type { AgentErrorCode } from './protocol.js';

export const HTTP_STATUS: Record<AgentErrorCode, number> = {
  INVALID_ARGUMENT: 400,
  REFUSED: 400,
  UNAUTHORIZED: 401,
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  CONFLICT: 409,
  NOT_RUNNING: 409,
  VOLUME_FULL: 507,
  COUCHDB_ERROR: 502,
  STORAGE_ERROR: 502,
  BACKUP_FAILED: 500,
  INTERNAL: 500,
  UNREACHABLE: 503,
};

export class AgentError extends Error {
  constructor(
    readonly code: AgentErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'AgentError';
  }
  get status(): number {
    return HTTP_STATUS[this.code];
  }
}

export const invalid = (message: string) => new AgentError('INVALID_ARGUMENT', message);
export const notFound = (message: string) => new AgentError('NOT_FOUND', message);
