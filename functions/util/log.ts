/**
 * Structured JSON logging: one JSON object per line on stdout, which CloudWatch (JSON log format) indexes as is.
 * Field names that could hold a secret are redacted whatever their value, as a last line of defence: the
 * registry client never passes credentials or headers to the logger in the first place.
 */
import { describeError, PublishError } from './errors';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogSink = (line: string) => void;
export type LogFields = Record<string, unknown>;

const SECRET_KEY = /authorization|password|passwd|secret|token|credential|cookie/i;

function sanitize(value: unknown, depth = 0): unknown {
  if (value instanceof Error) {
    const out: LogFields = { name: value.name, message: describeError(value) };
    if (value instanceof PublishError) out.kind = value.kind;
    const extra = value as unknown as { code?: unknown; status?: unknown };
    if (typeof extra.code === 'string') out.code = extra.code;
    if (typeof extra.status === 'number') out.status = extra.status;
    return out;
  }
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => sanitize(v, depth + 1));
  if (value instanceof Date) return value.toISOString();
  const out: LogFields = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEY.test(k) ? '[redacted]' : sanitize(v, depth + 1);
  return out;
}

export class Logger {
  private readonly fields: LogFields;
  readonly level: LogLevel;
  private readonly sink: LogSink;

  constructor(options: { level?: LogLevel; sink?: LogSink; fields?: LogFields } = {}) {
    this.level = options.level ?? 'info';
    this.sink = options.sink ?? ((line) => process.stdout.write(line + '\n'));
    this.fields = options.fields ?? {};
  }

  child(fields: LogFields): Logger {
    return new Logger({ level: this.level, sink: this.sink, fields: { ...this.fields, ...fields } });
  }

  debug(msg: string, fields?: LogFields): void {
    this.log('debug', msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    this.log('info', msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    this.log('warn', msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.log('error', msg, fields);
  }

  /**
   * Writes a record as it is, whatever the level: for CloudWatch's embedded metric format, whose `_aws` key must
   * be at the top of the line.
   */
  raw(record: LogFields): void {
    this.sink(JSON.stringify(sanitize(record)));
  }

  private log(level: LogLevel, msg: string, fields?: LogFields): void {
    if (LEVELS[level] < LEVELS[this.level]) return;
    const record = sanitize({ time: new Date().toISOString(), level, msg, ...this.fields, ...fields });
    this.sink(JSON.stringify(record));
  }
}

/** A logger that keeps its lines in memory: for tests and for the CLI's quiet mode. */
export function memoryLogger(level: LogLevel = 'debug'): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: new Logger({ level, sink: (l) => lines.push(l) }), lines };
}
