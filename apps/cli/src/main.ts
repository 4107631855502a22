import { readFileSync } from 'node:fs';
import { text } from 'node:stream/consumers';
import { Command, InvalidArgumentError, Option } from 'commander';
import open from 'open';
import yoctoSpinner from 'yocto-spinner';
import { createMgxClient, followSession, type MgxClient, type SessionEvent } from '@mgx/client';
import { doctor } from './doctor.js';
import { copyFrom, copyTo, FilesHttpError, formatEntries, parseCpSide } from './files.js';
import { formatEvent } from './format.js';
import { collect, runInput, UsageError, type RunFlags } from './run-input.js';
import { formatTop } from './top.js';
import { formatWorkers } from './workers.js';

/**
 * Exit codes (also in the README):
 *   0 the session succeeded / the command did what was asked
 *   1 the session failed
 *   2 bad usage or input refused by the server
 *   3 the session timed out
 *   4 the session was cancelled
 *   5 the server could not be reached or answered with an error
 */
export const EXIT = { ok: 0, failed: 1, usage: 2, timedOut: 3, cancelled: 4, unreachable: 5 } as const;

const STATUS_EXIT: Record<string, number> = {
  succeeded: EXIT.ok,
  failed: EXIT.failed,
  timed_out: EXIT.timedOut,
  cancelled: EXIT.cancelled,
};

const env = process.env;
const program = new Command()
  .name('mgx')
  .description('Run agent sessions in isolated containers.')
  .option('--url <url>', 'server URL (MGX_URL)', env.MGX_URL ?? 'http://127.0.0.1:8080')
  .option('--token <token>', 'bearer token (MGX_TOKEN)', env.MGX_TOKEN)
  .showHelpAfterError('(add --help for usage)')
  // a usage error commander finds (unknown option, missing value) exits 2 like every other
  .exitOverride((err) => process.exit(err.exitCode === 0 ? EXIT.ok : EXIT.usage));

const client = (): MgxClient => {
  const o = program.opts<{ url: string; token?: string }>();
  return createMgxClient({ url: o.url, token: o.token });
};

const positiveInt = (v: string) => {
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError('must be a whole number');
  return Number(v);
};
const positiveNumber = (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a positive number');
  return n;
};

/** Prints events until FINISH; a live status line on a terminal. Returns the FINISH event. */
async function follow(c: MgxClient, sessionId: string, json: boolean, after?: number): Promise<SessionEvent | undefined> {
  const started = Date.now();
  let count = 0;
  let phase = 'queued';
  const status = () => `${phase} · ${((Date.now() - started) / 1000).toFixed(1)}s · ${count} events · ${sessionId}`;
  // the live status line only on a terminal; scripts and --json get plain lines
  const spinner = !json && process.stderr.isTTY === true ? yoctoSpinner({ stream: process.stderr, text: status() }).start() : undefined;
  const tick = setInterval(() => {
    if (spinner) spinner.text = status();
  }, 100);
  let finish: SessionEvent | undefined;
  try {
    for await (const ev of followSession(c, sessionId, {
      ...(after !== undefined ? { lastEventId: after } : {}),
      onState: (s, err) => {
        if (s === 'connecting' && err) phase = `reconnecting (${err.message})`;
      },
    })) {
      count++;
      if (ev.type === 'CONTAINER_STARTED') phase = 'starting';
      if (ev.type === 'START') phase = 'running';
      if (ev.type === 'MESSAGE' && !ev.data.done) phase = 'running (streaming)';
      if (json) {
        process.stdout.write(`${JSON.stringify(ev)}\n`);
      } else {
        const line = formatEvent(ev);
        // the spinner moves itself below lines written to the terminal
        if (line !== null) process.stdout.write(`${line}\n`);
      }
      if (ev.type === 'FINISH') finish = ev;
    }
  } finally {
    clearInterval(tick);
    spinner?.stop();
  }
  return finish;
}

const RUN_HELP = `
Framework input:
  Everything after "--" is the command of a framework that runs one (exec); the options
  before it are mgx's. --option VALUEs are JSON when they parse (5, true, ["a","b"]),
  else strings. A secret is read from the CLI's environment (--secret NAME) or a file
  (--secret NAME=@path), never from the command line, where ps and shell history show it;
  for exec, the --secret names are passed to the command as env unless --option secretEnv
  says otherwise.

Examples:
  $ mgx run -f script -p "hello"
  $ mgx run -f exec -e GREETING=hi -- node -e "console.log(process.env.GREETING)"
  $ MY_TOKEN=... mgx run -f exec -w site --secret MY_TOKEN -- node publish.js --dry-run
  $ mgx run -f openai --network egress --secret OPENAI_API_KEY \\
      --option baseUrl=https://api.openai.com/v1 --option model=gpt-4o-mini -p "add a README"
  $ mgx run -f openai --options '{"baseUrl":"...","model":"..."}' --network egress --prompt-file task.md
  $ mgx run -f openai --option provider=openai --option model=gpt-4o-mini --max-model-tokens 200000 -p "fix the tests"
  $ mgx run -f exec --allow registry.npmjs.org -- npm install
`;

