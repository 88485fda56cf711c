// Schema migrations, in order. Each is written with Kysely's schema builder only, so it runs the same
// on SQLite and PostgreSQL. Never edit a released migration: add the next one.
import type { Kysely, Migration } from 'kysely';

const text = 'text' as const;

export const migrations: Record<string, Migration> = {
  '0001_initial': {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema.createTable('projects').ifNotExists()
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('created', text, (c) => c.notNull())
        .execute();
      await db.schema.createTable('flavors').ifNotExists()
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('ram', 'integer', (c) => c.notNull())
        .addColumn('vcpus', 'integer', (c) => c.notNull())
        .execute();
      await db.schema.createTable('datastore_versions').ifNotExists()
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('datastore', text, (c) => c.notNull())
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('active', 'integer', (c) => c.notNull())
        .addColumn('is_default', 'integer', (c) => c.notNull())
        .addColumn('couchdb_home', text)
        .execute();
      await db.schema.createTable('instances').ifNotExists()
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('project_id', text, (c) => c.notNull())
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('status', text, (c) => c.notNull())
        .addColumn('flavor_id', text, (c) => c.notNull())
        .addColumn('volume_size', 'integer', (c) => c.notNull())
        .addColumn('datastore', text, (c) => c.notNull())
        .addColumn('datastore_version', text, (c) => c.notNull())
        .addColumn('configuration_id', text)
        .addColumn('replica_of', text)
        .addColumn('host', text)
        .addColumn('port', 'integer')
        .addColumn('agent_port', 'integer')
        .addColumn('agent_pid', 'integer')
        .addColumn('epmd_port', 'integer')
        .addColumn('instance_dir', text)
        .addColumn('engine', text)
        .addColumn('fault', text)
        .addColumn('task_id', text)
        .addColumn('created', text, (c) => c.notNull())
        .addColumn('updated', text, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('instances_project').ifNotExists().on('instances').columns(['project_id', 'created', 'id']).execute();
      await db.schema.createTable('backups').ifNotExists()
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('project_id', text, (c) => c.notNull())
        .addColumn('instance_id', text)
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('description', text)
        .addColumn('status', text, (c) => c.notNull())
        .addColumn('parent_id', text)
        .addColumn('location', text)
        .addColumn('size_bytes', 'bigint')
        .addColumn('data_bytes', 'bigint')
        .addColumn('files', 'bigint')
        .addColumn('checksum', text)
        .addColumn('datastore', text, (c) => c.notNull())
        .addColumn('datastore_version', text, (c) => c.notNull())
        .addColumn('progress', text)
        .addColumn('fail_reason', text)
        .addColumn('task_id', text)
        .addColumn('created', text, (c) => c.notNull())
        .addColumn('updated', text, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('backups_project').ifNotExists().on('backups').columns(['project_id', 'created', 'id']).execute();
      await db.schema.createTable('tasks').ifNotExists()
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('project_id', text, (c) => c.notNull())
        .addColumn('kind', text, (c) => c.notNull())
        .addColumn('instance_id', text)
        .addColumn('backup_id', text)
        .addColumn('status', text, (c) => c.notNull())
        .addColumn('params', text, (c) => c.notNull())
        .addColumn('step', text)
        .addColumn('error', text)
        .addColumn('attempts', 'integer', (c) => c.notNull())
        .addColumn('deadline', text)
        .addColumn('heartbeat', text, (c) => c.notNull())
        .addColumn('created', text, (c) => c.notNull())
        .addColumn('updated', text, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('tasks_status').ifNotExists().on('tasks').columns(['status', 'created']).execute();
      await db.schema.createTable('configurations').ifNotExists()
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('project_id', text, (c) => c.notNull())
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('description', text)
        .addColumn('values', text, (c) => c.notNull())
        .addColumn('datastore', text, (c) => c.notNull())
        .addColumn('datastore_version', text, (c) => c.notNull())
        .addColumn('created', text, (c) => c.notNull())
        .addColumn('updated', text, (c) => c.notNull())
        .execute();
    },
    async down(db: Kysely<unknown>): Promise<void> {
      for (const t of ['configurations', 'tasks', 'backups', 'instances', 'datastore_versions', 'flavors', 'projects']) {
        await db.schema.dropTable(t).ifExists().execute();
      }
    },
  },
  '0002_backup_schedules': {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema.createTable('backup_schedules').ifNotExists()
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('project_id', text, (c) => c.notNull())
        .addColumn('instance_id', text, (c) => c.notNull())
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('description', text)
        .addColumn('pattern', text, (c) => c.notNull())
        .addColumn('incremental', 'integer', (c) => c.notNull())
        .addColumn('keep_last', 'integer')
        .addColumn('keep_daily', 'integer')
        .addColumn('keep_weekly', 'integer')
        .addColumn('next_run', text, (c) => c.notNull())
        .addColumn('last_run', text)
        .addColumn('last_result', text)
        .addColumn('created', text, (c) => c.notNull())
        .addColumn('updated', text, (c) => c.notNull())
        .execute();
      await db.schema.createTable('backup_schedule_runs').ifNotExists()
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('schedule_id', text, (c) => c.notNull())
        .addColumn('created', text, (c) => c.notNull())
        .execute();
    },
    async down(db: Kysely<unknown>): Promise<void> {
      await db.schema.dropTable('backup_schedule_runs').ifExists().execute();
      await db.schema.dropTable('backup_schedules').ifExists().execute();
    },
  },
  // Several control-plane processes on one PostgreSQL (issue 18): a task belongs to the process that runs
  // it while its lease holds; leases(name) is the leader lease for periodic work one process does.
  '0003_task_leases': {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema.alterTable('tasks').addColumn('owner', text).execute();
      await db.schema.alterTable('tasks').addColumn('lease_until', text).execute();
      await db.schema.createIndex('tasks_lease').ifNotExists().on('tasks').columns(['status', 'lease_until']).execute();
      // A schedule run and a backup request look up the instance's running backups: without it, a scan of
      // every backup each time (a thousand at the top of the hour over 10,000 backups in bench/fleet.ts).
      await db.schema.createIndex('backups_instance').ifNotExists().on('backups').columns(['instance_id', 'status']).execute();
      await db.schema.createTable('leases').ifNotExists()
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('owner', text, (c) => c.notNull())
        .addColumn('expires', text, (c) => c.notNull())
        .execute();
    },
    async down(db: Kysely<unknown>): Promise<void> {
      await db.schema.dropTable('leases').ifExists().execute();
      await db.schema.dropIndex('backups_instance').ifExists().execute();
      await db.schema.dropIndex('tasks_lease').ifExists().execute();
      await db.schema.alterTable('tasks').dropColumn('lease_until').execute();
      await db.schema.alterTable('tasks').dropColumn('owner').execute();
    },
  },
  // Recovery by instance and time (issue 23): deleted instances stay findable while their archive or
  // backups are kept; a restored instance says what it came from.
  '0004_recovery': {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema.alterTable('instances').addColumn('restored_from', text).execute();
      await db.schema.createTable('deleted_instances').ifNotExists()
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('project_id', text, (c) => c.notNull())
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('flavor_id', text, (c) => c.notNull())
        .addColumn('volume_size', 'integer', (c) => c.notNull())
        .addColumn('datastore_version', text, (c) => c.notNull())
        .addColumn('created', text, (c) => c.notNull())
        .addColumn('deleted', text, (c) => c.notNull())
        .addColumn('archive_keep_days', 'integer')
        .execute();
      await db.schema.createIndex('deleted_instances_project').ifNotExists().on('deleted_instances').columns(['project_id', 'created', 'id']).execute();
    },
    async down(db: Kysely<unknown>): Promise<void> {
      await db.schema.dropTable('deleted_instances').ifExists().execute();
      await db.schema.alterTable('instances').dropColumn('restored_from').execute();
    },
  },
  // Verify as a service (issue 23): when a backup was last read back whole and what that found, and
  // whether a schedule verifies what it takes.
  '0005_backup_verify': {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema.alterTable('backups').addColumn('verified_at', text).execute();
      await db.schema.alterTable('backups').addColumn('verify_result', text).execute();
      await db.schema.alterTable('backup_schedules').addColumn('verify', 'integer').execute();
    },
    async down(db: Kysely<unknown>): Promise<void> {
      await db.schema.alterTable('backup_schedules').dropColumn('verify').execute();
      await db.schema.alterTable('backups').dropColumn('verify_result').execute();
      await db.schema.alterTable('backups').dropColumn('verified_at').execute();
    },
  },
  // CouchDB clusters (issue 27): the cluster record, and which cluster an instance belongs to with its
  // fixed Erlang distribution port.
  '0006_clusters': {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema.createTable('clusters').ifNotExists()
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('project_id', text, (c) => c.notNull())
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('task_name', text, (c) => c.notNull())
        .addColumn('datastore', text, (c) => c.notNull())
        .addColumn('datastore_version', text, (c) => c.notNull())
        .addColumn('epmd_port', 'integer', (c) => c.notNull())
        .addColumn('n', 'integer', (c) => c.notNull())
        .addColumn('q', 'integer', (c) => c.notNull())
        .addColumn('fault', text)
        .addColumn('task_id', text)
        .addColumn('created', text, (c) => c.notNull())
        .addColumn('updated', text, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('clusters_project').ifNotExists().on('clusters').columns(['project_id', 'created', 'id']).execute();
      await db.schema.alterTable('instances').addColumn('cluster_id', text).execute();
      await db.schema.alterTable('instances').addColumn('dist_port', 'integer').execute();
      await db.schema.createIndex('instances_cluster').ifNotExists().on('instances').column('cluster_id').execute();
    },
    async down(db: Kysely<unknown>): Promise<void> {
      await db.schema.dropIndex('instances_cluster').ifExists().execute();
      await db.schema.alterTable('instances').dropColumn('dist_port').execute();
      await db.schema.alterTable('instances').dropColumn('cluster_id').execute();
      await db.schema.dropTable('clusters').ifExists().execute();
    },
  },
  // Cluster backups (issue 27): a backup of a cluster names it and keeps its record (shard maps, parts).
  '0007_cluster_backups': {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema.alterTable('backups').addColumn('cluster_id', text).execute();
      await db.schema.alterTable('backups').addColumn('cluster', text).execute();
    },
    async down(db: Kysely<unknown>): Promise<void> {
      await db.schema.alterTable('backups').dropColumn('cluster').execute();
      await db.schema.alterTable('backups').dropColumn('cluster_id').execute();
    },
  },
  // Backup schedules on a cluster (issue 27): cluster_id marks a cluster's schedule.
  '0008_cluster_schedules': {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema.alterTable('backup_schedules').addColumn('cluster_id', text).execute();
    },
    async down(db: Kysely<unknown>): Promise<void> {
      await db.schema.alterTable('backup_schedules').dropColumn('cluster_id').execute();
    },
  },
};
