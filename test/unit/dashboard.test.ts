/**
 * The CloudWatch dashboard of infra/failure-queue-and-alarms.yml shows only metrics the code emits: the same
 * namespace, names and dimensions as the embedded-metric lines of functions/publish/metrics.ts (taken from a
 * record the code writes, not from constants), and the failure queue of the same stack. So the picture cannot
 * silently go blank when a metric is renamed.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import YAML from 'yaml';
import { metricsRecord, metricsRecords } from '../../functions/publish/metrics';
import type { JobSummary } from '../../functions/publish/run-job';

interface Template {
  Parameters: Record<string, unknown>;
  Resources: Record<string, { Type: string; Properties: Record<string, unknown> }>;
}
type MetricLine = [string, string, ...unknown[]];
interface Widget {
  type: string;
  properties: { title?: string; metrics?: MetricLine[]; period?: number; stat?: string; alarms?: string[]; annotations?: { alarms?: string[] } };
}

const template = YAML.parse(readFileSync('infra/failure-queue-and-alarms.yml', 'utf8')) as Template;
const dashboard = template.Resources.Dashboard;
const body = (dashboard?.Properties.DashboardBody as { 'Fn::Sub': string })['Fn::Sub'];
const references = [...body.matchAll(/\$\{([^}]+)\}/g)].map((m) => m[1] as string);
// CloudFormation fills these in; for reading the JSON, each becomes its own name.
const widgets = (JSON.parse(body.replace(/\$\{([^}]+)\}/g, '<$1>')) as { widgets: Widget[] }).widgets;

/** What the code writes for one job: the namespace, dimension sets, metric names and dimension values. */
const summary: JobSummary = { job: 'publish', outcome: 'published', bytesUploaded: 1, bytesRead: 1, blobsUploaded: 1, blobsSkipped: 0, durationMs: 1 };
const record = metricsRecord(summary) as { _aws: { CloudWatchMetrics: Array<{ Namespace: string; Dimensions: string[][]; Metrics: Array<{ Name: string }> }> } } & Record<string, unknown>;
const emitted = record._aws.CloudWatchMetrics[0] as { Namespace: string; Dimensions: string[][]; Metrics: Array<{ Name: string }> };
const emittedNames = emitted.Metrics.map((m) => m.Name);

function split(line: MetricLine): { namespace: string; name: string; dimensions: Record<string, unknown>; options: Record<string, unknown> } {
  const [namespace, name, ...rest] = line;
  const options = rest.length % 2 === 1 ? (rest.pop() as Record<string, unknown>) : {};
  const dimensions: Record<string, unknown> = {};
  for (let i = 0; i < rest.length; i += 2) dimensions[rest[i] as string] = rest[i + 1];
  return { namespace, name, dimensions, options };
}

/** What the code writes per destination: the dimension set and the value of Service (from a job to two). */
const perTarget = metricsRecords({ ...summary, targets: [{ target: 'a/gl', outcome: 'published' }, { target: 'b/gl', outcome: 'failed' }] }).slice(1) as Array<typeof record>;

const metricWidgets = widgets.filter((w) => w.type === 'metric');
const isExpression = (l: MetricLine): boolean => typeof l[0] === 'object';
const lines = metricWidgets.flatMap((w) => (w.properties.metrics ?? []).filter((l) => !isExpression(l)).map((l) => ({ widget: w, ...split(l) })));
const searches = metricWidgets.flatMap((w) => (w.properties.metrics ?? []).filter(isExpression).map((l) => ({ widget: w, expression: (l[0] as unknown as { expression: string }).expression })));

