// The artifact store's key rules and settings, and the s3rver process (infra/s3server.ts), against
// a real s3rver on loopback. What the store does with objects, listings, checksums and commits is
// checked on both local servers in store-conformance.test.ts.

import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import http from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startS3Server } from '../../infra/s3server';
import { tsCommand } from '../../infra/stack-spawn';
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
    const server = await standalone(path.join(tmp, 'standalone'), 'standalone');
    try {
      const store = new ArtifactStore({ ...s3.settings, endpoint: server.endpoint, bucket: 'standalone' });
      try {
        await store.put('hello.txt', Buffer.from('hi'));
        expect((await store.get('hello.txt')).toString()).toBe('hi');
      } finally {
        store.close();
      }
      server.child.kill('SIGTERM');
      expect(await server.exited).toBe(0);
    } finally {
      server.child.kill('SIGKILL');
    }
  });
});

describe('crash safety', () => {
  // A server SIGKILLed mid-PUT once left an empty metadata file, and every later GET of that key
  // and listing of its folder answered InternalError (the fault campaign's s3-outage, in CI).
  test('a server SIGKILLed in the middle of a PUT leaves the key absent, its neighbours intact and its folder listable', async () => {
    const dir = path.join(tmp, 'killed');
    const first = await standalone(dir, 'crash');
    const whole = Buffer.alloc(1 << 20, 7);
    let store = new ArtifactStore({ ...s3.settings, endpoint: first.endpoint, bucket: 'crash' });
    try {
      await store.put('run/a.bin', whole);
      // Half of an 8 MiB body, then the kill while the server holds the rest of the request open.
      const req = http.request(`${first.endpoint}/crash/run/b.bin`, { method: 'PUT', headers: { 'content-length': String(8 << 20) } });
      req.on('error', () => {});
      req.write(Buffer.alloc(4 << 20, 1));
      const partial = await waitFor(() => listFiles(dir).find((f) => f.includes('.partial-')));
      expect(partial).toMatch(/b\.bin\._S3rver_object\.partial-/);
      first.child.kill('SIGKILL');
      await first.exited;
      req.destroy();
    } finally {
      store.close();
      first.child.kill('SIGKILL');
    }
    const second = await standalone(dir, 'crash');
    store = new ArtifactStore({ ...s3.settings, endpoint: second.endpoint, bucket: 'crash' });
    try {
      // Written before the ready line, but on stderr, whose pipe may deliver it after stdout's.
      await waitFor(() => /removed crash\/run\/b\.bin\._S3rver_object\.partial-\S+, left by a PUT that never finished/.exec(second.stderr()) ?? undefined);
      expect(listFiles(dir).filter((f) => f.includes('.partial-'))).toEqual([]);
      expect((await store.get('run/a.bin')).equals(whole)).toBe(true);
      expect(await store.exists('run/b.bin')).toBe(false);
      expect((await store.list('run/')).map((o) => o.key)).toEqual(['run/a.bin']);
      await store.put('run/b.bin', Buffer.from('again'));
      expect((await store.get('run/b.bin')).toString()).toBe('again');
    } finally {
      store.close();
      second.child.kill('SIGKILL');
    }
  });

  test('at start, the remains of a PUT torn by an older version (metadata that is not JSON) are removed; other keys stay', async () => {
    const dir = path.join(tmp, 'torn');
    let server = await startS3Server({ dir, port: 0, bucket: 'torn' });
    let store = new ArtifactStore({ ...s3.settings, endpoint: server.endpoint, bucket: 'torn' });
    await store.put('k/good.json', Buffer.from('{"ok":1}'));
    await store.put('k/torn.json', Buffer.from('{"ok":2}'));
    store.close();
    await server.close();
    const meta = path.join(dir, 'torn', 'k', 'torn.json._S3rver_metadata.json');
    await writeFile(meta, '');
    server = await startS3Server({ dir, port: 0, bucket: 'torn' });
    store = new ArtifactStore({ ...s3.settings, endpoint: server.endpoint, bucket: 'torn' });
    try {
      expect(server.recovered!.map((f) => path.relative(dir, f)).sort()).toEqual(['torn/k/torn.json._S3rver_metadata.json', 'torn/k/torn.json._S3rver_object', 'torn/k/torn.json._S3rver_object.md5']);
      expect((await store.list('k/')).map((o) => o.key)).toEqual(['k/good.json']);
      expect((await store.get('k/good.json')).toString()).toBe('{"ok":1}');
      expect(await store.exists('k/torn.json')).toBe(false);
    } finally {
      store.close();
      await server.close();
    }
  });
});

/**
 * infra/s3server.ts as its own process on `dir` (one process, as the stack runs it, so a SIGKILL
 * reaches the server itself), once it has printed its ready line.
 */
async function standalone(dir: string, bucket: string): Promise<{ child: ChildProcess; endpoint: string; exited: Promise<number | null>; stderr: () => string }> {
  const { command, args } = tsCommand('infra/s3server.ts', ['--dir', dir, '--port', '0', '--bucket', bucket]);
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let errOut = '';
  child.stderr!.on('data', (d: Buffer) => (errOut += d.toString()));
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]!);
    });
    child.on('exit', (code) => reject(new Error(`s3server exited with ${code}: ${errOut}`)));
  });
  const m = new RegExp(`^s3 ready endpoint=(\\S+) port=(\\d+) bucket=${bucket} dir=(\\S+)$`).exec(line);
  expect(m).not.toBeNull();
  return { child, endpoint: m![1]!, exited, stderr: () => errOut };
}

function listFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath, e.name));
}

async function waitFor<T>(probe: () => T | undefined): Promise<T> {
  for (let i = 0; i < 500; i++) {
    const v = probe();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('waited 10 s for something that never came');
}
