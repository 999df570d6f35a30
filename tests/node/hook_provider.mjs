// A Node worker providing trigger type `nodehook`: when the engine hands it a binding it
// fires the bound function once with a payload naming the binding. Runs until stdin closes.
import { connect, describeError, emit, fail, hardTimeout, stdinClosed } from './_common.mjs';

hardTimeout(30000);
const worker = connect('node-hook-provider');

async function fire(binding) {
  const payload = { fired_by: 'nodehook', binding_id: binding.id, config: binding.config };
  try {
    const result = await worker.trigger({ function_id: binding.function_id, payload, timeoutMs: 5000 });
    emit('fired', { id: binding.id, function_id: binding.function_id, result: result ?? null });
  } catch (e) {
    emit('fire_failed', { id: binding.id, ...describeError(e) });
    fail(`firing ${binding.function_id}: ${e?.message ?? e}`);
  }
}

try {
  worker.registerTriggerType(
    { id: 'nodehook', description: 'fires once per binding, from Node' },
    {
      async registerTrigger(binding) {
        emit('register_hook', {
          id: binding.id,
          function_id: binding.function_id,
          config: binding.config ?? null,
          metadata: binding.metadata ?? null,
        });
        setImmediate(() => void fire(binding)); // after the hook has answered the engine
      },
      async unregisterTrigger(binding) {
        emit('unregister_hook', {
          id: binding.id,
          function_id: binding.function_id ?? null,
          config: binding.config ?? null,
        });
      },
    },
  );
  emit('registered', { trigger_type: 'nodehook' });
  await stdinClosed();
  emit('stopping');
} catch (e) {
  fail(e?.stack ?? String(e));
} finally {
  await worker.shutdown();
}
