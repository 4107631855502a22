import { useAuth } from '../auth.js';
import { bytes, duration } from '../format.js';
import { usePolled } from '../hooks.js';
import { ErrorBox } from '../ui.js';

const DAY = 24 * 3600 * 1000;

/** What runs now (sessions.top: each running session's last sample) and what ended in the last day, per tenant. */
export function Usage() {
  const { client } = useAuth();
  const { data, error } = usePolled(
    async (signal) => {
      const [top, usage] = await Promise.all([
        client.sessions.top.query({ limit: 100 }, { signal }),
        client.tenants.usage.query({ from: Date.now() - DAY }, { signal }),
      ]);
      return { top, tenants: usage.tenants };
    },
    3000,
    [],
  );
  const { top, tenants } = data ?? {};
  return (
    <>
      <section class="card">
        <h2>Running now</h2>
        <ErrorBox error={error} />
        {top && top.items.length === 0 && <p class="muted">No session is running.</p>}
        {top && top.items.length > 0 && (
          <table class="top">
            <thead>
              <tr>
                <th>Session</th>
                <th>Framework</th>
                <th>CPU</th>
                <th>Memory</th>
                <th>Pids</th>
                <th>Up</th>
                <th>Sample age</th>
              </tr>
            </thead>
            <tbody>
              {top.items.map((r) => (
                <tr key={r.id}>
                  <td>
                    <a href={`/sessions/${r.id}`}>{r.id}</a>
                  </td>
                  <td>{r.framework}</td>
                  <td>{r.resource ? `${r.resource.cpuPercent.toFixed(0)} % of ${r.limits.cpus}` : '–'}</td>
                  <td>
                    <Meter value={r.resource?.memoryBytes ?? 0} max={r.limits.memoryBytes} />
                    {r.resource ? `${bytes(r.resource.memoryBytes)} / ${bytes(r.limits.memoryBytes)}` : '–'}
                  </td>
                  <td>{r.resource?.pids ?? '–'}</td>
                  <td>{r.startedAt ? duration(top.now - r.startedAt) : '–'}</td>
                  <td>{r.resource ? duration(top.now - r.resource.at) : '–'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      <section class="card">
        <h2>The last 24 hours</h2>
        {tenants && tenants.length === 0 && <p class="muted">No session ended in the last 24 hours.</p>}
        {tenants && tenants.length > 0 && (
          <table class="usage">
            <thead>
              <tr>
                <th>Tenant</th>
                <th>Sessions</th>
                <th>CPU seconds</th>
                <th>Memory GiB·s</th>
                <th>Wall time</th>
              </tr>
            </thead>
            <tbody>
              {tenants.map((t) => (
                <tr key={t.tenant}>
                  <td>{t.tenant}</td>
                  <td>{t.sessions}</td>
                  <td>{t.cpuSeconds.toFixed(2)}</td>
                  <td>{t.memoryGiBSeconds.toFixed(2)}</td>
                  <td>{duration(t.wallSeconds * 1000)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        <p class="muted small">A session's CPU and memory over time are on its page, under usage.</p>
      </section>
    </>
  );
}

function Meter({ value, max }: { value: number; max: number }) {
  return <meter min={0} max={max} value={value} high={max * 0.9} />;
}
