/** The fault matrix (test/helpers/fault-matrix.ts) at the blob requests (HEAD, upload POST, PATCH, PUT), with small files: each read whole and PUT with its digest. */
import { faultMatrix, BLOB_KINDS } from '../helpers/fault-matrix';

faultMatrix('small files', 300_000, BLOB_KINDS);
