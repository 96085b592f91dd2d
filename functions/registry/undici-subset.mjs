// The part of undici the publisher runs: an Agent (its pools, HTTP/1.1 clients and parser) and the request API on
// dispatchers. The bundles take this module for `undici` (tools/build.ts); undici's own entry also loads fetch,
// WebSocket, the mock agents and the cache stores, which the publisher never calls and a cold start would pay for.
// test/unit/undici-subset.test.ts checks that it offers what the code takes from undici.
import Agent from 'undici/lib/dispatcher/agent.js';
import api from 'undici/lib/api/index.js';
import Dispatcher from 'undici/lib/dispatcher/dispatcher.js';

// What undici's entry does: the request API (dispatcher.request and the like) on every dispatcher.
Object.assign(Dispatcher.prototype, api);

export { Agent, Dispatcher };
