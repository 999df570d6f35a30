// A Node worker that binds its function to trigger type `nodehook`, waits for one firing,
// then unregisters the binding (still connected) and runs until the test closes its stdin.
import { connect, emit, fail, hardTimeout, stdinClosed, within } from './_common.mjs';

hardTimeout(30000);
const worker = connect('node-hook-consumer');
try {
  let received;
  const firing = new Promise((resolve) => { received = resolve; });
  worker.registerFunction('consumer::on_hook', async (data) => {
    emit('received', { function_id: 'consumer::on_hook', data });
    received(data);
    return { ok: true };
  });
  const ref = worker.registerTrigger({
    type: 'nodehook',
    function_id: 'consumer::on_hook',
    config: { path: '/hook', retries: 2 },
  });
  emit('trigger_registered');
  await within(10000, firing, 'waiting for the provider to fire consumer::on_hook');
  ref.unregister();
  emit('trigger_unregistered');
  await stdinClosed();
  emit('stopping');
} catch (e) {
  fail(e?.stack ?? String(e));
} finally {
  await worker.shutdown();
}
