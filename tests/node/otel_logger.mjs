// The official Node SDK with its telemetry on (tests/test_interop_otel.py): it serves
// node::log, whose handler logs through the SDK's Logger, and sends its spans and logs
// to the engine's /otel socket. Prints `registered`, then stays until stdin closes.
import { registerWorker } from 'iii-sdk';
import { Logger } from '@iii-dev/helpers/observability';
import { emit, fail, hardTimeout, stdinClosed, url } from './_common.mjs';

hardTimeout(60000);
const stop = stdinClosed();
const worker = registerWorker(url, {
  workerName: 'node-logger',
  otel: {
    serviceName: 'node-svc',
    logsFlushIntervalMs: 10,
    spansFlushIntervalMs: 10,
    metricsEnabled: false,
    fetchInstrumentationEnabled: false,
  },
  enableMetricsReporting: false,
  reconnectionConfig: { maxRetries: 0 },
});
try {
  worker.registerFunction('node::log', async (data) => {
    new Logger(undefined, 'node.fn').info('from node', { n: data.n });
    return data.n;
  });
  emit('registered');
  await stop;
} catch (e) {
  fail(e?.stack ?? String(e));
} finally {
  await worker.shutdown();
}
