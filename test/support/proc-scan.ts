/**
 * A program run inside an agent container (`node -e PROC_SCAN ARG`) that looks for values in
 * everything another process there lets it read: /proc/<pid>/environ, cmdline, and its memory
 * through /proc/<pid>/mem. The values arrive encoded (reversed base64) so that no process that
 * carries the command (the runner spawning it) holds them in the clear; the scanner skips itself.
 * Prints JSON: { pids: [{ pid, comm }], readBytes, found: { name: ["<pid> <where>"] } }.
 */
export const PROC_SCAN = String.raw`
const fs = require('fs');
const encoded = JSON.parse(process.argv[1]);
const needles = Object.entries(encoded).map(([name, e]) => [name, Buffer.from(e.split('').reverse().join(''), 'base64').toString('latin1')]);
const found = Object.fromEntries(needles.map(([name]) => [name, []]));
const pids = [];
let readBytes = 0;
const look = (pid, where, buf) => {
  for (const [name, value] of needles) {
    if (buf.indexOf(Buffer.from(value, 'latin1')) >= 0 || buf.indexOf(Buffer.from(value, 'utf16le')) >= 0) found[name].push(pid + ' ' + where);
  }
};
for (const entry of fs.readdirSync('/proc')) {
  if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
  const pid = Number(entry);
  let comm = '?';
  try { comm = fs.readFileSync('/proc/' + pid + '/comm', 'utf8').trim(); } catch {}
  pids.push({ pid, comm });
  for (const f of ['environ', 'cmdline']) {
    try { look(pid, f, fs.readFileSync('/proc/' + pid + '/' + f)); } catch {}
  }
  let maps = '';
  try { maps = fs.readFileSync('/proc/' + pid + '/maps', 'utf8'); } catch { continue; }
  let fd;
  try { fd = fs.openSync('/proc/' + pid + '/mem', 'r'); } catch { continue; }
  const CHUNK = 8 * 1024 * 1024, OVERLAP = 4096;
  const buf = Buffer.alloc(CHUNK + OVERLAP);
  for (const line of maps.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) r/.exec(line);
    if (!m || line.includes('[vvar]') || line.includes('[vsyscall]')) continue;
    const start = parseInt(m[1], 16), end = parseInt(m[2], 16);
    if (end - start > 1024 * 1024 * 1024) continue;
    for (let at = start; at < end; at += CHUNK) {
      const len = Math.min(CHUNK + OVERLAP, end - at);
      let n = 0;
      try { n = fs.readSync(fd, buf, 0, len, at); } catch { break; }
      readBytes += n;
      look(pid, 'mem', buf.subarray(0, n));
    }
  }
  fs.closeSync(fd);
}
console.log(JSON.stringify({ pids, readBytes, found }));
`;

/** The argument of PROC_SCAN for these named values. */
export function scanArg(values: Record<string, string>): string {
  return JSON.stringify(
    Object.fromEntries(
      Object.entries(values).map(([name, v]) => [name, Buffer.from(v, 'latin1').toString('base64').split('').reverse().join('')]),
    ),
  );
}

export interface ScanResult {
  pids: Array<{ pid: number; comm: string }>;
  readBytes: number;
  found: Record<string, string[]>;
}
