import { useEffect, useState } from 'preact/hooks';
import { followSession, type SessionEvent, type SessionView } from '@mgx/client';
import { errorText } from '../api.js';
import { useAuth } from '../auth.js';
import { Conversation } from '../components/conversation.js';
import { Preview } from '../components/preview.js';
import { UsageChart } from '../components/usage-chart.js';
import { WorkspaceFiles } from '../components/workspace-files.js';
import { bytes, dateTime, duration, isTerminal, summary, time } from '../format.js';
import { ErrorBox, StatusBadge } from '../ui.js';

/** Events after which the session's record (status, times) has changed. */
const LIFECYCLE = new Set(['CONTAINER_STARTED', 'START', 'CANCELLED', 'TIMEOUT', 'CONTAINER_EXITED', 'FINISH']);

const TABS = ['conversation', 'events', 'logs', 'files', 'usage', 'preview'] as const;
type Tab = (typeof TABS)[number];

/**
 * One session, live: its events as they are stored (followSession: the backlog, then the live
 * tail, resumed after a lost connection from the last event received), its status and timings,
 * and cancel.
 */
export function SessionPage({ id }: { id: string }) {
  const { client } = useAuth();
  const [session, setSession] = useState<SessionView>();
  const [events, setEvents] = useState<SessionEvent[]>([]);
  const [connection, setConnection] = useState('connecting');
  const [error, setError] = useState<string>();
  const [tab, setTab] = useState<Tab>('conversation');
  const [cancelling, setCancelling] = useState(false);

  useEffect(() => {
    const ac = new AbortController();
    // refreshes overlap (one per lifecycle event): an older answer never replaces a newer one
    let asked = 0;
    let shown = 0;
    const refresh = () => {
      const n = ++asked;
      return client.sessions.get.query({ sessionId: id }, { signal: ac.signal }).then(
        (s) => {
          if (ac.signal.aborted || n < shown) return;
          shown = n;
          setSession(s);
          setError(undefined);
        },
        (err: unknown) => !ac.signal.aborted && setError(errorText(err)),
      );
    };
    void refresh();
    setEvents([]);
    // events arrive in batches: one render per batch, not per event
    let pending: SessionEvent[] = [];
    const flush = () => {
      const batch = pending;
      pending = [];
      if (batch.length > 0) setEvents((prev) => [...prev, ...batch]);
    };
    void (async () => {
      try {
        for await (const ev of followSession(client, id, { signal: ac.signal, onState: (s) => setConnection(s) })) {
          if (pending.length === 0) queueMicrotask(flush);
          pending.push(ev);
          if (LIFECYCLE.has(ev.type)) void refresh();
        }
        flush();
        if (!ac.signal.aborted) setConnection('ended');
      } catch (err) {
        if (!ac.signal.aborted) {
          setConnection('failed');
          setError(errorText(err));
        }
      }
    })();
    return () => ac.abort();
  }, [client, id]);

  const cancel = async () => {
    setCancelling(true);
    try {
      await client.sessions.cancel.mutate({ sessionId: id });
    } catch (err) {
      setError(errorText(err));
    } finally {
      setCancelling(false);
    }
  };

  const running = session?.status === 'running';
  const ended = session ? isTerminal(session.status) : false;
  const finish = events.find((e) => e.type === 'FINISH');
  return (
    <div class="session" data-session={id}>
      <section class="card">
        <div class="row spread">
          <h2>
            Session <code>{id}</code> {session && <StatusBadge status={session.status} />}
          </h2>
          <div class="row">
            <span class={`conn conn-${connection}`} data-connection={connection}>
              {connection === 'pending' ? 'live' : connection}
            </span>
            {session && !ended && (
              <button type="button" class="danger" onClick={() => void cancel()} disabled={cancelling}>
                Cancel
              </button>
            )}
          </div>
        </div>
        <ErrorBox error={error} />
        {session && (
          <dl class="facts">
            <dt>Framework</dt>
            <dd>{session.framework}</dd>
            <dt>Workspace</dt>
            <dd>
              <code>{session.workspaceId}</code>
            </dd>
            {session.tenant !== undefined && (
              <>
                <dt>Tenant</dt>
                <dd>{session.tenant}</dd>
              </>
            )}
            <dt>Created</dt>
            <dd>{dateTime(session.createdAt)}</dd>
            <dt>Waited</dt>
            <dd>{session.startedAt ? duration(session.startedAt - session.createdAt) : '–'}</dd>
            <dt>Ran for</dt>
            <dd>{session.startedAt ? duration((session.endedAt ?? Date.now()) - session.startedAt) : '–'}</dd>
            <dt>Deadline</dt>
            <dd>{time(session.deadlineAt)}</dd>
            <dt>Limits</dt>
            <dd>
              {bytes(session.limits.memoryBytes)}, {session.limits.cpuQuota / 100_000} CPU, {session.limits.timeoutSeconds} s
            </dd>
            {session.reason && (
              <>
                <dt>Ended</dt>
                <dd>
                  {session.reason}
                  {session.exitCode !== null ? ` (exit ${session.exitCode})` : ''}
                  {session.message ? `: ${session.message}` : ''}
                </dd>
              </>
            )}
            {session.usage && (
              <>
                <dt>Used</dt>
                <dd>
                  {session.usage.cpuSeconds.toFixed(2)} CPU s, peak {bytes(session.usage.memoryPeakBytes)}, {duration(session.usage.wallMs)}{' '}
                  wall
                </dd>
              </>
            )}
          </dl>
        )}
        {session?.prompt !== undefined && (
          <details>
            <summary>Prompt</summary>
            <pre class="prompt">{session.prompt}</pre>
          </details>
        )}
      </section>
      <nav class="tabs" role="tablist">
        {TABS.map((t) => (
          <button
            type="button"
            role="tab"
            aria-selected={tab === t}
            class={tab === t ? 'active' : ''}
            onClick={() => setTab(t)}
            key={t}
            data-tab={t}
          >
            {t}
            {t === 'events' ? ` (${events.length})` : ''}
          </button>
        ))}
      </nav>
      <section class="card" data-panel={tab}>
        {tab === 'conversation' && <Conversation events={events} />}
        {tab === 'events' && <EventTable events={events} />}
        {tab === 'logs' && <Logs events={events} />}
        {tab === 'files' && (
          <>
            <FilesChanged events={events} />
            {session && <WorkspaceFiles workspaceId={session.workspaceId} live={!ended} />}
          </>
        )}
        {tab === 'usage' && <UsageChart events={events} />}
        {tab === 'preview' && <Preview sessionId={id} running={running} />}
      </section>
      {finish && <p class="muted">FINISH at seq {finish.seq}: the stream has ended.</p>}
    </div>
  );
}

