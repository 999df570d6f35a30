// iii-http with the official Node SDK as the worker (tests/modules/test_http_node.py):
// node::hello answers JSON from the request's path and query; node::echo reads the
// request body from its channel and streams it back through the response channel with
// set_status / set_headers first. Binds both `http` triggers, prints `bound`, and stays
// connected until stdin closes (the test makes the HTTP requests).
import { connect, emit, fail, hardTimeout } from './_common.mjs';
import { stdinClosed } from './modules_common.mjs';

hardTimeout(30000);
const worker = connect('node-http');
try {
  worker.registerFunction('node::hello', async (req) => ({
    status_code: 200,
    headers: ['X-From: node'],
    body: { hello: req.path_params.name, query: req.query_params, method: req.method },
  }));
  worker.registerFunction('node::echo', async (req) => {
    const body = await req.request_body.readAll();
    req.response.sendMessage(JSON.stringify({ type: 'set_status', status_code: 201 }));
    req.response.sendMessage(
      JSON.stringify({
        type: 'set_headers',
        headers: { 'content-type': 'application/octet-stream', 'x-size': String(body.length) },
      }),
    );
    await new Promise((resolve, reject) =>
      req.response.stream.end(body, (err) => (err ? reject(err) : resolve())),
    );
    return null;
  });
  worker.registerTrigger({
    type: 'http',
    function_id: 'node::hello',
    config: { api_path: 'node/hello/:name', http_method: 'GET' },
  });
  worker.registerTrigger({
    type: 'http',
    function_id: 'node::echo',
    config: { api_path: '/node/echo', http_method: 'POST' },
  });
  emit('bound');
  await stdinClosed;
} catch (e) {
  fail(e?.stack ?? String(e));
} finally {
  await worker.shutdown();
}
