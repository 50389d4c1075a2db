// The artifact store against a real S3 server (s3rver on loopback), no mocks.

import { PutObjectCommand } from '@aws-sdk/client-s3';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { startS3Server } from '../../infra/s3server';
import { ArtifactStore, IntegrityError, InvalidKeyError, joinKey, NotFoundError, validateKey } from '../../infra/store';
import { withS3, type S3Fixture } from '../helpers/s3';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Byte equality without jest's element-by-element diff, which crawls on megabyte buffers. */
function expectSameBytes(actual: Buffer, expected: Buffer): void {
  if (actual.equals(expected)) return;
  let i = 0;
  while (i < Math.min(actual.length, expected.length) && actual[i] === expected[i]) i++;
  throw new Error(`bytes differ: lengths ${actual.length} vs ${expected.length}, first difference at offset ${i}`);
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A stream that hands out `data` in uneven chunks, like a socket or a file would. */
function chunked(data: Buffer, chunk = 100_003): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < data.length; i += chunk) yield data.subarray(i, i + chunk);
    })(),
  );
}

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

describe('objects', () => {
  test('round trip: put returns size and sha256, head/exists see it, get returns the bytes', async () => {
    const data = Buffer.from('weights and biases');
    const put = await s3.store.put('rt/small.bin', data);
    expect(put).toEqual({ key: 'rt/small.bin', size: data.length, sha256: sha256(data), parts: 1 });

    const info = await s3.store.head('rt/small.bin');
    expect(info.size).toBe(data.length);
    expect(info.sha256).toBe(sha256(data));
    expect(await s3.store.exists('rt/small.bin')).toBe(true);
    expectSameBytes(await s3.store.get('rt/small.bin'), data);

    await s3.store.putJson('rt/cfg.json', { n_layer: 2, n_embd: 64 });
    expect(await s3.store.getJson('rt/cfg.json')).toEqual({ n_layer: 2, n_embd: 64 });

    await s3.store.delete('rt/small.bin');
    expect(await s3.store.exists('rt/small.bin')).toBe(false);
    await expect(s3.store.delete('rt/small.bin')).resolves.toBeUndefined();
  });

  test('a missing object is a NotFoundError naming bucket and key', async () => {
    const err = await s3.store.get('rt/nope.bin').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotFoundError);
    expect((err as Error).message).toContain('s3://truthgpt-test/rt/nope.bin');
    await expect(s3.store.head('rt/nope.bin')).rejects.toThrow('s3://truthgpt-test/rt/nope.bin not found');
  });

  test('a 20 MB buffer goes up in 8 MiB parts and reads back with the same sha256', async () => {
    const data = randomBytes(20_000_000);
    const put = await s3.store.put('big/buffer.bin', data);
    expect(put.parts).toBe(3);
    expect(put.sha256).toBe(sha256(data));
    expect((await s3.store.head('big/buffer.bin')).size).toBe(20_000_000);
    expect(sha256(await s3.store.get('big/buffer.bin'))).toBe(sha256(data));
  });

  test('a 20 MB stream of unknown length is hashed on the way and uploaded in parts', async () => {
    const data = randomBytes(20_000_000);
    const put = await s3.store.put('big/stream.bin', chunked(data));
    expect(put).toMatchObject({ size: 20_000_000, sha256: sha256(data), parts: 3 });
    expect((await s3.store.head('big/stream.bin')).sha256).toBe(sha256(data));
    expect(sha256(await collect(await s3.store.getStream('big/stream.bin')))).toBe(sha256(data));
  });

  test('a small stream is one PutObject', async () => {
    const data = randomBytes(300_000);
    const put = await s3.store.put('rt/small-stream.bin', chunked(data, 4096));
    expect(put).toMatchObject({ size: data.length, sha256: sha256(data), parts: 1 });
    expectSameBytes(await s3.store.get('rt/small-stream.bin'), data);
  });

  test('putFile and download round-trip a file through multipart', async () => {
    const data = randomBytes(9 * 1024 * 1024 + 17);
    const src = path.join(tmp, 'src.bin');
    await writeFile(src, data);
    const put = await s3.store.putFile('files/src.bin', src);
    expect(put).toMatchObject({ size: data.length, sha256: sha256(data), parts: 2 });
    const dst = path.join(tmp, 'dst.bin');
    expect(await s3.store.download('files/src.bin', dst)).toEqual({ size: data.length, sha256: sha256(data) });
    expectSameBytes(await readFile(dst), data);
  });

  test('a range read returns exactly the requested bytes, also across a part boundary', async () => {
    const data = randomBytes(20_000_000);
    await s3.store.put('big/range.bin', data);
    const boundary = 8 * 1024 * 1024;
    expectSameBytes(await s3.store.getRange('big/range.bin', boundary - 10, boundary + 9), data.subarray(boundary - 10, boundary + 10));
    expectSameBytes(await s3.store.getRange('big/range.bin', 0, 0), data.subarray(0, 1));
    expectSameBytes(await s3.store.getRange('big/range.bin', 19_999_990, 19_999_999), data.subarray(19_999_990));
    // Like S3, an end past the object is clipped; a start past it is an error naming the key.
    expectSameBytes(await s3.store.getRange('big/range.bin', 19_999_995, 20_000_100), data.subarray(19_999_995));
    await expect(s3.store.getRange('big/range.bin', 20_000_000, 20_000_010)).rejects.toThrow(
      'range bytes=20000000-20000010 is outside s3://truthgpt-test/big/range.bin',
    );
    await expect(s3.store.getRange('big/range.bin', 5, 4)).rejects.toThrow('0 <= start <= endInclusive');
  });

  test('listing pages through every key under a prefix; deletePrefix removes them', async () => {
    const keys = ['ls/a/1', 'ls/a/2', 'ls/a/3', 'ls/a/x/4', 'ls/a/x/5', 'ls/b/6'];
    for (const k of keys) await s3.store.put(k, Buffer.from(k));
    const pages: string[][] = [];
    for await (const page of s3.store.pages('ls/a/', 2)) pages.push(page.map((o) => o.key));
    expect(pages).toEqual([['ls/a/1', 'ls/a/2'], ['ls/a/3', 'ls/a/x/4'], ['ls/a/x/5']]);
    expect(await s3.store.list('ls/', 1000)).toEqual(keys.map((key) => ({ key, size: key.length })));

    expect(await s3.store.deletePrefix('ls/a/')).toBe(5);
    expect((await s3.store.list('ls/')).map((o) => o.key)).toEqual(['ls/b/6']);
  });
});

