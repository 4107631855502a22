import { useMemo, useState } from 'preact/hooks';
import { LocationProvider, Route, Router } from 'preact-iso';
import { clientFor, forgetToken, savedToken, saveToken } from './api.js';
import { AuthContext, type Auth } from './auth.js';
import { NewSession } from './pages/new-session.js';
import { SessionPage } from './pages/session.js';
import { Sessions } from './pages/sessions.js';
import { SignIn } from './pages/sign-in.js';
import { Usage } from './pages/usage.js';
import { Workers } from './pages/workers.js';

function NotFound() {
  return (
    <section class="card">
      <h2>Not found</h2>
      <p>
        No such page. <a href="/">Sessions</a>
      </p>
    </section>
  );
}

export function App() {
  const [token, setToken] = useState<string | null>(savedToken);
  const auth = useMemo<Auth | null>(
    () =>
      token === null
        ? null
        : {
            token,
            client: clientFor(token),
            signOut: () => {
              forgetToken();
              setToken(null);
            },
          },
    [token],
  );
  if (!auth)
    return (
      <SignIn
        onSignedIn={(t) => {
          saveToken(t);
          setToken(t);
        }}
      />
    );
  return (
    <AuthContext.Provider value={auth}>
      <LocationProvider>
        <header class="top">
          <a class="brand" href="/">
            mgx
          </a>
          <nav>
            <a href="/">Sessions</a>
            <a href="/new">New session</a>
            <a href="/usage">Usage</a>
            <a href="/workers">Workers</a>
          </nav>
          <button type="button" class="link" onClick={auth.signOut}>
            Sign out
          </button>
        </header>
        <main>
          <Router>
            <Route path="/" component={Sessions} />
            <Route path="/new" component={NewSession} />
            <Route path="/sessions/:id" component={SessionPage} />
            <Route path="/usage" component={Usage} />
            <Route path="/workers" component={Workers} />
            <Route default component={NotFound} />
          </Router>
        </main>
      </LocationProvider>
    </AuthContext.Provider>
  );
}
