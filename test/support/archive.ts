import { buffer } from 'node:stream/consumers';
import { gunzipSync } from 'node:zlib';
import tar from 'tar-stream';

export interface ArchiveEntry {
  type: string;
  body: Buffer;
  linkname?: string;
}

/** The entries of a tar.gz by name, read in memory (test archives are small). */
export async function untar(gz: Buffer): Promise<Map<string, ArchiveEntry>> {
  const out = new Map<string, ArchiveEntry>();
  const extract = tar.extract();
  extract.on('entry', (header, stream, next) => {
    void buffer(stream).then((body) => {
      out.set(header.name, { type: header.type ?? 'file', body, ...(header.linkname ? { linkname: header.linkname } : {}) });
      next();
    });
  });
  await new Promise<void>((resolve, reject) => {
    extract.on('finish', resolve);
    extract.on('error', reject);
    extract.end(gunzipSync(gz));
  });
  return out;
}
