// HTTP-invoked functions between the official Node SDK and an iii_trio worker
// (tests/test_interop_http_functions.py): Node registers node::remote, served by the
// engine at the URL given as the second argument; after "go" it calls trio::remote
// (registered by iii_trio the same way) and prints its result, then `done`.
import { connect, emit, fail, hardTimeout } from './_common.mjs';
import { awaitGo, stdinClosed } from './modules_common.mjs';

hardTimeout(30000);
const target = process.argv[3];
const worker = connect('node-http-functions');
try {
  worker.registerFunction('node::remote', {
    url: `${target}/node`,
    method: 'PUT',
    timeout_ms: 5000,
    headers: { 'x-from': 'node' },
  });
  await awaitGo(10000);
  const result = await worker.trigger({
    function_id: 'trio::remote',
    payload: { from: 'node' },
    timeoutMs: 10000,
  });
  emit('result', { function_id: 'trio::remote', result });
  emit('done');
  await stdinClosed;
} catch (e) {
  fail(e?.stack ?? String(e));
} finally {
  await worker.shutdown();
}