/** Every event as it arrived, one row per seq. */
function EventTable({ events }: { events: readonly SessionEvent[] }) {
  return (
    <table class="events">
      <thead>
        <tr>
          <th>seq</th>
          <th>time</th>
          <th>type</th>
          <th>data</th>
        </tr>
      </thead>
      <tbody>
        {events.map((e) => (
          <tr key={e.seq} data-seq={e.seq} class={`ev-${e.type}`}>
            <td>{e.seq}</td>
            <td>{time(e.ts)}</td>
            <td>{e.type}</td>
            <td>
              <code>{summary(e.data)}</code>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Logs({ events }: { events: readonly SessionEvent[] }) {
  const logs = events.filter((e) => e.type === 'LOG');
  if (logs.length === 0) return <p class="muted">No logs yet (container output is stored when the session ends).</p>;
  return (
    <pre class="logs">
      {logs.map((e) => (
        <span key={e.seq} class={`log-${String(e.data.stream)}`}>
          {String(e.data.text)}
          {'\n'}
        </span>
      ))}
    </pre>
  );
}

function FilesChanged({ events }: { events: readonly SessionEvent[] }) {
  const changes = events.filter((e) => e.type === 'FILE_CHANGED');
  return (
    <div>
      <h3>Files changed</h3>
      {changes.length === 0 ? (
        <p class="muted">None reported.</p>
      ) : (
        <ul class="changes">
          {changes.map((e) => (
            <li key={e.seq}>
              <code>{String(e.data.path)}</code> {typeof e.data.change === 'string' ? e.data.change : ''}
              {typeof e.data.bytes === 'number' ? ` (${bytes(e.data.bytes)})` : ''}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}