describe('the CloudWatch dashboard (infra/failure-queue-and-alarms.yml)', () => {
  it('refers only to parameters, pseudo-parameters and resources of its stack', () => {
    assert.ok(references.length > 0);
    for (const ref of references) {
      const [name] = ref.split('.');
      assert.ok(ref.startsWith('AWS::') || (name as string) in template.Parameters || (name as string) in template.Resources, `\${${ref}} names nothing in the template`);
    }
  });

  it("shows only metrics the code emits, with the code's namespace and dimensions", () => {
    const own = lines.filter((l) => l.namespace === emitted.Namespace);
    assert.ok(own.length > 0);
    for (const l of own) {
      assert.ok(emittedNames.includes(l.name), `${l.widget.properties.title}: ${l.name} is not a metric the code emits (${emittedNames.join(', ')})`);
      assert.ok(emitted.Dimensions.some((set) => JSON.stringify([...set].sort()) === JSON.stringify(Object.keys(l.dimensions).sort())), `${l.name}: dimensions ${Object.keys(l.dimensions).join(',')}`);
      for (const [k, v] of Object.entries(l.dimensions)) assert.equal(v, record[k], `${l.name}: dimension ${k}`);
    }
    const others = lines.filter((l) => l.namespace !== emitted.Namespace);
    for (const l of others) {
      assert.deepEqual([l.namespace, l.name, l.dimensions], ['AWS/SQS', 'ApproximateNumberOfMessagesVisible', { QueueName: '<FailureQueue.QueueName>' }], 'the failure queue of this stack, as its alarm watches it');
    }
    const alarm = template.Resources.FailureQueueDepthAlarm?.Properties as { Namespace: string; MetricName: string };
    assert.deepEqual([alarm.Namespace, alarm.MetricName], ['AWS/SQS', 'ApproximateNumberOfMessagesVisible']);
  });

  it('shows failures and bytes by destination from searches over metrics the code emits per destination', () => {
    assert.deepEqual(new Set(perTarget.map((r) => r.Target)), new Set(['a/gl', 'b/gl']), 'one line per destination');
    const emittedPerTarget = perTarget[0]?._aws.CloudWatchMetrics[0] as { Namespace: string; Dimensions: string[][]; Metrics: Array<{ Name: string }> };
    const shown = new Set<string>();
    for (const { widget, expression } of searches) {
      const m = /^SEARCH\('\{([^}]+)\} Service="([^"]+)" MetricName="(\w+)"', 'Sum', (\d+)\)$/.exec(expression);
      assert.ok(m, `${widget.properties.title}: ${expression}`);
      const [namespace, ...dimensions] = (m[1] as string).split(',');
      assert.equal(namespace, emittedPerTarget.Namespace);
      assert.ok(emittedPerTarget.Dimensions.some((set) => JSON.stringify(set) === JSON.stringify(dimensions)), `${widget.properties.title}: dimensions ${dimensions.join(',')}`);
      assert.equal(m[2], perTarget[0]?.Service);
      assert.ok(emittedPerTarget.Metrics.some((x) => x.Name === m[3]), `${m[3]} is emitted per destination`);
      shown.add(m[3] as string);
    }
    assert.deepEqual([...shown].sort(), ['BytesUploaded', 'Failed']);
  });

  it('shows publications by outcome, bytes uploaded and duration p50/p95, per hour and per day', () => {
    const shown = (name: string, period: number, stat?: string) =>
      lines.some((l) => l.name === name && ((l.options.period as number | undefined) ?? l.widget.properties.period) === period && (stat === undefined || ((l.options.stat as string | undefined) ?? l.widget.properties.stat) === stat));
    for (const period of [3600, 86400]) {
      for (const name of ['Published', 'Unchanged', 'Skipped', 'Failed']) assert.ok(shown(name, period, 'Sum'), `${name} per ${period} s`);
      assert.ok(shown('BytesUploaded', period, 'Sum'), `BytesUploaded per ${period} s`);
      assert.ok(shown('Duration', period, 'p50') && shown('Duration', period, 'p95'), `Duration p50 and p95 per ${period} s`);
      assert.ok(shown('ApproximateNumberOfMessagesVisible', period), `the failure queue per ${period} s`);
    }
  });

  it("shows the failure queue's alarm, and the stack's alarms exist", () => {
    const alarms = widgets.flatMap((w) => [...(w.properties.alarms ?? []), ...(w.properties.annotations?.alarms ?? [])]);
    assert.ok(alarms.includes('<FailureQueueDepthAlarm.Arn>'));
    for (const a of alarms) {
      const name = /^<(\w+)\.Arn>$/.exec(a)?.[1] as string;
      assert.equal(template.Resources[name]?.Type, 'AWS::CloudWatch::Alarm', a);
    }
  });

  it("shows every alarm of the stack in its alarm widget", () => {
    const shown = widgets.filter((w) => w.type === 'alarm').flatMap((w) => w.properties.alarms ?? []);
    const defined = Object.entries(template.Resources).filter(([, r]) => r.Type === 'AWS::CloudWatch::Alarm').map(([name]) => `<${name}.Arn>`);
    assert.deepEqual([...shown].sort(), [...defined].sort());
  });

  it("alarms on this function's throttles, on events Lambda dropped and on events it failed to deliver to the failure queue", () => {
    const alarms = Object.values(template.Resources).filter((r) => r.Type === 'AWS::CloudWatch::Alarm').map((r) => r.Properties);
    for (const metric of ['Throttles', 'AsyncEventsDropped', 'DestinationDeliveryFailures']) {
      const found = alarms.filter((a) => a.MetricName === metric);
      assert.equal(found.length, 1, metric);
      const a = found[0] as Record<string, unknown>;
      // Lambda's per-function metrics: namespace AWS/Lambda, dimension FunctionName (the stack's parameter).
      assert.equal(a.Namespace, 'AWS/Lambda', metric);
      assert.deepEqual(a.Dimensions, [{ Name: 'FunctionName', Value: { Ref: 'FunctionName' } }], metric);
      assert.equal(a.Statistic, 'Sum', metric);
      assert.equal(a.ComparisonOperator, 'GreaterThanThreshold', metric);
      assert.equal(a.Threshold, 0, metric);
      assert.deepEqual(a.AlarmActions, [{ Ref: 'AlarmTopic' }], `${metric} notifies the topic`);
      const description = a.AlarmDescription as string | { 'Fn::Sub': string };
      assert.match(typeof description === 'string' ? description : description['Fn::Sub'], /\(docs\/operations\.md, "Alarms"\)$/, `${metric} says where to read on`);
    }
    // Throttles are expected for a while in a release burst: only throttling that lasts alarms.
    const throttles = alarms.find((a) => a.MetricName === 'Throttles') as Record<string, unknown>;
    assert.deepEqual([throttles.EvaluationPeriods, throttles.DatapointsToAlarm], [{ Ref: 'ThrottleAlarmPeriods' }, { Ref: 'ThrottleAlarmPeriods' }]);
    assert.equal((template.Parameters.ThrottleAlarmPeriods as { Default: number }).Default, 12);
  });
});
