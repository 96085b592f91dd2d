/**
 * Turns whatever invoked the function into jobs. Accepted, each validated with zod:
 * - S3 notifications (`Records[].s3`), several records per event, keys form-URL-decoded;
 * - EventBridge `Object Created` events from S3 (keys as they are, not encoded);
 * - SQS events whose message bodies are S3 notifications (or EventBridge events); S3 test messages are dropped;
 * - manual payloads from the console or the CLI: publish, reindex, tag, retract, verify, sign-first, copy.
 */
import * as z from 'zod';
import { isBaseName, isVersion, metadataKey } from '../gardenlinux/naming';
import { parseCopyLocation, type CopyLocation } from '../registry/location';
import { BUCKET_NAME } from '../storage/object-store';
import { InputError } from '../util/errors';

export type JobOrigin = 's3' | 'eventbridge' | 'sqs' | 'manual';

export type Job =
  | {
      kind: 'publish';
      bucket: string;
      key: string;
      origin: JobOrigin;
      /** the SQS message the job came from: its failure is reported per message */
      messageId?: string;
      /** S3's request id of the upload, for support cases */
      s3RequestId?: string;
      eTag?: string;
      eventName?: string;
    }
  | { kind: 'reindex'; bucket?: string; version: string; origin: JobOrigin; repository?: string }
  | { kind: 'tag'; version: string; tags: string[]; origin: JobOrigin; repository?: string }
  /** takes one build out of its version on purpose */
  | { kind: 'retract'; bucket?: string; base: string; origin: JobOrigin }
  /** checks a published version as its readers see it; writes nothing */
  | { kind: 'verify'; bucket?: string; version: string; origin: JobOrigin }
  /** puts the configured key's signature first in the `.sig` of every manifest of a version (after a key rotation) */
  | { kind: 'sign-first'; version: string; origin: JobOrigin }
  /** copies a complete release to another registry, an OCI layout or an OCI archive; `from` undefined: REGISTRY */
  | { kind: 'copy'; version: string; from?: CopyLocation; to: CopyLocation; aliases: boolean; origin: JobOrigin }
  /** a message that could not be understood: it fails on its own, the rest of the batch goes on */
  | { kind: 'invalid'; error: string; origin: JobOrigin; messageId?: string }
  /** an event that is valid but asks for nothing (an S3 test message, a deletion) */
  | { kind: 'ignore'; reason: string; origin: JobOrigin; messageId?: string };

export interface NormalisedEvent {
  jobs: Job[];
  /** SQS invocations answer with batchItemFailures instead of failing as a whole */
  sqs: boolean;
}

/** S3 notification keys are form-URL-encoded: `+` is a space, `%2B` a plus. */
export function decodeS3Key(key: string): string {
  try {
    return decodeURIComponent(key.replace(/\+/g, ' '));
  } catch {
    throw new InputError(`the S3 key "${key}" is not validly URL-encoded`);
  }
}

const S3Record = z.looseObject({
  eventSource: z.literal('aws:s3'),
  eventName: z.string(),
  responseElements: z.looseObject({ 'x-amz-request-id': z.string().optional() }).optional(),
  s3: z.looseObject({
    bucket: z.looseObject({ name: z.string().min(1) }),
    object: z.looseObject({ key: z.string().min(1), eTag: z.string().optional(), size: z.number().optional() }),
  }),
});
const S3Notification = z.looseObject({ Records: z.array(S3Record).min(1) });

const S3TestEvent = z.looseObject({ Service: z.literal('Amazon S3'), Event: z.literal('s3:TestEvent') });

const EventBridgeObjectCreated = z.looseObject({
  source: z.literal('aws.s3'),
  'detail-type': z.literal('Object Created'),
  detail: z.looseObject({
    bucket: z.looseObject({ name: z.string().min(1) }),
    object: z.looseObject({ key: z.string().min(1), etag: z.string().optional() }),
    'request-id': z.string().optional(),
  }),
});

const SqsEvent = z.looseObject({
  Records: z
    .array(z.looseObject({ eventSource: z.literal('aws:sqs'), messageId: z.string().min(1), body: z.string() }))
    .min(1),
});

const versionField = z.string().refine(isVersion, 'expected a Garden Linux version such as 1877.3 or 2150.0.0');
const baseField = z.string().refine(isBaseName, 'expected a base name such as container-amd64-1877.3-75df9f40');
const bucketField = z.string().regex(BUCKET_NAME, 'expected an S3 bucket name');