program
  .command('run')
  .description('create a session and follow its events until FINISH; exits 0 only when it succeeded')
  .usage('[options] [-- command...]')
  .argument('[command...]', 'after "--": the command (argv, no shell) of a framework that runs one (exec)')
  .requiredOption('-f, --framework <name>', "agent framework (see the server's frameworks.list)")
  .option('-p, --prompt <text>', 'the prompt; "-" reads it from stdin (not needed by exec)')
  .option('--prompt-file <path>', 'read the prompt from a file')
  .option('--option <key=value>', 'a framework option, repeatable; the value is JSON when it parses, else a string', collect)
  .option('--options <json>', 'framework options as one JSON object (--option wins)')
  .option('-e, --env <name=value>', 'an environment variable of the session, repeatable; NAME alone passes on its value here', collect)
  .option('--secret <name>', "a secret from this shell's environment variable NAME, or NAME=@path from a file; repeatable", collect)
  .option('--secret-file <name=path>', 'a secret read from a file (one trailing newline dropped); repeatable', collect)
  .option('-t, --timeout <seconds>', 'session deadline in seconds', positiveNumber)
  .option('-m, --memory <size>', 'memory limit, e.g. 256m or 1g')
  .option('--cpus <n>', 'CPU limit, e.g. 0.5', positiveNumber)
  .addOption(new Option('--network <mode>', 'network of the agent (openai needs egress)').choices(['none', 'egress']))
  .option(
    '--allow <domain>',
    'a domain the agent may reach through the egress proxy (or *.domain), repeatable; no network otherwise',
    collect,
  )
  .option('--max-model-tokens <n>', "model tokens the session's calls through the gateway may use", positiveInt)
  .option('--max-model-calls <n>', 'model calls through the gateway', positiveInt)
  .option('-w, --workspace <id>', 'workspace id (reused across sessions)')
  .option('--json', 'print each event as one JSON line')
  .option('-d, --detach', 'print the session id and return')
  .addHelpText('after', RUN_HELP)
  .action(
    async (
      command: string[],
      o: RunFlags & {
        timeout?: number;
        memory?: string;
        cpus?: number;
        network?: 'none' | 'egress';
        allow?: string[];
        maxModelTokens?: number;
        maxModelCalls?: number;
        workspace?: string;
        json?: boolean;
        detach?: boolean;
      },
    ) => {
      if (o.allow !== undefined && o.network !== undefined) throw new UsageError('give --network or --allow, not both');
      const c = client();
      const input = await runInput(o, command, {
        env: process.env,
        readFile: (path) => readFileSync(path, 'utf8'),
        readStdin: () => text(process.stdin),
        listFrameworks: () => c.frameworks.list.query(),
      });
      const s = await c.sessions.create.mutate({
        framework: o.framework,
        prompt: input.prompt,
        ...(Object.keys(input.options).length > 0 ? { options: input.options } : {}),
        ...(Object.keys(input.env).length > 0 ? { env: input.env } : {}),
        ...(Object.keys(input.secrets).length > 0 ? { secrets: input.secrets } : {}),
        ...(o.timeout !== undefined ? { timeoutSeconds: o.timeout } : {}),
        ...(o.memory !== undefined ? { memory: o.memory } : {}),
        ...(o.cpus !== undefined ? { cpus: o.cpus } : {}),
        ...(o.network !== undefined ? { network: o.network } : {}),
        ...(o.allow !== undefined ? { network: { allow: o.allow } } : {}),
        ...(o.maxModelTokens !== undefined ? { maxModelTokens: o.maxModelTokens } : {}),
        ...(o.maxModelCalls !== undefined ? { maxModelCalls: o.maxModelCalls } : {}),
        ...(o.workspace !== undefined ? { workspaceId: o.workspace } : {}),
      });
      if (o.detach) {
        process.stdout.write(o.json ? `${JSON.stringify({ sessionId: s.id, status: s.status })}\n` : `${s.id}\n`);
        return;
      }
      const finish = await follow(c, s.id, o.json === true);
      const status = typeof finish?.data.status === 'string' ? finish.data.status : 'failed';
      if (!o.json) process.stderr.write(`session ${s.id} ${status}\n`);
      process.exitCode = STATUS_EXIT[status] ?? EXIT.failed;
    },
  );

