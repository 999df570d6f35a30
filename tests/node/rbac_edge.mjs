// The Node SDK as a client of an RBAC worker port:
// `node rbac_edge.mjs URL TOKEN FUNCTION_ID PAYLOAD_JSON [FUNCTION_ID PAYLOAD_JSON ...]`.
// It connects with `x-token: TOKEN` in its upgrade headers (registerWorker's `headers`
// option), registers `edge::echo`, makes each call in order and prints a `result` or
// `error` line per call, then stays connected until stdin closes.
import { registerWorker } from 'iii-sdk';
import { describeError, emit, fail, hardTimeout, stdinClosed, url } from './_common.mjs';

hardTimeout(15000);
const [token, ...calls] = process.argv.slice(3);
if (!token || calls.length % 2 !== 0) {
  console.error('usage: node rbac_edge.mjs URL TOKEN FUNCTION_ID PAYLOAD_JSON [...]');
  process.exit(2);
}
const stop = stdinClosed();
const worker = registerWorker(url, {
  workerName: 'node-edge',
  headers: { 'x-token': token },
  otel: { enabled: false },
  enableMetricsReporting: false,
  reconnectionConfig: { maxRetries: 0 },
});
worker.registerFunction('edge::echo', async (data) => ({ from_node: data }));
try {
  for (let i = 0; i < calls.length; i += 2) {
    const function_id = calls[i];
    try {
      const result = await worker.trigger({ function_id, payload: JSON.parse(calls[i + 1]), timeoutMs: 5000 });
      emit('result', { function_id, result: result ?? null });
    } catch (e) {
      emit('error', { called: function_id, ...describeError(e) });
    }
  }
  emit('done');
  await stop;
} catch (e) {
  fail(e?.stack ?? String(e));
} finally {
  await worker.shutdown();
}
