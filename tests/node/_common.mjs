// Shared by the scripts in this folder: each prints one JSON line per observation.
import { registerWorker } from 'iii-sdk';

export const url = process.argv[2];
if (!url) {
  console.error('usage: node <script>.mjs ws://host:port [args...]');
  process.exit(2);
}

export function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

export function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exitCode = 1;
}

/** Kill the process (exit 3) if it is still running after `ms`, whatever it waits on. */
export function hardTimeout(ms) {
  setTimeout(() => {
    console.error(`FAIL: hard timeout after ${ms} ms`);
    process.exit(3);
  }, ms).unref();
}

export function connect(workerName) {
  return registerWorker(url, {
    workerName,
    otel: { enabled: false },
    enableMetricsReporting: false,
    reconnectionConfig: { maxRetries: 0 },
  });
}

/** Resolves when the test closes our stdin: the signal for a long-lived worker to stop. */
export function stdinClosed() {
  return new Promise((resolve) => {
    process.stdin.on('end', resolve);
    process.stdin.on('close', resolve);
    process.stdin.resume();
  });
}

/** Rejects after `ms` unless `promise` settles first. */
export function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function describeError(e) {
  return {
    name: e?.name,
    code: e?.code,
    message: e?.message,
    function_id: e?.function_id,
  };
}