program
  .command('ls')
  .description('list sessions, newest first')
  .addOption(
    new Option('-s, --status <status...>', 'only these states').choices([
      'queued',
      'starting',
      'running',
      'succeeded',
      'failed',
      'timed_out',
      'cancelled',
    ]),
  )
  .option('-n, --limit <n>', 'how many', positiveInt, 20)
  .option('--json', 'one JSON object per line')
  .action(async (o: { status?: Array<'queued'>; limit: number; json?: boolean }) => {
    const page = await client().sessions.list.query({ limit: Math.min(200, o.limit), ...(o.status ? { status: o.status } : {}) });
    for (const s of page.items) {
      if (o.json) process.stdout.write(`${JSON.stringify(s)}\n`);
      else {
        const age = `${Math.round((Date.now() - s.createdAt) / 1000)}s ago`;
        process.stdout.write(
          `${s.id}  ${s.status.padEnd(9)}  ${s.framework.padEnd(8)}  ${(s.reason ?? '').padEnd(21)}  ${age.padStart(9)}  ${s.promptPreview.replace(/\s+/g, ' ').slice(0, 40)}\n`,
        );
      }
    }
  });

program
  .command('logs')
  .description("print a session's events")
  .argument('<sessionId>')
  .option('-a, --after <seq>', 'only events after this seq', positiveInt, 0)
  .option('-f, --follow', 'keep following until FINISH')
  .option('--json', 'one JSON line per event')
  .action(async (sessionId: string, o: { after: number; follow?: boolean; json?: boolean }) => {
    const c = client();
    if (o.follow) {
      await follow(c, sessionId, o.json === true, o.after);
      return;
    }
    let after = o.after;
    for (;;) {
      const page = await c.sessions.events.query({ sessionId, afterSeq: after, limit: 1000 });
      for (const ev of page.events) {
        if (o.json) process.stdout.write(`${JSON.stringify(ev)}\n`);
        else {
          const line = formatEvent(ev);
          if (line !== null) process.stdout.write(`${line}\n`);
        }
      }
      if (page.events.length < 1000) break;
      after = page.lastSeq;
    }
  });

program
  .command('cancel')
  .description('cancel a queued or running session')
  .argument('<sessionId>')
  .option('--json', 'print the result as JSON')
  .action(async (sessionId: string, o: { json?: boolean }) => {
    const r = await client().sessions.cancel.mutate({ sessionId });
    process.stdout.write(
      o.json ? `${JSON.stringify(r)}\n` : `${r.sessionId} ${r.cancelled ? 'cancelling' : 'already ended'} (${r.status})\n`,
    );
  });

program
  .command('preview')
  .description("print a signed link to a port the session's agent serves (opens without a token until it expires)")
  .argument('<sessionId>')
  .argument('<port>', 'the port inside the container, e.g. 3000', positiveInt)
  .option('--ttl <seconds>', 'how long the link stays valid', positiveInt, 3600)
  .addOption(new Option('--form <form>', 'path, or host (<port>-<session>.<MGX_PREVIEW_DOMAIN>)').choices(['path', 'host']))
  .option('--open', 'open the link in the default browser')
  .option('--json', 'print the link as JSON')
  .action(async (sessionId: string, port: number, o: { ttl: number; form?: 'path' | 'host'; open?: boolean; json?: boolean }) => {
    const link = await client().sessions.previewUrl.mutate({ sessionId, port, ttlSeconds: o.ttl, ...(o.form ? { form: o.form } : {}) });
    process.stdout.write(o.json ? `${JSON.stringify(link)}\n` : `${link.url}\n`);
    if (o.open) await open(link.url);
  });

program
  .command('workspaces')
  .description('list your workspaces: size, files, last session')
  .option('--json', 'one JSON object per workspace, one per line')
  .action(async (o: { json?: boolean }) => {
    const c = client();
    for (let cursor: string | undefined; ;) {
      const page = await c.workspaces.list.query({ limit: 200, ...(cursor !== undefined ? { cursor } : {}) });
      for (const w of page.items) {
        if (o.json) process.stdout.write(`${JSON.stringify(w)}\n`);
        else {
          const size = w.sizeBytes === null ? '?' : String(w.sizeBytes);
          const files = w.files === null ? '?' : String(w.files);
          const last = w.lastSession ? `${w.lastSession.id} ${w.lastSession.status}` : '-';
          process.stdout.write(`${w.id.padEnd(24)}  ${size.padStart(12)} B  ${files.padStart(7)} files  ${last}\n`);
        }
      }
      if (page.nextCursor === null) return;
      cursor = page.nextCursor;
    }
  });