describe('integrity', () => {
  test('an object overwritten behind the store\'s back fails every full read, naming the key', async () => {
    const good = randomBytes(50_000);
    const put = await s3.store.put('corrupt/w.bin', good);
    const bad = Buffer.from(good);
    bad[1234] ^= 0xff;
    // A raw S3 write that keeps the old hash in the metadata, as a bit flip on disk would.
    await s3.store.client.send(
      new PutObjectCommand({ Bucket: s3.settings.bucket, Key: 'corrupt/w.bin', Body: bad, Metadata: { sha256: put.sha256 } }),
    );

    const err = await s3.store.get('corrupt/w.bin').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IntegrityError);
    expect(err).toMatchObject({ key: 'corrupt/w.bin', expected: put.sha256, actual: sha256(bad) });
    expect((err as Error).message).toContain('s3://truthgpt-test/corrupt/w.bin');

    await expect(collect(await s3.store.getStream('corrupt/w.bin'))).rejects.toThrow(IntegrityError);

    const dst = path.join(tmp, 'corrupt.bin');
    await expect(s3.store.download('corrupt/w.bin', dst)).rejects.toThrow('corrupt/w.bin');
    await expect(readFile(dst)).rejects.toThrow('ENOENT');
  });

  test('a truncated multipart object on disk is caught on read', async () => {
    const data = randomBytes(12_000_000);
    await s3.store.put('corrupt/big.bin', data);
    // s3rver keeps each object as a plain file next to its metadata.
    const file = path.join(s3.dir, s3.settings.bucket, 'corrupt', 'big.bin._S3rver_object');
    await writeFile(file, data.subarray(0, 11_000_000));
    await expect(s3.store.get('corrupt/big.bin')).rejects.toThrow(/integrity check failed for s3:\/\/truthgpt-test\/corrupt\/big\.bin/);
  });
});

