// Data channels between the official Node SDK and an iii_trio worker
// (tests/test_interop_channels_node.py): Node creates a two-item channel, hands its
// reader ref to trio::consume and writes a text item and 300 KiB into it; then it
// creates another channel and hands its writer ref to trio::produce, reading what
// iii_trio writes. Then Node serves node::consume, which reads a channel iii_trio made.
// One `result` line per direction, then `done`.
import { createChannel } from 'iii-sdk/helpers';
import { connect, emit, fail, hardTimeout, within } from './_common.mjs';
import { awaitGo, stdinClosed } from './modules_common.mjs';

hardTimeout(30000);
const worker = connect('node-channels');
worker.registerFunction('node::consume', async (data) => {
  const texts = [];
  const chunks = [];
  data.reader.onMessage((msg) => texts.push(msg));
  await new Promise((resolve, reject) => {
    data.reader.stream.on('data', (chunk) => chunks.push(chunk));
    data.reader.stream.on('end', resolve);
    data.reader.stream.on('error', reject);
  });
  return { texts, text: Buffer.concat(chunks).toString('utf-8') };
});
try {
  await awaitGo(10000);

  const out = await createChannel(worker, 2);
  const answer = worker.trigger({
    function_id: 'trio::consume',
    payload: { reader: out.readerRef },
    timeoutMs: 10000,
  });
  out.writer.sendMessage('from node');
  await new Promise((resolve, reject) =>
    out.writer.stream.end(Buffer.alloc(300 * 1024, 7), (err) => (err ? reject(err) : resolve())),
  );
  emit('result', { function_id: 'trio::consume', result: await answer });

  const back = await createChannel(worker);
  const texts = [];
  const chunks = [];
  back.reader.onMessage((msg) => texts.push(msg));
  const ended = new Promise((resolve, reject) => {
    back.reader.stream.on('data', (chunk) => chunks.push(chunk));
    back.reader.stream.on('end', resolve);
    back.reader.stream.on('error', reject);
  });
  const produced = await worker.trigger({
    function_id: 'trio::produce',
    payload: { writer: back.writerRef },
    timeoutMs: 10000,
  });
  await within(10000, ended, 'the end of the channel trio::produce wrote');
  const body = Buffer.concat(chunks);
  emit('result', {
    function_id: 'trio::produce',
    result: { produced, texts, size: body.length, text: body.toString('utf-8', 0, 11) },
  });
  emit('done');
  await stdinClosed;
} catch (e) {
  fail(e?.stack ?? String(e));
} finally {
  await worker.shutdown();
}