program
  .command('files')
  .description("list a workspace's files (a directory, or with -r the whole tree)")
  .argument('<workspaceId>')
  .argument('[path]', 'a directory in the workspace', '')
  .option('-r, --recursive', 'the whole tree below path')
  .option('--json', 'one JSON object per entry, one per line')
  .action(async (workspaceId: string, path: string, o: { recursive?: boolean; json?: boolean }) => {
    const c = client();
    for (let cursor: string | undefined; ;) {
      const page = await c.workspaces.files.query({
        workspaceId,
        path,
        recursive: o.recursive === true,
        limit: 1000,
        ...(cursor !== undefined ? { cursor } : {}),
      });
      if (o.json) for (const e of page.entries) process.stdout.write(`${JSON.stringify(e)}\n`);
      else for (const line of formatEntries(page.entries)) process.stdout.write(`${line}\n`);
      if (page.nextCursor === null) return;
      cursor = page.nextCursor;
    }
  });

program
  .command('cp')
  .description('copy files between this machine and a workspace: cp ID:path dest, or cp src ID:path')
  .argument('<src>', 'ID:path in a workspace, or a local file or directory')
  .argument('<dest>', 'a local path (- for stdout), or ID:path in a workspace')
  .addHelpText(
    'after',
    `
A workspace path is written ID:path; ID: alone is the whole workspace. A directory travels as a
tar.gz (links as links). A local path with a colon is written ./a:b.

Examples:
  $ mgx cp site:dist/index.html .          # one file
  $ mgx cp site: ./site-copy               # the whole workspace, unpacked
  $ mgx cp site:src/app.js -               # to stdout
  $ mgx cp ./seed site:                    # a directory into the workspace, before a session
  $ mgx cp config.json site:config/        # a file into a directory of the workspace
`,
  )
  .action(async (src: string, dest: string) => {
    const from = parseCpSide(src);
    const to = parseCpSide(dest);
    const o = program.opts<{ url: string; token?: string }>();
    const http = { url: o.url, token: o.token };
    if ('workspaceId' in from && 'local' in to) {
      const wrote = await copyFrom(http, from, to.local, (link) =>
        process.stderr.write(`mgx: left out ${link}: the link points outside the destination\n`),
      );
      if (wrote !== 'stdout') process.stderr.write(`${from.workspaceId}:${from.path} → ${wrote}\n`);
      return;
    }
    if ('local' in from && 'workspaceId' in to) {
      const r = await copyTo(http, from.local, to);
      process.stderr.write(`${from.local} → ${to.workspaceId}:${r.path} (${r.detail})\n`);
      return;
    }
    throw new UsageError('one side of cp is ID:path in a workspace and the other a local path');
  });

/** An operator's call: a tenant's token gets a usage error naming what is needed. */
async function asOperator<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if ((err as { data?: { code?: string } }).data?.code === 'FORBIDDEN') {
      throw new UsageError(
        `\`${what}\` needs an operator token (one of the server's MGX_OPERATOR_TOKENS): pass it with --token or MGX_TOKEN`,
      );
    }
    throw err;
  }
}

const workers = program
  .command('workers')
  .description("list the fleet's workers: state, slots in use, last heartbeat, engine (operators only)")
  .option('--json', 'one JSON object per worker, one per line')
  .action(async (o: { json?: boolean }) => {
    const answer = await asOperator('mgx workers', () => client().system.workers.query());
    if (o.json) {
      for (const w of answer.workers) process.stdout.write(`${JSON.stringify(w)}\n`);
      return;
    }
    if (answer.workers.length === 0) {
      process.stdout.write('no workers registered\n');
      return;
    }
    for (const line of formatWorkers(answer.workers, answer.now)) process.stdout.write(`${line}\n`);
  });

workers
  .command('drain')
  .description('ask a worker to drain: it claims nothing more, lets its sessions finish, deregisters and exits (operators only)')
  .argument('<workerId>')
  .option('--json', 'print the worker as JSON')
  .action(async (workerId: string, o: { json?: boolean }) => {
    const { worker } = await asOperator('mgx workers drain', () => client().system.drainWorker.mutate({ workerId }));
    process.stdout.write(
      o.json
        ? `${JSON.stringify(worker)}\n`
        : `${worker.id}: drain requested; it drains at its next heartbeat (${worker.inUse} session(s) running), then exits\n`,
    );
  });

