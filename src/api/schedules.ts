// couchtrove's backup schedule endpoints (Trove keeps schedules in Mistral, which couchtrove does not
// speak): /v1.0/{project}/instances/{id}/schedules, and the same under /clusters/{id}/schedules for cluster
// backups. Registered inside the Trove API's project scope.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ControlPlane } from '../tasks/control.js';
import { createSchedule, deleteSchedule, getSchedule, listSchedules, pauseSchedule, scheduleView, type ScheduleOwner } from '../tasks/schedules.js';
import { badRequest } from '../tasks/errors.js';
import * as v from './validate.js';

type Req = FastifyRequest<{ Params: Record<string, string> }>;

const KEYS = ['name', 'description', 'pattern', 'incremental', 'keep_last', 'keep_daily', 'keep_weekly', 'verify'];

function keep(x: unknown, where: string): number | null {
  return v.optional(x, (y) => v.integer(y, where, 1, 100_000));
}

export function registerScheduleRoutes(api: FastifyInstance, plane: ControlPlane): void {
  for (const kind of ['instance', 'cluster'] as const) scheduleRoutes(api, plane, kind);
}

function scheduleRoutes(api: FastifyInstance, plane: ControlPlane, kind: ScheduleOwner['kind']): void {
  const at = `/${kind}s/:id/schedules`;
  const owner = (req: Req): ScheduleOwner => ({ kind, ref: req.params.id! });
  api.get(at, async (req: Req) => ({
    schedules: (await listSchedules(plane, req.params.project!, owner(req))).map(scheduleView),
  }));
  api.get(`${at}/:sid`, async (req: Req) => ({
    schedule: scheduleView(await getSchedule(plane, req.params.project!, owner(req), req.params.sid!)),
  }));
  api.post(at, async (req: Req, reply) => {
    const b = v.obj(v.obj(req.body ?? null, 'The request body').schedule, '"schedule"');
    v.noUnknown(b, KEYS, '"schedule"');
    if (typeof b.pattern !== 'string') throw badRequest('"pattern" is required: a 5-field cron pattern such as "0 3 * * *" (UTC).');
    const inc = b.incremental;
    if (inc !== undefined && inc !== null && inc !== 0 && inc !== 1 && inc !== true && inc !== false) throw badRequest('"incremental" must be 0 or 1.');
    const ver = b.verify;
    if (ver !== undefined && ver !== null && ver !== 0 && ver !== 1 && ver !== true && ver !== false) throw badRequest('"verify" must be 0 or 1.');
    const s = await createSchedule(plane, req.params.project!, owner(req), {
      name: v.displayName(b.name, '"name"'),
      description: v.optional(b.description, (x) => v.text(x, '"description"')),
      pattern: v.text(b.pattern, '"pattern"', 200),
      incremental: inc === 1 || inc === true,
      keepLast: keep(b.keep_last, '"keep_last"'),
      keepDaily: keep(b.keep_daily, '"keep_daily"'),
      keepWeekly: keep(b.keep_weekly, '"keep_weekly"'),
      verify: ver === 1 || ver === true,
    });
    return reply.code(201).send({ schedule: scheduleView(s) });
  });
  // couchtrove extension: {"schedule": {"paused": true|false}} pauses or resumes a schedule.
  api.patch(`${at}/:sid`, async (req: Req) => {
    const b = v.obj(v.obj(req.body ?? null, 'The request body').schedule, '"schedule"');
    v.noUnknown(b, ['paused'], '"schedule"');
    if (typeof b.paused !== 'boolean') throw badRequest('"schedule"."paused" must be true or false.');
    return { schedule: scheduleView(await pauseSchedule(plane, req.params.project!, owner(req), req.params.sid!, b.paused)) };
  });
  api.delete(`${at}/:sid`, async (req: Req, reply) => {
    await deleteSchedule(plane, req.params.project!, owner(req), req.params.sid!);
    return reply.code(202).send();
  });
}
