// Worker thread: encodes (compress + encrypt) and decodes records, so both cores work on the data.
// Buffers it is given are handed back with the reply, for the caller to reuse.
import { parentPort, workerData } from 'node:worker_threads';
import { runTask, type WorkerTask } from './pool.js';
import { recordDone } from '../util/gc.js';

parentPort!.on('message', (task: WorkerTask) => {
  recordDone();
  const { reply, transfer } = runTask(task);
  parentPort!.postMessage(reply, transfer);
});
// The caller may see this before the message below (pool.ts, run()).
Atomics.store((workerData as { started: Int32Array }).started, 0, 1);
parentPort!.postMessage('ready');
