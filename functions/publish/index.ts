/** The Lambda's module: `handler(event, context)` with configuration from the environment. */
export { createHandler, JobsFailedError } from './handler';
import { createHandler } from './handler';

export const handler = createHandler();
