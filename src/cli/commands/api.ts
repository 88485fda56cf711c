// What the API client commands share: the connection options, and the words and parsers that make a
// catalogue option mean what it means for one command (cli/command.ts, `specialise`).
import { parsers } from '../../config/option.js';
import type { Specialised } from '../command.js';

/** The options every API command takes: where the API is, as whom, and --json. */
export const API = ['apiUrl', 'apiToken', 'apiProject', 'json'] as const;

/** A backup through the API: its name (which may hold spaces, as a schedule's backups' do) or its id. */
export const BACKUP_BY_NAME: Specialised = { parse: parsers.ref, description: 'Backup name or id' };

/** `--databases` of the user commands: access to existing databases, never creating them. */
export const ACCESS_DATABASES: Specialised = { description: 'Comma-separated names of existing databases the user gets access to' };
