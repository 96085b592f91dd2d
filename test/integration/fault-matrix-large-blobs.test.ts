/**
 * The fault matrix (test/helpers/fault-matrix.ts) at the blob requests (HEAD, upload POST, PATCH, PUT), with files above 4 MiB (SMALL_FILE), which
 * stream: a PATCH and a commit PUT, the container archive's image layer by byte range, the PXE bundle's members
 * through the parser.
 */
import { SMALL_FILE } from '../../functions/orchestration/file-transfer';
import { faultMatrix, BLOB_KINDS } from '../helpers/fault-matrix';

// Just above the limit: every large file streams, and no more bytes move than that takes.
faultMatrix('files above 4 MiB', SMALL_FILE + 256 * 1024, BLOB_KINDS);
