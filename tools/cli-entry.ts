/** Entry of the CLI bundle: exports `main` for bin/gl-oci-publish.mjs. */
export { main } from '../functions/publish/cli';
