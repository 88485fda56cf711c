// Worker thread: encodes (compress + encrypt) and decodes records, so both cores work on the data.
// Buffers it is given are handed back with the reply, for the caller to reuse.
import { parentPort } from 'node:worker_threads';
import { decodeRecordInto, encodeRecord, maxRecordBytes, RecordAuthError } from './records.js';
import type { WorkerReply, WorkerTask } from './pool.js';
import { recordDone } from '../util/gc.js';

let scratch = new Uint8Array(0);

parentPort!.on('message', (task: WorkerTask) => {
  recordDone();
  try {
    if (task.op === 'encode') {
      const need = maxRecordBytes(task.plain.length);
      if (scratch.length < need) scratch = new Uint8Array(need);
      const record = encodeRecord(task.codec, task.level, task.key, task.index, task.plain, scratch);
      const reply: WorkerReply = { id: task.id, ok: true, op: 'encode', plain: task.plain, record };
      parentPort!.postMessage(reply, [task.plain.buffer as ArrayBuffer, record.buffer as ArrayBuffer]);
    } else {
      const length = decodeRecordInto(task.codec, task.key, task.index, task.header, task.payload, task.out);
      const reply: WorkerReply = { id: task.id, ok: true, op: 'decode', payload: task.payload, out: task.out, length };
      parentPort!.postMessage(reply, [task.payload.buffer as ArrayBuffer, task.out.buffer as ArrayBuffer]);
    }
  } catch (err) {
    const buffers = task.op === 'encode' ? [task.plain] : [task.payload, task.out];
    const reply: WorkerReply = { id: task.id, ok: false, auth: err instanceof RecordAuthError, message: (err as Error).message, buffers };
    parentPort!.postMessage(reply, buffers.map((b) => b.buffer as ArrayBuffer));
  }
});
