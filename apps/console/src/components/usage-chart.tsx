import type { ResourceData, SessionEvent } from '@mgx/client';
import { bytes } from '../format.js';

interface Point {
  t: number;
  v: number;
}

const W = 640;
const H = 160;
const PAD = 28;
const LEFT = 64;

/** One series over time as an SVG line, its axis from 0 to `max`. */
function Line({
  points,
  max,
  t0,
  t1,
  label,
  unit,
}: {
  points: Point[];
  max: number;
  t0: number;
  t1: number;
  label: string;
  unit: (v: number) => string;
}) {
  const x = (t: number) => LEFT + ((t - t0) / Math.max(1, t1 - t0)) * (W - LEFT - PAD);
  const y = (v: number) => H - PAD - (Math.min(v, max) / Math.max(max, 1e-9)) * (H - 2 * PAD);
  const d = points.map((p, i) => `${i === 0 ? 'M' : 'L'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
  const last = points.at(-1);
  return (
    <figure class="chart">
      <figcaption>
        {label}: <strong>{last ? unit(last.v) : '–'}</strong> <span class="muted">(scale {unit(max)})</span>
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={label}>
        <line x1={LEFT} y1={H - PAD} x2={W - PAD} y2={H - PAD} class="axis" />
        <line x1={LEFT} y1={PAD} x2={LEFT} y2={H - PAD} class="axis" />
        <text x={LEFT - 4} y={PAD + 4} class="tick" text-anchor="end">
          {unit(max)}
        </text>
        <text x={LEFT - 4} y={H - PAD} class="tick" text-anchor="end">
          0
        </text>
        <text x={W - PAD} y={H - 8} class="tick" text-anchor="end">
          {`${((t1 - t0) / 1000).toFixed(0)} s`}
        </text>
        {points.length > 0 && <path d={d} class="series" />}
        {points.map((p) => (
          <circle key={p.t} cx={x(p.t)} cy={y(p.v)} r={2.5} class="dot" />
        ))}
      </svg>
    </figure>
  );
}

/** CPU (share of the session's quota) and memory (against its limit) from the RESOURCE samples. */
export function UsageChart({ events }: { events: readonly SessionEvent[] }) {
  const samples = events.filter((e) => e.type === 'RESOURCE').map((e) => ({ ts: e.ts, ...(e.data as unknown as ResourceData) }));
  if (samples.length === 0)
    return (
      <p class="muted">
        No resource sample yet: they are taken every MGX_USAGE_INTERVAL_SECONDS while the session runs, when usage changed.
      </p>
    );
  const t0 = events[0]?.ts ?? samples[0]?.ts ?? 0;
  const t1 = Math.max(...events.map((e) => e.ts));
  const limit = Math.max(...samples.map((s) => s.memoryLimitBytes));
  return (
    <div class="charts" data-samples={samples.length}>
      <Line
        label="CPU (% of quota)"
        points={samples.map((s) => ({ t: s.ts, v: s.cpuPercent }))}
        max={Math.max(100, ...samples.map((s) => s.cpuPercent))}
        t0={t0}
        t1={t1}
        unit={(v) => `${v.toFixed(0)} %`}
      />
      <Line label="Memory" points={samples.map((s) => ({ t: s.ts, v: s.memoryBytes }))} max={limit} t0={t0} t1={t1} unit={bytes} />
    </div>
  );
}
