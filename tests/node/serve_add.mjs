// A Node worker providing `node::add`; it runs until the test closes its stdin.
import { connect, emit, fail, hardTimeout, stdinClosed } from './_common.mjs';

hardTimeout(30000);
const worker = connect('node-adder');
try {
  worker.registerFunction('node::add', async (data, metadata) => {
    emit('invoked', { function_id: 'node::add', data, metadata: metadata ?? null });
    return { sum: data.a + data.b };
  });
  emit('registered', { function_id: 'node::add' });
  await stdinClosed();
  emit('stopping');
} catch (e) {
  fail(e?.stack ?? String(e));
} finally {
  await worker.shutdown();
}