const ManualPublish = z
  .strictObject({
    action: z.literal('publish'),
    bucket: bucketField,
    key: z.string().startsWith('meta/singles/', 'expected the metadata key meta/singles/<base>').optional(),
    base: baseField.optional(),
  })
  .refine((p) => (p.key === undefined) !== (p.base === undefined), {
    message: 'give the build as either "key" (meta/singles/<base>) or "base", exactly one of them',
    path: ['key'],
  });
const ManualReindex = z.strictObject({
  action: z.literal('reindex'),
  bucket: bucketField.optional(),
  version: versionField,
});
const ManualTag = z.strictObject({
  action: z.literal('tag'),
  version: versionField,
  tags: z.array(z.string().min(1)).min(1),
  /** one of the configured container sub-repositories instead of the main repository */
  repository: z.string().min(1).optional(),
});

const ManualVerify = z.strictObject({
  action: z.literal('verify'),
  /** where the records are when STATE_BUCKET is not set */
  bucket: bucketField.optional(),
  version: versionField,
});

/** Reads the version index, not the records: no bucket. */
const ManualSignFirst = z.strictObject({
  action: z.literal('sign-first'),
  version: versionField,
});

/** Locations are strings here; they are parsed (and refused with their own message) once the payload's shape is right. */
const ManualCopy = z.strictObject({
  action: z.literal('copy'),
  version: versionField,
  /** where the release goes: a registry, oci-layout:<dir> or oci-archive:<file> */
  to: z.string().min(1),
  /** where it is; default REGISTRY */
  from: z.string().min(1).optional(),
  /** also the release aliases (ALIAS_TAGS) that hold the version at the source */
  aliases: z.boolean().optional(),
});

const ManualRetract = z.strictObject({
  action: z.literal('retract'),
  /** where the records are when STATE_BUCKET is not set */
  bucket: bucketField.optional(),
  base: baseField,
});

export const ACCEPTED_SHAPES =
  'accepted are S3 notifications ({"Records":[{"s3":…}]}), EventBridge "Object Created" events from aws.s3, ' +
  'SQS events carrying S3 notifications, and manual payloads {"action":"publish","bucket":…,"key":"meta/singles/<base>"} ' +
  '(or "base" instead of "key"), {"action":"reindex","bucket":…,"version":…}, {"action":"tag","version":…,"tags":[…]}, {"action":"retract","base":…}, {"action":"verify","version":…}, {"action":"sign-first","version":…}, {"action":"copy","version":…,"to":…}';

function fromNotification(n: z.infer<typeof S3Notification>, origin: JobOrigin, messageId?: string): Job[] {
  return n.Records.map((r): Job => {
    const bucket = r.s3.bucket.name;
    const key = decodeS3Key(r.s3.object.key);
    const extra = { ...(messageId ? { messageId } : {}) };
    if (!r.eventName.startsWith('ObjectCreated:')) {
      return { kind: 'ignore', reason: `${r.eventName} of s3://${bucket}/${key} asks for nothing`, origin, ...extra };
    }
    const requestId = r.responseElements?.['x-amz-request-id'];
    return {
      kind: 'publish',
      bucket,
      key,
      origin,
      eventName: r.eventName,
      ...extra,
      ...(requestId ? { s3RequestId: requestId } : {}),
      ...(r.s3.object.eTag ? { eTag: r.s3.object.eTag } : {}),
    };
  });
}

function fromEventBridge(e: z.infer<typeof EventBridgeObjectCreated>, origin: JobOrigin, messageId?: string): Job {
  // EventBridge carries the key as it is (unlike S3 notifications, which form-URL-encode it): no decoding.
  return {
    kind: 'publish',
    bucket: e.detail.bucket.name,
    key: e.detail.object.key,
    origin,
    eventName: 'Object Created',
    ...(messageId ? { messageId } : {}),
    ...(e.detail['request-id'] ? { s3RequestId: e.detail['request-id'] } : {}),
    ...(e.detail.object.etag ? { eTag: e.detail.object.etag } : {}),
  };
}

function formatIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 4)
    .map((i) => `${i.path.join('.') || '(payload)'}: ${i.message}`)
    .join('; ');
}

