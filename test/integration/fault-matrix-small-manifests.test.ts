/** The fault matrix (test/helpers/fault-matrix.ts) at the manifest requests (GET, PUT) and the token request, with small files: each read whole and PUT with its digest. */
import { faultMatrix, MANIFEST_KINDS } from '../helpers/fault-matrix';

faultMatrix('small files', 300_000, MANIFEST_KINDS);
