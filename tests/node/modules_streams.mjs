// Streams through the official Node SDK, and a browser-style subscriber on the stream
// module's own WebSocket port: `node modules_streams.mjs WORKER_URL STREAM_URL`.
// A `stream` trigger and the subscriber watch stream node-chat (group room-1), then the
// stream::* functions run in order. Prints `result`/`error` per call, `stream_event` per
// trigger firing and `subscriber` per message the subscriber gets.
import WebSocket from 'ws';
import { connect, emit, fail, hardTimeout, within } from './_common.mjs';
import { Inbox, awaitGo, callAll, stdinClosed } from './modules_common.mjs';

hardTimeout(30000);
const streamUrl = process.argv[3];
const worker = connect('node-streams');
let socket;
try {
  const triggered = new Inbox();
  const pushed = new Inbox();
  worker.registerFunction('node::chat_changed', async (data) => {
    emit('stream_event', { data });
    triggered.put(data);
    return {};
  });
  worker.registerTrigger({
    type: 'stream',
    function_id: 'node::chat_changed',
    config: { stream_name: 'node-chat', group_id: 'room-1' },
  });

  socket = new WebSocket(streamUrl);
  socket.on('message', (raw) => {
    const message = JSON.parse(raw.toString());
    emit('subscriber', { message });
    pushed.put(message);
  });
  await within(5000, new Promise((resolve, reject) => {
    socket.once('open', resolve);
    socket.once('error', reject);
  }), `opening ${streamUrl}`);
  socket.send(JSON.stringify({
    type: 'join',
    data: { subscriptionId: 'node-sub', streamName: 'node-chat', groupId: 'room-1' },
  }));
  await pushed.count(1, 5000, 'the sync message after join');
  await awaitGo(10000);

  const item = (id) => ({ stream_name: 'node-chat', group_id: 'room-1', item_id: id });
  await callAll(worker, [
    ['stream::set', { ...item('m1'), data: { text: 'hi' } }],
    ['stream::set', { ...item('m1'), data: { text: 'hey' } }],
    ['stream::get', item('m1')],
    ['stream::update', { ...item('m1'), ops: [{ type: 'set', path: 'read', value: true }] }],
    ['stream::set', { stream_name: 'node-chat', group_id: 'room-2', item_id: 'x', data: 0 }],
    ['stream::list', { stream_name: 'node-chat', group_id: 'room-1' }],
    ['stream::list_groups', { stream_name: 'node-chat' }],
    ['stream::send', { stream_name: 'node-chat', group_id: 'room-1', type: 'typing', data: { who: 'ada' } }],
    ['stream::delete', item('m1')],
  ]);
  // room-1: create, update, update (stream::update), the typing event, delete.
  await pushed.count(6, 5000, 'five changes after the sync');
  await triggered.count(5, 5000, 'five stream trigger firings');
  emit('done');
  await stdinClosed;
} catch (e) {
  fail(e?.stack ?? String(e));
} finally {
  socket?.terminate();
  await worker.shutdown();
}
