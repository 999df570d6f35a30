// Data channels through the official Node SDK, both ways with an official Python SDK
// worker (tests/modules/test_channels_node.py): Node writes a text message and 300 KiB
// into a two-item channel that py::consume reads; py::produce writes into a channel
// Node reads. One `result` line per direction, then `done`.
import { createChannel } from 'iii-sdk/helpers';
import { connect, emit, fail, hardTimeout, within } from './_common.mjs';
import { awaitGo, stdinClosed } from './modules_common.mjs';

hardTimeout(30000);
const worker = connect('node-channels');
try {
  await awaitGo(10000);

  const out = await createChannel(worker, 2);
  const answer = worker.trigger({
    function_id: 'py::consume',
    payload: { reader: out.readerRef },
    timeoutMs: 10000,
  });
  out.writer.sendMessage('from node');
  await new Promise((resolve, reject) =>
    out.writer.stream.end(Buffer.alloc(300 * 1024, 7), (err) => (err ? reject(err) : resolve())),
  );
  emit('result', { function_id: 'py::consume', result: await answer });

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
    function_id: 'py::produce',
    payload: { writer: back.writerRef },
    timeoutMs: 10000,
  });
  await within(10000, ended, 'the end of the channel py::produce wrote');
  const body = Buffer.concat(chunks);
  emit('result', {
    function_id: 'py::produce',
    result: { produced, texts, size: body.length, text: body.toString('utf-8', 0, 12) },
  });
  emit('done');
  await stdinClosed;
} catch (e) {
  fail(e?.stack ?? String(e));
} finally {
  await worker.shutdown();
}