program
  .command('top')
  .description('a live table of running sessions with their CPU, memory and pids, like `docker stats`')
  .option('--once', 'print the table once and exit (what scripts get when stdout is not a terminal)')
  .option('--json', 'print once, one JSON object per running session, one per line')
  .option('-i, --interval <seconds>', 'seconds between refreshes', positiveNumber, 2)
  .option('--tenant <id>', "only this tenant's sessions (operators only)")
  .option('-n, --limit <n>', 'at most this many sessions', positiveInt, 100)
  .action(async (o: { once?: boolean; json?: boolean; interval: number; tenant?: string; limit: number }) => {
    const c = client();
    const query = () => c.sessions.top.query({ limit: Math.min(200, Math.max(1, o.limit)), ...(o.tenant ? { tenant: o.tenant } : {}) });
    const table = (answer: Awaited<ReturnType<typeof query>>) =>
      answer.items.length === 0 ? ['no running sessions'] : formatTop(answer.items, answer.now);
    if (o.json) {
      for (const row of (await query()).items) process.stdout.write(`${JSON.stringify(row)}\n`);
      return;
    }
    if (o.once || !process.stdout.isTTY) {
      for (const line of table(await query())) process.stdout.write(`${line}\n`);
      return;
    }
    // a terminal: redraw in place until Ctrl-C, the cursor hidden meanwhile and shown again after
    const out = process.stdout;
    let stopped = false;
    const stop = () => {
      stopped = true;
      out.write('\x1b[?25h');
    };
    process.once('SIGINT', () => {
      stop();
      process.exit(EXIT.ok);
    });
    out.write('\x1b[?25l\x1b[2J');
    try {
      while (!stopped) {
        const lines = table(await query());
        const stamp = `mgx top · ${new Date().toLocaleTimeString()} · every ${o.interval}s · Ctrl-C to quit`;
        // home, then each line cleared to its end, then everything below: no flicker
        out.write(`\x1b[H${[stamp, '', ...lines].map((l) => `${l.slice(0, out.columns || l.length)}\x1b[K`).join('\n')}\n\x1b[J`);
        await new Promise((r) => setTimeout(r, o.interval * 1000));
      }
    } finally {
      stop();
    }
  });

program
  .command('doctor')
  .description('check the engine, runc and cgroups, the agent image, the store and the server')
  .option('--json', 'print the checks as JSON')
  .action(async (o: { json?: boolean }) => {
    const url = program.opts<{ url: string }>().url;
    const checks = await doctor(client(), url);
    if (o.json) process.stdout.write(`${JSON.stringify({ ok: checks.every((c) => c.ok), checks })}\n`);
    else {
      for (const c of checks) {
        process.stdout.write(`${c.ok ? '✔' : '✖'} ${c.name.padEnd(19)} ${c.detail}\n`);
        if (!c.ok && c.hint) process.stdout.write(`  ${''.padEnd(19)} → ${c.hint}\n`);
      }
    }
    process.exitCode = checks.every((c) => c.ok) ? EXIT.ok : EXIT.failed;
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof UsageError) {
    process.stderr.write(`mgx: ${err.message}\n`);
    process.exit(EXIT.usage);
  }
  if (err instanceof FilesHttpError) {
    process.stderr.write(`mgx: ${err.message}\n`);
    process.exit(err.refused ? EXIT.usage : EXIT.unreachable);
  }
  const e = err as { message?: string; data?: { code?: string; httpStatus?: number }; cause?: { code?: string; message?: string } };
  const code = e.data?.code;
  if (
    code === 'BAD_REQUEST' ||
    code === 'PAYLOAD_TOO_LARGE' ||
    code === 'NOT_FOUND' ||
    code === 'FORBIDDEN' ||
    code === 'UNAUTHORIZED' ||
    code === 'TOO_MANY_REQUESTS' ||
    code === 'CONFLICT'
  ) {
    process.stderr.write(`mgx: ${e.message}\n`);
    process.exit(EXIT.usage);
  }
  const url = program.opts<{ url: string }>().url;
  process.stderr.write(
    `mgx: ${e.message ?? String(err)}${code ? ` (${code})` : ` (is the server running at ${url}? start it with \`npm start\`)`}\n`,
  );
  process.exit(EXIT.unreachable);
});