describe('manifests', () => {
  test('a prefix is invisible until its manifest is committed, then every file verifies', async () => {
    const weights = randomBytes(100_000);
    const optim = randomBytes(200_000);
    const w = await s3.store.put('ckpt/v1/model.safetensors', weights);
    expect(await s3.store.readManifest('ckpt/v1')).toBeNull();
    await expect(s3.store.getVerified('ckpt/v1', 'model.safetensors')).rejects.toThrow('ckpt/v1/MANIFEST.json not found (prefix not committed)');

    const manifest = await s3.store.commit(
      'ckpt/v1/',
      { 'model.safetensors': w, 'optim.safetensors': optim, 'config.json': Buffer.from('{"n_layer":2}') },
      { step: 100, bestValLoss: 2.5 },
    );
    const read = await s3.store.readManifest('ckpt/v1');
    expect(read).toEqual(manifest);
    expect(read!.meta).toEqual({ step: 100, bestValLoss: 2.5 });
    expect(read!.files.map((f) => [f.key, f.size, f.sha256])).toEqual([
      ['ckpt/v1/model.safetensors', weights.length, sha256(weights)],
      ['ckpt/v1/optim.safetensors', optim.length, sha256(optim)],
      ['ckpt/v1/config.json', 13, sha256(Buffer.from('{"n_layer":2}'))],
    ]);
    expect((await s3.store.list('ckpt/v1/')).map((o) => o.key).sort()).toEqual(
      ['ckpt/v1/MANIFEST.json', 'ckpt/v1/config.json', 'ckpt/v1/model.safetensors', 'ckpt/v1/optim.safetensors'],
    );
    expectSameBytes(await s3.store.getVerified('ckpt/v1', 'optim.safetensors'), optim);
    const local = path.join(tmp, 'model.safetensors');
    expect(await s3.store.downloadVerified('ckpt/v1', 'model.safetensors', local)).toEqual({ size: weights.length, sha256: sha256(weights) });
    expectSameBytes(await readFile(local), weights);
    await expect(s3.store.getVerified('ckpt/v1', 'rng.bin')).rejects.toThrow(
      'not in ckpt/v1/MANIFEST.json; it lists: model.safetensors, optim.safetensors, config.json',
    );
  });

  test('a commit that fails halfway leaves no manifest', async () => {
    const failing = new Readable({
      read() {
        this.destroy(new Error('worker lost its disk'));
      },
    });
    await expect(
      s3.store.commit('ckpt/v2', { 'model.safetensors': randomBytes(1000), 'optim.safetensors': failing }),
    ).rejects.toThrow('worker lost its disk');
    expect(await s3.store.readManifest('ckpt/v2')).toBeNull();
    expect(await s3.store.exists('ckpt/v2/model.safetensors')).toBe(true);
  });

  test('a file replaced after commit fails getVerified against the manifest', async () => {
    await s3.store.commit('ckpt/v3', { 'model.safetensors': Buffer.from('original weights') });
    // A well-formed write (its own metadata is consistent) that the manifest does not vouch for.
    await s3.store.put('ckpt/v3/model.safetensors', Buffer.from('other weights!!!'));
    await expect(s3.store.getVerified('ckpt/v3', 'model.safetensors')).rejects.toThrow(
      /integrity check failed for s3:\/\/truthgpt-test\/ckpt\/v3\/model\.safetensors: sha256 is [0-9a-f]{64} but manifest ckpt\/v3\/MANIFEST.json says/,
    );
    const local = path.join(tmp, 'v3-model.safetensors');
    await expect(s3.store.downloadVerified('ckpt/v3', 'model.safetensors', local)).rejects.toThrow('ckpt/v3/model.safetensors');
    await expect(readFile(local)).rejects.toThrow('ENOENT');
  });
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
  test('ensureBucket creates a missing bucket; without it the error names the bucket', async () => {
    const other = new ArtifactStore({ ...s3.settings, bucket: 'second-bucket' });
    try {
      await expect(other.get('a.bin')).rejects.toThrow('bucket "second-bucket" does not exist');
      await other.ensureBucket();
      await other.ensureBucket();
      await other.put('a.bin', Buffer.from('ok'));
      expect((await other.get('a.bin')).toString()).toBe('ok');
    } finally {
      other.close();
    }
  });

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
