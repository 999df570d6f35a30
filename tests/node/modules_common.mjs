// Shared by the modules_*.mjs scenarios (tests/test_official_node_modules.py drives them):
// a scenario binds its functions, then waits for a "go" line on stdin, sent once the test
// has seen the engine hold every binding live; it then makes its calls in order, printing
// a `result` or `error` line per call, and stays connected until stdin closes.
import { createInterface } from 'node:readline';
import { describeError, emit, within } from './_common.mjs';

const lines = createInterface({ input: process.stdin });
const waiting = []; // readers waiting for a line
const unread = []; // lines that came before anyone asked
let stdinOpen = true;
lines.on('line', (line) => {
  const reader = waiting.shift();
  if (reader) reader(line);
  else unread.push(line);
});
/** Resolves when stdin closes (the test is done with us). */
export const stdinClosed = new Promise((resolve) => {
  lines.on('close', () => {
    stdinOpen = false;
    for (const resolveLine of waiting.splice(0)) resolveLine(null);
    resolve();
  });
});

/** Resolves with the next line of stdin (null if it closes first). */
export function nextLine() {
  if (unread.length > 0) return Promise.resolve(unread.shift());
  if (!stdinOpen) return Promise.resolve(null);
  return new Promise((resolve) => waiting.push(resolve));
}

/** Wait for the test's "go" (at most `ms`). */
export async function awaitGo(ms) {
  const line = await within(ms, nextLine(), 'waiting for "go" on stdin');
  if (line !== 'go') throw new Error(`expected "go" on stdin, got ${JSON.stringify(line)}`);
}

/** Call each [function_id, payload] in order; one `result` or `error` line per call. */
export async function callAll(worker, calls) {
  for (const [function_id, payload] of calls) {
    try {
      const result = await worker.trigger({ function_id, payload, timeoutMs: 5000 });
      emit('result', { function_id, result: result ?? null });
    } catch (e) {
      emit('error', { called: function_id, ...describeError(e) });
    }
  }
}

/** Collects what handlers receive; `count(n, ms, what)` waits until there are n. */
export class Inbox {
  constructor() {
    this.items = [];
    this.waiters = [];
  }

  put(item) {
    this.items.push(item);
    this.waiters = this.waiters.filter(([n, resolve]) => (this.items.length >= n ? (resolve(), false) : true));
  }

  count(n, ms, what) {
    if (this.items.length >= n) return Promise.resolve();
    return within(ms, new Promise((resolve) => this.waiters.push([n, resolve])), what);
  }
}
