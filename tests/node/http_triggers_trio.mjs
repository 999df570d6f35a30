// HTTP triggers served by the official Node SDK's http helper (@iii-dev/helpers/http)
// beside the same handlers written for iii_trio and the official Python SDK
// (tests/test_interop_http_triggers.py): node::echo reads the request body and streams
// back a summary, node::events streams three server-sent events. Binds both, then stays
// connected until stdin closes (the test makes the HTTP requests).
import { http } from '@iii-dev/helpers/http';
import { connect, fail, hardTimeout } from './_common.mjs';
import { stdinClosed } from './modules_common.mjs';

hardTimeout(30000);
const worker = connect('node-http-triggers');
const write = (stream, chunk) =>
  new Promise((resolve, reject) => stream.write(chunk, (err) => (err ? reject(err) : resolve())));
const end = (stream) => new Promise((resolve) => stream.end(resolve));
try {
  worker.registerFunction(
    'node::echo',
    http(async (req, res) => {
      const raw = await req.request_body.readAll();
      res.status(202);
      res.headers({
        'content-type': 'application/octet-stream',
        'x-size': String(raw.length),
        'x-id': req.path_params.id,
        'x-q': req.query_params.x ?? '',
      });
      await write(res.stream, raw.subarray(0, 16));
      await write(res.stream, Buffer.from(`|${JSON.stringify(req.body)}`));
      await end(res.stream);
      return null;
    }),
  );
  worker.registerFunction(
    'node::events',
    http(async (_req, res) => {
      res.status(200);
      res.headers({ 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      for (let n = 0; n < 3; n += 1) await write(res.stream, `id: ${n}\ndata: tick ${n}\n\n`);
      await end(res.stream);
      return null;
    }),
  );
  worker.registerTrigger({
    type: 'http',
    function_id: 'node::echo',
    config: { api_path: 'node/items/:id', http_method: 'POST' },
  });
  worker.registerTrigger({
    type: 'http',
    function_id: 'node::events',
    config: { api_path: 'node/events', http_method: 'GET' },
  });
  await stdinClosed;
} catch (e) {
  fail(e?.stack ?? String(e));
} finally {
  await worker.shutdown();
}
