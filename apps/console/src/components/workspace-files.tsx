import { downloadFile, errorText } from '../api.js';
import { useAuth } from '../auth.js';
import { bytes, dateTime } from '../format.js';
import { usePolled } from '../hooks.js';
import { ErrorBox } from '../ui.js';

/** The workspace's files (the whole tree), each file downloadable; names are the agent's, shown as text. */
export function WorkspaceFiles({ workspaceId, live }: { workspaceId: string; live: boolean }) {
  const { client, token } = useAuth();
  const { data, error, setError } = usePolled(
    (signal) => client.workspaces.files.query({ workspaceId, recursive: true, limit: 1000 }, { signal }),
    live ? 3000 : 0,
    [workspaceId, live],
  );
  const entries = data?.entries;
  const download = (path: string) => downloadFile(token, workspaceId, path).catch((err: unknown) => setError(errorText(err)));
  return (
    <div>
      <p class="muted">
        Workspace <code>{workspaceId}</code>
      </p>
      <ErrorBox error={error} />
      {entries && entries.length === 0 && <p class="muted">The workspace is empty.</p>}
      {entries && entries.length > 0 && (
        <table class="files">
          <thead>
            <tr>
              <th>Path</th>
              <th>Type</th>
              <th>Size</th>
              <th>Modified</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {entries.map((f) => (
              <tr key={f.path} data-path={f.path}>
                <td>
                  <code>{f.path}</code>
                  {f.target !== undefined && <span class="muted"> → {f.target}</span>}
                </td>
                <td>{f.type}</td>
                <td>{f.type === 'file' ? bytes(f.size) : ''}</td>
                <td>{dateTime(f.mtime)}</td>
                <td>
                  {f.type === 'file' && (
                    <button type="button" class="small" onClick={() => void download(f.path)}>
                      Download
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
