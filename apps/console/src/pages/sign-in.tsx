import { useState } from 'preact/hooks';
import { clientFor, errorText } from '../api.js';
import { ErrorBox } from '../ui.js';

/** Sign in with an API token (MGX_API_TOKENS or MGX_OPERATOR_TOKENS), checked with one call before it is kept. */
export function SignIn({ onSignedIn }: { onSignedIn: (token: string) => void }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      await clientFor(token.trim()).sessions.list.query({ limit: 1 });
      onSignedIn(token.trim());
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="sign-in">
      <form class="card" onSubmit={(e) => void submit(e)}>
        <h1>mgx console</h1>
        <p class="muted">Agent sessions in isolated containers. Sign in with your API token.</p>
        <label>
          Token
          <input
            name="token"
            type="password"
            autocomplete="current-password"
            value={token}
            onInput={(e) => setToken(e.currentTarget.value)}
            placeholder="leave empty on a loopback server without tokens"
          />
        </label>
        <button type="submit" disabled={busy}>
          Sign in
        </button>
        <ErrorBox error={error} />
        <p class="muted small">The token is kept in this tab only (sessionStorage) and sent as a header, never in a URL.</p>
      </form>
    </main>
  );
}
