// The artifact store's key rules and settings, and the s3rver process (infra/s3server.ts), against
// a real s3rver on loopback. What the store does with objects, listings, checksums and commits is
// checked on both local servers in store-conformance.test.ts.

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startS3Server } from '../../infra/s3server';
import { ArtifactStore, InvalidKeyError, joinKey, validateKey } from '../../infra/store';
import { withS3, type S3Fixture } from '../helpers/s3';

let s3: S3Fixture;
let tmp: string;
beforeAll(async () => {
  s3 = await withS3();
  tmp = await mkdtemp(path.join(os.tmpdir(), 'truthgpt-store-test-'));
});
afterAll(async () => {
  await s3?.close();
  await rm(tmp, { recursive: true, force: true });
});

describe('keys', () => {
  test.each([
    ['key must not be empty', ''],
    ["key must not start with '/'", '/abs/key'],
    ["must not contain a '..' segment", 'runs/../secrets'],
    ["must not contain an empty segment '//'", 'runs//x'],
    ['must not contain a backslash', 'runs\\x'],
    ['contains U+0020', 'runs/a b'],
    ["contains 'ä'", 'runs/ä'],
    ["key must not end with '/'", 'runs/x/'],
    ['longer than 1024', 'a'.repeat(1025)],
  ])('a key breaking "%s" is refused', async (rule, key) => {
    expect(() => validateKey(key)).toThrow(InvalidKeyError);
    expect(() => validateKey(key)).toThrow(rule);
    await expect(s3.store.put(key, Buffer.from('x'))).rejects.toThrow(`invalid object key ${JSON.stringify(key)}: `);
  });

  test('joinKey trims slashes between parts and refuses empty parts', () => {
    expect(joinKey('runs/', '/wf-1', 'ckpt/v3/')).toBe('runs/wf-1/ckpt/v3');
    expect(validateKey('data/shard=0001+a.bin')).toBe('data/shard=0001+a.bin');
    expect(() => joinKey('runs', '', 'x')).toThrow('part 1 is empty');
    expect(() => joinKey('runs', '..', 'x')).toThrow("'..' segment");
  });
});

describe('server and settings', () => {
  test('settings are checked with the field named', () => {
    expect(() => new ArtifactStore({ ...s3.settings, bucket: 'Bad_Bucket' })).toThrow('invalid bucket name "Bad_Bucket"');
    expect(() => new ArtifactStore({ ...s3.settings, secretAccessKey: undefined })).toThrow('accessKeyId and secretAccessKey');
    expect(() => new ArtifactStore({ ...s3.settings, endpoint: 'not a url' })).toThrow('S3 settings: endpoint');
    expect(() => new ArtifactStore(s3.settings, { partSize: 1024 })).toThrow('partSize');
  });

  test('a port already in use is refused with the port named', async () => {
    await expect(startS3Server({ dir: path.join(tmp, 'second'), port: s3.server.port, bucket: 'x-bucket' })).rejects.toThrow(
      `port ${s3.server.port} on 127.0.0.1 is already in use`,
    );
  });

  test('runs as a standalone process: prints a ready line, serves, exits on SIGTERM', async () => {
    const dir = path.join(tmp, 'standalone');
    const child = spawn(process.execPath, [require.resolve('tsx/cli'), 'infra/s3server.ts', '--dir', dir, '--port', '0', '--bucket', 'standalone'], {
      cwd: path.resolve(__dirname, '../..'),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let out = '';
        let errOut = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('\n')) resolve(out.split('\n')[0]!);
        });
        child.stderr.on('data', (d: Buffer) => (errOut += d.toString()));
        child.on('exit', (code) => reject(new Error(`s3server exited with ${code}: ${errOut}`)));
      });
      const m = /^s3 ready endpoint=(\S+) port=(\d+) bucket=standalone dir=(\S+)$/.exec(line);
      expect(m).not.toBeNull();
      const store = new ArtifactStore({ ...s3.settings, endpoint: m![1]!, bucket: 'standalone' });
      try {
        await store.put('hello.txt', Buffer.from('hi'));
        expect((await store.get('hello.txt')).toString()).toBe('hi');
      } finally {
        store.close();
      }
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
