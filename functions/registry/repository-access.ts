/** What the blob and manifest operations need of one repository: its requests, with the job's scope. */
import type { RegistryClient } from './client';
import type { JobScope, Operation } from './failure-budget';
import type { Req, Res } from './http';

export interface RepositoryAccess {
  readonly client: RegistryClient;
  readonly name: string;
  readonly scope: JobScope;
  readonly scopes: readonly string[];
  url(path: string): URL;
  send(req: Omit<Req, 'scopes'>, op?: Operation): Promise<Res>;
  hasBlob(digest: string, op?: Operation): Promise<boolean>;
}