function fromManual(event: Record<string, unknown>): Job[] {
  switch (event.action) {
    case 'publish': {
      const p = ManualPublish.safeParse(event);
      if (!p.success) throw new InputError(`invalid publish payload: ${formatIssues(p.error)}`);
      const key = p.data.key ?? metadataKey(p.data.base as string);
      return [{ kind: 'publish', bucket: p.data.bucket, key, origin: 'manual' }];
    }
    case 'reindex': {
      const p = ManualReindex.safeParse(event);
      if (!p.success) throw new InputError(`invalid reindex payload: ${formatIssues(p.error)}`);
      return [{ kind: 'reindex', version: p.data.version, origin: 'manual', ...(p.data.bucket ? { bucket: p.data.bucket } : {}) }];
    }
    case 'tag': {
      const p = ManualTag.safeParse(event);
      if (!p.success) throw new InputError(`invalid tag payload: ${formatIssues(p.error)}`);
      return [
        {
          kind: 'tag',
          version: p.data.version,
          tags: p.data.tags,
          origin: 'manual',
          ...(p.data.repository ? { repository: p.data.repository } : {}),
        },
      ];
    }
    case 'retract': {
      const p = ManualRetract.safeParse(event);
      if (!p.success) throw new InputError(`invalid retract payload: ${formatIssues(p.error)}`);
      return [{ kind: 'retract', base: p.data.base, origin: 'manual', ...(p.data.bucket ? { bucket: p.data.bucket } : {}) }];
    }
    case 'verify': {
      const p = ManualVerify.safeParse(event);
      if (!p.success) throw new InputError(`invalid verify payload: ${formatIssues(p.error)}`);
      return [{ kind: 'verify', version: p.data.version, origin: 'manual', ...(p.data.bucket ? { bucket: p.data.bucket } : {}) }];
    }
    case 'sign-first': {
      const p = ManualSignFirst.safeParse(event);
      if (!p.success) throw new InputError(`invalid sign-first payload: ${formatIssues(p.error)}`);
      return [{ kind: 'sign-first', version: p.data.version, origin: 'manual' }];
    }
    case 'copy': {
      const p = ManualCopy.safeParse(event);
      if (!p.success) throw new InputError(`invalid copy payload: ${formatIssues(p.error)}`);
      const location = (value: string, field: string): CopyLocation => {
        try {
          return parseCopyLocation(value, `"${field}"`);
        } catch (err) {
          throw new InputError(`invalid copy payload: ${(err as Error).message}`);
        }
      };
      const to = location(p.data.to, 'to');
      const from = p.data.from === undefined ? undefined : location(p.data.from, 'from');
      return [{ kind: 'copy', version: p.data.version, to, ...(from ? { from } : {}), aliases: p.data.aliases === true, origin: 'manual' }];
    }
    default:
      throw new InputError(`unknown action ${JSON.stringify(event.action)}: expected "publish", "reindex", "tag", "retract", "verify", "sign-first" or "copy"`);
  }
}

/** One SQS message body: an S3 notification, an EventBridge event, or S3's test message. */
function fromSqsBody(body: string, messageId: string): Job[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return [{ kind: 'invalid', error: `SQS message ${messageId} is not JSON`, origin: 'sqs', messageId }];
  }
  if (S3TestEvent.safeParse(parsed).success) return [{ kind: 'ignore', reason: 'S3 test event', origin: 'sqs', messageId }];
  try {
    const n = S3Notification.safeParse(parsed);
    if (n.success) return fromNotification(n.data, 'sqs', messageId);
    const eb = EventBridgeObjectCreated.safeParse(parsed);
    if (eb.success) return [fromEventBridge(eb.data, 'sqs', messageId)];
  } catch (err) {
    // A bad key fails this message only; the rest of the batch goes on.
    return [{ kind: 'invalid', error: `SQS message ${messageId}: ${(err as Error).message}`, origin: 'sqs', messageId }];
  }
  return [{ kind: 'invalid', error: `SQS message ${messageId} carries neither an S3 notification nor an EventBridge S3 event`, origin: 'sqs', messageId }];
}

export function normaliseEvent(event: unknown): NormalisedEvent {
  if (typeof event === 'string') {
    try {
      event = JSON.parse(event);
    } catch {
      throw new InputError(`the event is a string that is not JSON; ${ACCEPTED_SHAPES}`);
    }
  }
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    throw new InputError(`the event is not a JSON object; ${ACCEPTED_SHAPES}`);
  }
  const e = event as Record<string, unknown>;
  if ('action' in e) return { jobs: fromManual(e), sqs: false };

  const sqs = SqsEvent.safeParse(e);
  if (sqs.success) {
    return { jobs: sqs.data.Records.flatMap((r) => fromSqsBody(r.body, r.messageId)), sqs: true };
  }
  const notification = S3Notification.safeParse(e);
  if (notification.success) return { jobs: fromNotification(notification.data, 's3'), sqs: false };
  const eb = EventBridgeObjectCreated.safeParse(e);
  if (eb.success) return { jobs: [fromEventBridge(eb.data, 'eventbridge')], sqs: false };
  if (S3TestEvent.safeParse(e).success) return { jobs: [{ kind: 'ignore', reason: 'S3 test event', origin: 's3' }], sqs: false };
  throw new InputError(`unrecognised event; ${ACCEPTED_SHAPES}`);
}
