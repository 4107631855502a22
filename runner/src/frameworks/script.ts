import { access, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { ExitWithoutFinish, type Framework, type FrameworkContext, type FrameworkResult } from '@mgx/agent-sdk';

/** One step of a script prompt `{"steps":[...]}`. */
export type ScriptStep =
  | { say: string }
  | { sleep: number }
  | { write: { path: string; content: string } }
  | { alloc_mb: number }
  | { events: { count: number; size: number } }
  | { exit: number }
  | { fail: string }
  | { ignore_sigterm: boolean }
  | { print: { stream: 'stdout' | 'stderr'; text: string } }
  | { symlink: { path: string; target: string } }
  | { getenv: string }
  | { getsecret: string }
  | { read: string }
  | { wait_until: number }
  | { wait_for: string };

// kept reachable so alloc_mb memory is really held
const held: Buffer[] = [];

const abortable = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolveSleep) => {
    const timer = setTimeout(resolveSleep, ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        resolveSleep();
      },
      { once: true },
    );
  });

function parseSteps(prompt: string): ScriptStep[] | undefined {
  const trimmed = prompt.trim();
  if (!trimmed.startsWith('{')) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(trimmed);
  } catch {
    return undefined;
  }
  const steps = (parsed as { steps?: unknown }).steps;
  if (!Array.isArray(steps)) return undefined;
  return steps as ScriptStep[];
}

/** Streams `text` back as a few MESSAGE deltas, then the whole message. */
async function say(ctx: FrameworkContext, messageId: string, text: string): Promise<void> {
  const words = text.split(/(?<=\s)/);
  const chunks = Math.min(4, Math.max(1, words.length));
  const per = Math.ceil(words.length / chunks);
  for (let i = 0; i < words.length; i += per) ctx.emit.messageDelta(messageId, words.slice(i, i + per).join(''));
  ctx.emit.messageDone(messageId, text);
}

function insideWorkspace(workspace: string, path: string): string {
  const target = resolve(workspace, path);
  const rel = relative(workspace, target);
  if (isAbsolute(path) || rel.startsWith('..') || rel === '')
    throw new Error(`write path ${JSON.stringify(path)} is outside the workspace`);
  return target;
}

/**
 * The deterministic framework for demos, tests and benchmarks. A plain-text prompt is said
 * back; a JSON prompt `{"steps":[...]}` runs its steps in order.
 */
export const scriptFramework: Framework = {
  name: 'script',
  description:
    'Deterministic agent: echoes a plain-text prompt, or runs the JSON steps {"steps":[...]} (say, sleep, write, alloc_mb, events, exit, fail, ignore_sigterm, print, symlink, getenv, getsecret, read, wait_until, wait_for).',
  optionsSchema: { type: 'object', properties: {}, additionalProperties: false },
  // the secrets its getsecret steps name
  secretsWanted: (_options, prompt) =>
    (parseSteps(prompt) ?? []).flatMap((step) =>
      typeof step === 'object' && step !== null && 'getsecret' in step && typeof step.getsecret === 'string' ? [step.getsecret] : [],
    ),
  async run(ctx): Promise<FrameworkResult> {
    const steps = parseSteps(ctx.prompt);
    if (!steps) {
      await say(ctx, 'm1', ctx.prompt);
      return { status: 'succeeded' };
    }
    let n = 0;
    for (const step of steps) {
      if (ctx.signal.aborted) break;
      n++;
      if ('say' in step) await say(ctx, `m${n}`, String(step.say));
      else if ('sleep' in step) await abortable(Number(step.sleep), ctx.signal);
      // a wall-clock rendezvous, so benchmark sessions start their work together
      else if ('wait_until' in step) await abortable(Math.max(0, Number(step.wait_until) - Date.now()), ctx.signal);
      // a go signal: waits until a workspace file exists (a benchmark starts many sessions' work at once)
      else if ('wait_for' in step) {
        const target = insideWorkspace(ctx.workspace, step.wait_for);
        while (
          !ctx.signal.aborted &&
          !(await access(target).then(
            () => true,
            () => false,
          ))
        )
          await abortable(10, ctx.signal);
      } else if ('write' in step) {
        const target = insideWorkspace(ctx.workspace, step.write.path);
        await mkdir(dirname(target), { recursive: true });
        await writeFile(target, step.write.content);
        ctx.emit.emit('FILE_CHANGED', { path: step.write.path, bytes: Buffer.byteLength(step.write.content), change: 'written' });
      } else if ('alloc_mb' in step) {
        const mb = Number(step.alloc_mb);
        for (let i = 0; i < mb; i++) held.push(Buffer.alloc(1024 * 1024, 1));
        ctx.emit.log(`allocated ${mb} MiB`);
      } else if ('events' in step) {
        const { count, size } = step.events;
        const text = 'x'.repeat(Math.max(0, Number(size)));
        for (let i = 0; i < count; i++) {
          ctx.emit.emit('LOG', { stream: 'agent', text, i });
          if (i % 256 === 255) await ctx.emit.drain();
        }
      } else if ('exit' in step) throw new ExitWithoutFinish(Number(step.exit));
      else if ('fail' in step) return { status: 'failed', reason: 'agent_error', message: String(step.fail) };
      else if ('ignore_sigterm' in step) ctx.ignoreStop?.(Boolean(step.ignore_sigterm));
      else if ('print' in step) (step.print.stream === 'stderr' ? process.stderr : process.stdout).write(`${step.print.text}\n`);
      // says a secret back, as a careless agent might: the platform redacts it from the stored event
      else if ('getsecret' in step) await say(ctx, `m${n}`, `${step.getsecret}=${ctx.secrets[step.getsecret] ?? ''}`);
      else if ('getenv' in step) await say(ctx, `m${n}`, `${step.getenv}=${ctx.env[step.getenv] ?? ''}`);
      // says a workspace file back (or that it is missing), to show what a session can see
      else if ('read' in step) {
        const text = await readFile(insideWorkspace(ctx.workspace, step.read), 'utf8').catch(() => '(missing)');
        await say(ctx, `m${n}`, `${step.read}=${text}`);
      } else if ('symlink' in step) {
        // the link itself lives in the workspace; where it points is the agent's business
        const link = insideWorkspace(ctx.workspace, step.symlink.path);
        await mkdir(dirname(link), { recursive: true });
        await symlink(step.symlink.target, link);
        ctx.emit.emit('FILE_CHANGED', { path: step.symlink.path, change: 'symlink', target: step.symlink.target });
      } else throw new Error(`step ${n} is not a known step: ${JSON.stringify(step).slice(0, 200)}`);
    }
    return { status: 'succeeded' };
  },
};
