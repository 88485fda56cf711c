// The catalogue: every option of every component (see option.ts for what an entry is).
import type { OptionSpec } from './option.js';
import { backupOptions } from './options/backup.js';
import { serverOptions } from './options/server.js';
import { agentOptions } from './options/agent.js';
import { replicationOptions } from './options/replication.js';
import { scheduleOptions } from './options/schedule.js';
import { archiveOptions } from './options/archive.js';
import { computeOptions } from './options/compute.js';

export { UsageError, parsers, CODECS, type Codec, type OptionSpec } from './option.js';

/**
 * The catalogue: every option of every component, by the name the code uses. Each component keeps
 * its entries in options/<component>.ts; `flag` is what users type, and must be unique.
 */
export const catalogue = {
  ...backupOptions,
  ...serverOptions,
  ...agentOptions,
  ...replicationOptions,
  ...scheduleOptions,
  ...archiveOptions,
  ...computeOptions,
} satisfies Record<string, OptionSpec<unknown>>;

export type Catalogue = typeof catalogue;
