// `couchtrove agent ...`: the commands that work on one CouchDB host, without the control plane.
import type { AnyCommand } from '../../command.js';
import { backupCommand } from './backup.js';
import { restoreCommand } from './restore.js';
import { archiveCommand } from './archive.js';
import { verifyCommand } from './verify.js';
import { listCommand } from './list.js';
import { deleteCommand } from './delete.js';
import { keygenCommand } from './keygen.js';
import { expireCommand } from './expire.js';
import { serveCommand } from './serve.js';
import { entryCommand } from './entry.js';
import { statusCommand } from './status.js';
import { databaseCreateCommand, databaseDeleteCommand, databaseListCommand } from './database.js';
import { userCreateCommand, userDeleteCommand, userGrantCommand, userListCommand, userPasswordCommand, userRevokeCommand, userShowCommand } from './user.js';
import { rootDisableCommand, rootEnableCommand, rootShowCommand } from './root.js';
import { replicaDetachCommand, replicaFollowCommand, replicaSourceCommand, replicaStatusCommand, replicaSyncCommand } from './replica.js';

export const agentCommands: AnyCommand[] = [
  backupCommand,
  restoreCommand,
  archiveCommand,
  verifyCommand,
  listCommand,
  deleteCommand,
  keygenCommand,
  expireCommand,
  serveCommand,
  entryCommand,
  statusCommand,
  databaseCreateCommand,
  databaseListCommand,
  databaseDeleteCommand,
  userCreateCommand,
  userListCommand,
  userShowCommand,
  userDeleteCommand,
  userGrantCommand,
  userRevokeCommand,
  userPasswordCommand,
  rootEnableCommand,
  rootShowCommand,
  rootDisableCommand,
  replicaSourceCommand,
  replicaFollowCommand,
  replicaSyncCommand,
  replicaStatusCommand,
  replicaDetachCommand,
];
