// A Node caller: `node call.mjs URL FUNCTION_ID PAYLOAD_JSON [FUNCTION_ID PAYLOAD_JSON ...]`.
// Prints a `result` or `error` line per call, in order; an error reply is an observation,
// not a failure (the test decides), but anything other than an InvocationError fails.
// After its calls it stays connected until stdin closes (at once when stdin is /dev/null),
// so the test can look at its connection first.
import { InvocationError } from 'iii-sdk';
import { connect, describeError, emit, fail, hardTimeout, stdinClosed } from './_common.mjs';

hardTimeout(15000);
const calls = process.argv.slice(3);
if (calls.length === 0 || calls.length % 2 !== 0) {
  console.error('usage: node call.mjs URL FUNCTION_ID PAYLOAD_JSON [...]');
  process.exit(2);
}
const stop = stdinClosed(); // listen now: stdin may close while the calls run
const worker = connect('node-caller');
try {
  for (let i = 0; i < calls.length; i += 2) {
    const function_id = calls[i];
    const payload = JSON.parse(calls[i + 1]);
    try {
      const result = await worker.trigger({ function_id, payload, timeoutMs: 5000 });
      emit('result', { function_id, result: result ?? null });
    } catch (e) {
      emit('error', { called: function_id, instanceof_invocation_error: e instanceof InvocationError, ...describeError(e) });
      if (!(e instanceof InvocationError)) fail(`${function_id}: not an InvocationError: ${e?.stack ?? e}`);
    }
  }
  emit('done');
  await stop;
} catch (e) {
  fail(e?.stack ?? String(e));
} finally {
  await worker.shutdown();
}
