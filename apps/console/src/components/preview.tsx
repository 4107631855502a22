import { useState } from 'preact/hooks';
import { errorText } from '../api.js';
import { useAuth } from '../auth.js';
import { ErrorBox } from '../ui.js';

/**
 * The app the agent serves on a port of its container, in a frame. The frame's address is a
 * signed preview link (the one kind of link that carries a token: it binds this session and
 * port, and expires). On the console's own origin (the path form) the frame is sandboxed
 * without an origin, so the app cannot reach the console's page or its token.
 */
/** A link on the console's own origin (the path form) is framed without an origin, to keep the console's token out of the app's reach. */
const framedWithoutOrigin = (url: string) => new URL(url).origin === location.origin;

export function Preview({ sessionId, running }: { sessionId: string; running: boolean }) {
  const { client } = useAuth();
  const [port, setPort] = useState('3000');
  const [url, setUrl] = useState<string>();
  const [error, setError] = useState<string>();
  const open = async (e: Event) => {
    e.preventDefault();
    setError(undefined);
    try {
      const link = await client.sessions.previewUrl.mutate({ sessionId, port: Number(port), ttlSeconds: 3600 });
      setUrl(link.url);
    } catch (err) {
      setError(errorText(err));
    }
  };
  if (!running && !url) return <p class="muted">A preview is reachable while the session runs.</p>;
  return (
    <div class="preview">
      <form class="row" onSubmit={(e) => void open(e)}>
        <label>
          Port
          <input name="port" type="number" min={1} max={65535} value={port} onInput={(e) => setPort(e.currentTarget.value)} />
        </label>
        <button type="submit">Open preview</button>
      </form>
      <ErrorBox error={error} />
      {url && (
        <>
          <p class="muted small">
            <a href={url} target="_blank" rel="noopener noreferrer" class="open-preview">
              Open in a new tab
            </a>
            {framedWithoutOrigin(url) &&
              ' · In this frame the app has no origin of its own, so its later requests carry no preview cookie: pages that load scripts or call their server work in a tab, or framed on a preview host name (MGX_PREVIEW_DOMAIN).'}
          </p>
          <iframe
            title="preview"
            src={url}
            // on its own host name (MGX_PREVIEW_DOMAIN) the app keeps its origin, which is not the console's
            sandbox={`allow-scripts allow-forms allow-popups${framedWithoutOrigin(url) ? '' : ' allow-same-origin'}`}
            referrerpolicy="no-referrer"
          />
        </>
      )}
    </div>
  );
}
