import { useEffect, useState } from 'preact/hooks';
import { useLocation } from 'preact-iso';
import type { FrameworkInfo } from '@mgx/client';
import { errorText } from '../api.js';
import { useAuth } from '../auth.js';
import { ErrorBox } from '../ui.js';

interface PropertySchema {
  type?: string | string[];
  description?: string;
  items?: { type?: string };
  enum?: unknown[];
  default?: unknown;
}

/** What a field of the options form holds, as typed, until the form is sent. */
type Raw = Record<string, string | boolean>;

function propertiesOf(schema: Record<string, unknown>): [string, PropertySchema][] {
  const props = schema.properties;
  return props && typeof props === 'object' ? Object.entries(props as Record<string, PropertySchema>) : [];
}

const typeOf = (p: PropertySchema) => (Array.isArray(p.type) ? p.type[0] : p.type);

/** The options object from the form's fields, by the framework's schema; throws naming a bad field. */
function optionsFrom(schema: Record<string, unknown>, raw: Raw): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, p] of propertiesOf(schema)) {
    const v = raw[name];
    if (v === undefined || v === '') continue;
    const type = typeOf(p);
    if (type === 'boolean') {
      if (v === true) out[name] = true;
    } else if (type === 'number' || type === 'integer') {
      const n = Number(v);
      if (!Number.isFinite(n)) throw new Error(`option ${name} must be a number`);
      out[name] = n;
    } else if (type === 'array' && p.items?.type === 'string' && typeof v === 'string' && !v.trim().startsWith('[')) {
      // one item per line
      out[name] = v.split('\n').filter((line) => line !== '');
    } else if (type === 'string' || p.enum) {
      out[name] = v;
    } else {
      try {
        out[name] = JSON.parse(String(v));
      } catch {
        throw new Error(`option ${name} must be JSON`);
      }
    }
  }
  return out;
}

/** A new session: the framework from frameworks.list, its options from its schema, prompt and limits. */
export function NewSession() {
  const { client } = useAuth();
  const { route } = useLocation();
  const [frameworks, setFrameworks] = useState<FrameworkInfo[]>();
  const [framework, setFramework] = useState('');
  const [options, setOptions] = useState<Raw>({});
  const [prompt, setPrompt] = useState('');
  const [timeout, setTimeoutSeconds] = useState('');
  const [memory, setMemory] = useState('');
  const [cpus, setCpus] = useState('');
  const [workspaceId, setWorkspaceId] = useState('');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    client.frameworks.list.query().then(
      (list) => {
        setFrameworks(list);
        setFramework((f) => f || (list[0]?.name ?? ''));
      },
      (err: unknown) => setError(errorText(err)),
    );
  }, [client]);

  const chosen = frameworks?.find((f) => f.name === framework);
  const submit = async (e: Event) => {
    e.preventDefault();
    if (!chosen) return;
    setBusy(true);
    setError(undefined);
    try {
      const s = await client.sessions.create.mutate({
        framework,
        prompt,
        options: optionsFrom(chosen.optionsSchema, options),
        ...(timeout ? { timeoutSeconds: Number(timeout) } : {}),
        ...(memory ? { memory } : {}),
        ...(cpus ? { cpus: Number(cpus) } : {}),
        ...(workspaceId ? { workspaceId } : {}),
      });
      route(`/sessions/${s.id}`);
    } catch (err) {
      setError(errorText(err));
      setBusy(false);
    }
  };

  const required = new Set((chosen?.optionsSchema.required as string[] | undefined) ?? []);
  return (
    <form class="card new-session" onSubmit={(e) => void submit(e)}>
      <h2>New session</h2>
      <label>
        Framework
        <select
          name="framework"
          value={framework}
          onChange={(e) => {
            setFramework(e.currentTarget.value);
            setOptions({});
          }}
        >
          {frameworks?.map((f) => (
            <option key={f.name} value={f.name}>
              {f.name}
            </option>
          ))}
        </select>
      </label>
      {chosen && <p class="muted">{chosen.description}</p>}
      {chosen && propertiesOf(chosen.optionsSchema).length > 0 && (
        <fieldset>
          <legend>Options</legend>
          {propertiesOf(chosen.optionsSchema).map(([name, p]) => {
            const type = typeOf(p);
            const label = `${name}${required.has(name) ? ' *' : ''}`;
            const set = (v: string | boolean) => setOptions({ ...options, [name]: v });
            return (
              <label key={name} class={type === 'boolean' ? 'check' : ''}>
                {type === 'boolean' ? (
                  <input
                    type="checkbox"
                    name={`option-${name}`}
                    checked={options[name] === true}
                    onChange={(e) => set(e.currentTarget.checked)}
                  />
                ) : null}
                {label}
                {p.enum ? (
                  <select name={`option-${name}`} value={String(options[name] ?? '')} onChange={(e) => set(e.currentTarget.value)}>
                    <option value="" />
                    {p.enum.map((v) => (
                      <option key={String(v)} value={String(v)}>
                        {String(v)}
                      </option>
                    ))}
                  </select>
                ) : type === 'boolean' ? null : type === 'array' || type === 'object' || type === undefined ? (
                  <textarea
                    name={`option-${name}`}
                    rows={3}
                    value={String(options[name] ?? '')}
                    placeholder={type === 'array' && p.items?.type === 'string' ? 'one item per line, or a JSON array' : 'JSON'}
                    onInput={(e) => set(e.currentTarget.value)}
                  />
                ) : (
                  <input
                    name={`option-${name}`}
                    type={type === 'number' || type === 'integer' ? 'number' : 'text'}
                    step="any"
                    value={String(options[name] ?? '')}
                    onInput={(e) => set(e.currentTarget.value)}
                  />
                )}
                {p.description && <small class="muted">{p.description}</small>}
              </label>
            );
          })}
        </fieldset>
      )}
      <label>
        Prompt
        <textarea name="prompt" rows={6} value={prompt} onInput={(e) => setPrompt(e.currentTarget.value)} />
      </label>
      <fieldset class="row">
        <legend>Limits (empty: the server's defaults)</legend>
        <label>
          Timeout (s)
          <input name="timeoutSeconds" type="number" min={1} value={timeout} onInput={(e) => setTimeoutSeconds(e.currentTarget.value)} />
        </label>
        <label>
          Memory
          <input name="memory" placeholder="512m" value={memory} onInput={(e) => setMemory(e.currentTarget.value)} />
        </label>
        <label>
          CPUs
          <input name="cpus" type="number" step="0.1" min={0.1} value={cpus} onInput={(e) => setCpus(e.currentTarget.value)} />
        </label>
        <label>
          Workspace
          <input name="workspaceId" placeholder="a new one" value={workspaceId} onInput={(e) => setWorkspaceId(e.currentTarget.value)} />
        </label>
      </fieldset>
      <ErrorBox error={error} />
      <button type="submit" disabled={busy || !chosen}>
        Start session
      </button>
    </form>
  );
}
