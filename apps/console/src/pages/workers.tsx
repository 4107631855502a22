import { useAuth } from '../auth.js';
import { dateTime, duration } from '../format.js';
import { usePolled } from '../hooks.js';
import { ErrorBox } from '../ui.js';

/** The fleet's workers, for operators (system.workers); refreshed every 5 s. */
export function Workers() {
  const { client } = useAuth();
  const { data, error } = usePolled((signal) => client.system.workers.query(undefined, { signal }), 5000, []);
  return (
    <section class="card">
      <h2>Workers</h2>
      <ErrorBox error={error} />
      {data && (
        <table class="workers">
          <thead>
            <tr>
              <th>Worker</th>
              <th>Host</th>
              <th>State</th>
              <th>In use</th>
              <th>Last heartbeat</th>
              <th>Engine</th>
              <th>Version</th>
              <th>Started</th>
            </tr>
          </thead>
          <tbody>
            {data.workers.map((w) => (
              <tr key={w.id} data-worker={w.id}>
                <td>
                  <code>{w.id}</code>
                </td>
                <td>{w.hostname}</td>
                <td>
                  <span class={`badge worker-${w.state}`}>{w.state}</span>
                  {w.leaseExpired ? ' (lease expired)' : ''}
                </td>
                <td>
                  {w.inUse} / {w.capacity}
                </td>
                <td>{duration(data.now - w.lastHeartbeat)} ago</td>
                <td>{w.engine}</td>
                <td>{w.version}</td>
                <td>{dateTime(w.startedAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
