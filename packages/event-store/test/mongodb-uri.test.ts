import { describe, expect, it } from 'vitest';
import { describeMongoUri, scrubMongoUri, splitMongoUri } from '../src/mongodb-uri.js';

// No server needed: how a connection string is shown in messages.
describe('mongodb connection strings in messages', () => {
  const nasty = [
    's3cret?Pa55',
    'pa?ss/wo#rd',
    'p@ss@word',
    'a:b:c@d?e/f#g',
    'x@host.example/?appName=y',
    '%2Fslash%3Fquery',
    'trailing@',
    '@leading',
    '?',
    'ends/with/slash/',
  ];

  for (const password of nasty) {
    it(`never shows the password ${JSON.stringify(password)}, and names the hosts`, () => {
      for (const tail of ['', '/', '/mgx', '/mgx?replicaSet=rs0&w=majority', '/?appName=mgx@corp', '#frag']) {
        const uri = `mongodb://mgxuser:${password}@db1.example:27017,db2.example:27018${tail}`;
        const shown = describeMongoUri(uri);
        expect(shown).not.toContain('mgxuser');
        expect(shown).not.toContain(password);
        // no run of three characters of the password either, unless the hosts hold it
        for (let i = 0; i + 3 <= password.length; i++) {
          const piece = password.slice(i, i + 3);
          if (!'db1.example:27017,db2.example:27018'.includes(piece)) expect(shown).not.toContain(piece);
        }
        if (!tail.includes('@')) expect(shown).toBe('mongodb://db1.example:27017,db2.example:27018');

        const message = `connect failed for ${uri} (user mgxuser:${password}) password=${password} decoded=${decodeSafely(password)}`;
        const scrubbed = scrubMongoUri(message, uri);
        expect(scrubbed).not.toContain(`mgxuser:${password}`);
        if (password.length >= 3) {
          expect(scrubbed).not.toContain(password);
          expect(scrubbed).not.toContain(decodeSafely(password));
        }
      }
    });
  }

  it('splits the credentials at the last @ followed by a host list', () => {
    expect(splitMongoUri('mongodb://u:p?w@h1,h2:27018/db?x=1')).toEqual({ scheme: 'mongodb://', userinfo: 'u:p?w', hosts: 'h1,h2:27018' });
    expect(splitMongoUri('mongodb+srv://u:a@b@cluster0.example.net/?retryWrites=true')).toEqual({
      scheme: 'mongodb+srv://',
      userinfo: 'u:a@b',
      hosts: 'cluster0.example.net',
    });
    expect(splitMongoUri('mongodb://[::1]:27017/')).toEqual({ scheme: 'mongodb://', userinfo: '', hosts: '[::1]:27017' });
    expect(splitMongoUri('mongodb://%2Ftmp%2Fmongodb-27017.sock')).toEqual({
      scheme: 'mongodb://',
      userinfo: '',
      hosts: '%2Ftmp%2Fmongodb-27017.sock',
    });
    // an option value with an @: the host may be misread, the password is not shown
    expect(describeMongoUri('mongodb://u:secret@h1/?appName=me@corp&x=y')).toBe('mongodb://h1');
    expect(describeMongoUri('mongodb://u:secret@h1/?appName=me@corp')).not.toContain('secret');
    expect(splitMongoUri('http://u:p@h')).toBeNull();
    expect(describeMongoUri('postgres://u:p@h')).toBe('(not a mongodb:// URI)');
  });

  it('shows no host list when none can be told apart, and then scrubs everything after the scheme', () => {
    expect(describeMongoUri('mongodb://mgxuser:s3cret-Pa55@')).toBe('mongodb://(no host list)');
    expect(scrubMongoUri('bad uri mongodb://mgxuser:s3cret-Pa55@', 'mongodb://mgxuser:s3cret-Pa55@')).toBe('bad uri mongodb://***');
  });

  it('leaves a message alone when the URI has no credentials, and does not garble it for a very short password', () => {
    expect(scrubMongoUri('no route to h1', 'mongodb://h1/')).toBe('no route to h1');
    expect(scrubMongoUri('an error at h1', 'mongodb://u:a@h1/')).toBe('an error at h1');
  });
});

function decodeSafely(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
