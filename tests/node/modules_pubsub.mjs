// Pub/sub through the official Node SDK: two functions subscribed to one topic and one to
// another, then a publish to each topic. Prints a `received` line per delivery (with the
// receiving function) and a `result`/`error` line per call.
import { connect, emit, fail, hardTimeout } from './_common.mjs';
import { Inbox, awaitGo, callAll, stdinClosed } from './modules_common.mjs';

hardTimeout(30000);
const worker = connect('node-pubsub');
try {
  const inbox = new Inbox();
  const subscriptions = [
    ['node::welcome', 'node.user.created'],
    ['node::audit', 'node.user.created'],
    ['node::farewell', 'node.user.deleted'],
  ];
  for (const [function_id, topic] of subscriptions) {
    worker.registerFunction(function_id, async (data) => {
      emit('received', { function_id, data });
      inbox.put(function_id);
      return {};
    });
    worker.registerTrigger({ type: 'subscribe', function_id, config: { topic } });
  }
  await awaitGo(10000);
  await callAll(worker, [
    ['publish', { topic: 'node.user.created', data: { user: 'ada' } }],
    ['publish', { topic: 'node.user.deleted', data: { user: 'bob' } }],
    ['publish', { topic: '', data: {} }],
  ]);
  await inbox.count(3, 5000, 'three deliveries');
  emit('done');
  await stdinClosed;
} catch (e) {
  fail(e?.stack ?? String(e));
} finally {
  await worker.shutdown();
}
