// State through the official Node SDK: a `state` trigger on one key, then the state::*
// functions in order. Prints a `result`/`error` line per call and a `state_event` line per
// trigger firing. Driven by tests/test_official_node_modules.py.
import { connect, emit, fail, hardTimeout } from './_common.mjs';
import { Inbox, awaitGo, callAll, stdinClosed } from './modules_common.mjs';

hardTimeout(30000);
const worker = connect('node-state');
try {
  const inbox = new Inbox();
  worker.registerFunction('node::cart_changed', async (data) => {
    emit('state_event', { data });
    inbox.put(data);
    return {};
  });
  worker.registerTrigger({
    type: 'state',
    function_id: 'node::cart_changed',
    config: { scope: 'node-carts', key: 'ada' },
  });
  await awaitGo(10000);
  const cart = (key) => ({ scope: 'node-carts', key });
  await callAll(worker, [
    ['state::set', { ...cart('ada'), value: { items: 1 } }],
    ['state::set', { ...cart('ada'), value: { items: 2 } }],
    ['state::get', cart('ada')],
    ['state::update', { ...cart('ada'), ops: [{ type: 'increment', path: 'items', by: 3 }] }],
    ['state::set', { ...cart('bob'), value: { items: 0 } }],
    ['state::list', { scope: 'node-carts' }],
    ['state::list_groups', {}],
    ['state::delete', cart('bob')],
    ['state::get', cart('bob')],
    ['state::delete', cart('ada')],
    ['state::get', { scope: 'node-carts' }],
  ]);
  // ada: created, updated (set), updated (update), deleted; bob is not watched.
  await inbox.count(4, 5000, 'four state events for node-carts/ada');
  emit('done');
  await stdinClosed;
} catch (e) {
  fail(e?.stack ?? String(e));
} finally {
  await worker.shutdown();
}
