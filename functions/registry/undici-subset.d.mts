// Types of undici-subset.mjs: undici's own, for the values it offers.
export { Agent, Dispatcher } from 'undici';
