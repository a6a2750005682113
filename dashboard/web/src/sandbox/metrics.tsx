// The metrics tab: CPU, memory and disk over time (E2B's GET
// /sandboxes/{id}/metrics), charted, and the latest point in words.
import { useEffect, useMemo, useState } from 'preact/hooks';
import type uPlot from 'uplot';
import { enc, type Metric, q } from '../api';
import { bytes, ErrorNote, useClient, useLoad } from '../ui';
import { LineChart } from './chart';

const metricsPollMs = 5000;

// ranges are the windows offered, in seconds back from now; 0 is the
// sandbox's whole life (as far back as roost keeps, a day).
const ranges = [
  { id: '5m', label: '5 min', seconds: 300, words: 'the last 5 minutes' },
  { id: '1h', label: '1 h', seconds: 3600, words: 'the last hour' },
  { id: 'all', label: 'all', seconds: 0, words: 'its whole life' },
] as const;

export function MetricsTab({ id }: { id: string }) {
  const client = useClient();
  const [rangeID, setRangeID] = useState<string>('5m');
  const range = ranges.find((r) => r.id === rangeID) ?? ranges[0];
  const scheme = useScheme();
  const got = useLoad(
    () => {
      const now = Math.floor(Date.now() / 1000);
      return client.get<Metric[]>(`/sandboxes/${enc(id)}/metrics${q({ start: range.seconds ? now - range.seconds : undefined, end: now })}`);
    },
    [client, id, range.seconds],
    metricsPollMs,
  );
  const points = got.data ?? [];
  const series = useMemo(() => seriesOf(points), [got.data]);
  const last = points[points.length - 1];
  const now = Math.floor(Date.now() / 1000);
  const span: [number, number] = [range.seconds ? now - range.seconds : (points[0]?.timestampUnix ?? now - 60), now];

  return (
    <div class="metrics-tab">
      <fieldset class="range">
        <legend>Range</legend>
        {ranges.map((r) => (
          <label key={r.id} class="check">
            <input type="radio" name="metrics-range" value={r.id} checked={r.id === rangeID} onChange={() => setRangeID(r.id)} />
            <span>{r.label}</span>
          </label>
        ))}
      </fieldset>
      <ErrorNote error={got.error} />
      <Latest last={last} loading={!got.data} />
      {got.data && points.length === 0 && <p class="empty">No points in this range yet: a running sandbox is sampled every few seconds.</p>}
      {points.length > 0 && (
        <div class="charts" key={scheme}>
          <figure>
            <figcaption>CPU used (% of its {last.cpuCount} vCPUs) over {range.words}</figcaption>
            <LineChart title={`CPU use over ${range.words}`} lines={[{ label: 'CPU', colour: '--accent' }]} data={series.cpu} span={span} format={pct} max={100} />
          </figure>
          <figure>
            <figcaption>Memory used and total over {range.words}</figcaption>
            <LineChart
              title={`Memory over ${range.words}`}
              lines={[
                { label: 'used', colour: '--accent' },
                { label: 'total', colour: '--muted', dashed: true },
              ]}
              data={series.mem}
              span={span}
              format={bytes}
            />
          </figure>
          <figure>
            <figcaption>Disk used and total over {range.words}</figcaption>
            <LineChart
              title={`Disk over ${range.words}`}
              lines={[
                { label: 'used', colour: '--accent' },
                { label: 'total', colour: '--muted', dashed: true },
              ]}
              data={series.disk}
              span={span}
              format={bytes}
            />
          </figure>
        </div>
      )}
    </div>
  );
}

// Latest says the newest point in words, for every reader.
function Latest({ last, loading }: { last: Metric | undefined; loading: boolean }) {
  if (!last) return <p class="muted small">{loading ? 'Reading…' : ''}</p>;
  return (
    <dl class="facts latest" id="metrics-latest" aria-live="polite">
      <div>
        <dt>CPU</dt>
        <dd>
          {pct(last.cpuUsedPct)} of {last.cpuCount} vCPU
        </dd>
      </div>
      <div>
        <dt>Memory</dt>
        <dd>
          {bytes(last.memUsed)} of {bytes(last.memTotal)}
        </dd>
      </div>
      <div>
        <dt>Disk</dt>
        <dd>
          {bytes(last.diskUsed)} of {bytes(last.diskTotal)}
        </dd>
      </div>
      <div>
        <dt>At</dt>
        <dd>{new Date(last.timestampUnix * 1000).toLocaleTimeString()}</dd>
      </div>
    </dl>
  );
}

const pct = (v: number) => `${v.toFixed(1)}%`;

function seriesOf(points: Metric[]): { cpu: uPlot.AlignedData; mem: uPlot.AlignedData; disk: uPlot.AlignedData } {
  const x = points.map((p) => p.timestampUnix);
  return {
    cpu: [x, points.map((p) => p.cpuUsedPct)],
    mem: [x, points.map((p) => p.memUsed), points.map((p) => p.memTotal)],
    disk: [x, points.map((p) => p.diskUsed), points.map((p) => p.diskTotal)],
  };
}

// useScheme follows the browser's colour scheme, so that the charts are
// drawn again in its colours when it changes.
function useScheme(): string {
  const query = '(prefers-color-scheme: dark)';
  const [dark, setDark] = useState(() => matchMedia(query).matches);
  useEffect(() => {
    const m = matchMedia(query);
    const on = () => setDark(m.matches);
    m.addEventListener('change', on);
    return () => m.removeEventListener('change', on);
  }, []);
  return dark ? 'dark' : 'light';
}
