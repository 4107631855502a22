import { useState } from 'preact/hooks';
import type { SessionStatus } from '@mgx/client';
import { useAuth } from '../auth.js';
import { dateTime, duration, STATUSES } from '../format.js';
import { usePolled } from '../hooks.js';
import { ErrorBox, StatusBadge } from '../ui.js';

const FILTERS: Record<string, SessionStatus[] | undefined> = {
  all: undefined,
  active: ['queued', 'starting', 'running'],
  ended: ['succeeded', 'failed', 'timed_out', 'cancelled'],
  ...Object.fromEntries(STATUSES.map((s) => [s, [s]])),
};

/** The caller's sessions, newest first, with status filters and paging; refreshed every 2 s. */
export function Sessions() {
  const { client } = useAuth();
  const [filter, setFilter] = useState('all');
  const [tenant, setTenant] = useState('');
  const [limit, setLimit] = useState(20);
  // the cursor of each page seen so far: back goes to the one before
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const cursor = cursors.at(-1);

  const { data: page, error } = usePolled(
    async (signal) => {
      const status = FILTERS[filter];
      const res = await client.sessions.list.query(
        { limit, ...(status ? { status } : {}), ...(cursor ? { cursor } : {}), ...(tenant ? { tenant } : {}) },
        { signal },
      );
      return { items: res.items, nextCursor: res.nextCursor ?? null };
    },
    2000,
    [filter, tenant, limit, cursor],
  );

  const restart = () => setCursors([undefined]);
  const showTenant = page?.items.some((s) => s.tenant !== undefined) ?? false;
  return (
    <section class="card">
      <div class="row spread">
        <h2>Sessions</h2>
        <a class="button" href="/new">
          New session
        </a>
      </div>
      <form class="filters row" onSubmit={(e) => e.preventDefault()}>
        <label>
          Status
          <select
            name="status"
            value={filter}
            onChange={(e) => {
              setFilter(e.currentTarget.value);
              restart();
            }}
          >
            {Object.keys(FILTERS).map((f) => (
              <option value={f} key={f}>
                {f}
              </option>
            ))}
          </select>
        </label>
        <label>
          Tenant (operators)
          <input
            name="tenant"
            value={tenant}
            placeholder="every tenant"
            onChange={(e) => {
              setTenant(e.currentTarget.value.trim());
              restart();
            }}
          />
        </label>
        <label>
          Per page
          <select
            name="limit"
            value={String(limit)}
            onChange={(e) => {
              setLimit(Number(e.currentTarget.value));
              restart();
            }}
          >
            {[10, 20, 50, 100].map((n) => (
              <option key={n} value={String(n)}>
                {n}
              </option>
            ))}
          </select>
        </label>
      </form>
      <ErrorBox error={error} />
      <table class="sessions">
        <thead>
          <tr>
            <th>Session</th>
            <th>Status</th>
            <th>Framework</th>
            {showTenant && <th>Tenant</th>}
            <th>Created</th>
            <th>Ran for</th>
            <th>Reason</th>
          </tr>
        </thead>
        <tbody>
          {page?.items.map((s) => (
            <tr key={s.id} data-session={s.id}>
              <td>
                <a href={`/sessions/${s.id}`}>{s.id}</a>
              </td>
              <td>
                <StatusBadge status={s.status} />
              </td>
              <td>{s.framework}</td>
              {showTenant && <td>{s.tenant}</td>}
              <td>{dateTime(s.createdAt)}</td>
              <td>{s.startedAt ? duration((s.endedAt ?? Date.now()) - s.startedAt) : '–'}</td>
              <td>{s.reason ?? ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {page && page.items.length === 0 && <p class="muted">No sessions{filter !== 'all' ? ` (${filter})` : ''}.</p>}
      <div class="row pager">
        <button type="button" disabled={cursors.length < 2} onClick={() => setCursors(cursors.slice(0, -1))}>
          ← Newer
        </button>
        <span class="muted">page {cursors.length}</span>
        <button type="button" disabled={!page?.nextCursor} onClick={() => page?.nextCursor && setCursors([...cursors, page.nextCursor])}>
          Older →
        </button>
      </div>
    </section>
  );
}
