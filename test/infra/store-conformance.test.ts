// The artifact store's contract, checked against both local S3 servers: s3rver (a test double,
// the default) and versitygw (a production S3 gateway over a POSIX folder). No mocks: each suite
// starts its real server on a free loopback port. Where the two differ on purpose (conditional
// writes) the test says what each one guarantees.

import { PutObjectCommand } from '@aws-sdk/client-s3';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import {
  ArtifactStore,
  CommitConflictError,
  contentKeyOf,
  IntegrityError,
  MANIFEST_NAME,
  NotFoundError,
  RangeNotSatisfiableError,
  type Manifest,
} from '../../infra/store';
import { S3_SERVER_KINDS, withS3, type S3Fixture, type S3ServerKind } from '../helpers/s3';

const MiB = 1024 * 1024;
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

/** Where each server keeps an object's bytes on disk. */
function objectFile(s3: S3Fixture, key: string): string {
  const file = path.join(s3.dir, s3.settings.bucket, ...key.split('/'));
  return s3.kind === 's3rver' ? `${file}._S3rver_object` : file;
}

/** Every file of a committed prefix, read through its manifest and checked against it. */
async function readCommitted(store: ArtifactStore, prefix: string, m: Manifest): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const f of m.files) out.set(f.name, await store.getVerified(prefix, f.name));
  return out;
}

describe.each(S3_SERVER_KINDS)('the store on %s', (kind: S3ServerKind) => {
  let s3: S3Fixture;
  let tmp: string;
  const bucket = 'truthgpt-test';
  beforeAll(async () => {
    // 5 MiB parts (the S3 minimum), so multipart objects stay small and the tests fast.
    s3 = await withS3({ server: kind, bucket, store: { partSize: 5 * MiB } });
    tmp = await mkdtemp(path.join(os.tmpdir(), `truthgpt-conformance-${kind}-`));
  }, 60_000);
  afterAll(async () => {
    await s3?.close();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  describe('objects', () => {
    test('round trip: put returns size and sha256, head/exists see it, get returns the bytes, delete is idempotent', async () => {
      const data = Buffer.from('weights and biases');
      expect(await s3.store.put('rt/small.bin', data, { metadata: { step: '7' } })).toEqual({ key: 'rt/small.bin', size: data.length, sha256: sha256(data), parts: 1 });
      const info = await s3.store.head('rt/small.bin');
      expect(info).toMatchObject({ key: 'rt/small.bin', size: data.length, sha256: sha256(data), contentType: 'application/octet-stream' });
      expect(info.metadata).toMatchObject({ step: '7' });
      expect(await s3.store.exists('rt/small.bin')).toBe(true);
      expectSameBytes(await s3.store.get('rt/small.bin'), data);
      await s3.store.putJson('rt/cfg.json', { n_layer: 2, n_embd: 64 });
      expect(await s3.store.getJson('rt/cfg.json')).toEqual({ n_layer: 2, n_embd: 64 });

      await s3.store.delete('rt/small.bin');
      expect(await s3.store.exists('rt/small.bin')).toBe(false);
      await expect(s3.store.delete('rt/small.bin')).resolves.toBeUndefined();
    });

    test('an overwrite replaces bytes, size and metadata as a whole', async () => {
      await s3.store.put('ow/x.bin', randomBytes(70_000), { metadata: { round: '1', extra: 'old' } });
      const second = Buffer.from('shorter');
      await s3.store.put('ow/x.bin', second, { metadata: { round: '2' } });
      const info = await s3.store.head('ow/x.bin');
      expect(info).toMatchObject({ size: second.length, sha256: sha256(second) });
      expect(info.metadata.round).toBe('2');
      expect(info.metadata.extra).toBeUndefined();
      expectSameBytes(await s3.store.get('ow/x.bin'), second);
      expect((await s3.store.list('ow/')).map((o) => [o.key, o.size])).toEqual([['ow/x.bin', second.length]]);
    });

    test('concurrent writes and reads of one key see whole objects only (S3 object writes are atomic)', async () => {
      const bodies = Array.from({ length: 8 }, (_, i) => randomBytes(200_000 + i * 10_000));
      await s3.store.put('atomic/x.bin', bodies[0]!);
      // Writers and readers interleaved: every read must pass its sha256 check, whichever write it sees.
      const reads: Promise<Buffer>[] = [];
      const writes = bodies.map((b) => {
        reads.push(s3.store.get('atomic/x.bin'));
        return s3.store.put('atomic/x.bin', b);
      });
      await Promise.all(writes);
      const shas = new Set(bodies.map(sha256));
      for (const r of await Promise.all(reads)) expect(shas.has(sha256(r))).toBe(true);
      const final = await s3.store.get('atomic/x.bin');
      expect(shas.has(sha256(final))).toBe(true);
      expect((await s3.store.head('atomic/x.bin')).size).toBe(final.length);
    });

    test('missing keys and buckets are NotFoundErrors naming bucket and key, on every read', async () => {
      const where = `s3://${bucket}/rt/nope.bin`;
      for (const read of [
        () => s3.store.get('rt/nope.bin'),
        () => s3.store.head('rt/nope.bin'),
        () => s3.store.getStream('rt/nope.bin'),
        () => s3.store.getRange('rt/nope.bin', 0, 9),
        () => s3.store.download('rt/nope.bin', path.join(tmp, 'nope.bin')),
      ]) {
        const err = await read().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(NotFoundError);
        expect(err).toMatchObject({ bucket, key: 'rt/nope.bin' });
        expect((err as Error).message).toContain(`${where} not found`);
      }
      expect(await s3.store.exists('rt/nope.bin')).toBe(false);
      await expect(readFile(path.join(tmp, 'nope.bin'))).rejects.toThrow('ENOENT');
      expect(await s3.store.readManifest('ckpt/never')).toBeNull();
      await expect(s3.store.getVerified('ckpt/never', 'model.safetensors')).rejects.toThrow(`s3://${bucket}/ckpt/never/MANIFEST.json not found (prefix not committed)`);

      const other = new ArtifactStore({ ...s3.settings, bucket: `second-${kind}` });
      try {
        const err = await other.get('a.bin').catch((e: unknown) => e);
        expect(err).toBeInstanceOf(NotFoundError);
        expect(err).toMatchObject({ bucket: `second-${kind}`, key: undefined });
        // ensureBucket creates it (twice is fine), then it works.
        await other.ensureBucket();
        await other.ensureBucket();
        await other.put('a.bin', Buffer.from('ok'));
        expect((await other.get('a.bin')).toString()).toBe('ok');
      } finally {
        other.close();
      }
    });
  });

  describe('multipart', () => {
    test('a 12 MB buffer goes up in 5 MiB parts and reads back whole, streamed and downloaded', async () => {
      const data = randomBytes(12_000_000);
      const put = await s3.store.put('big/buffer.bin', data);
      expect(put).toEqual({ key: 'big/buffer.bin', size: 12_000_000, sha256: sha256(data), parts: 3 });
      expect(await s3.store.head('big/buffer.bin')).toMatchObject({ size: 12_000_000, sha256: sha256(data) });
      expectSameBytes(await s3.store.get('big/buffer.bin'), data);
      expect(sha256(await collect(await s3.store.getStream('big/buffer.bin')))).toBe(sha256(data));
      const dst = path.join(tmp, 'buffer.bin');
      expect(await s3.store.download('big/buffer.bin', dst, sha256(data))).toEqual({ size: data.length, sha256: sha256(data) });
      expectSameBytes(await readFile(dst), data);
    });

    test('bytes larger than a part go up on the upload thread (infra/upload-thread.ts): committed intact; a missing bucket is still a NotFoundError', async () => {
      const [w, o] = [randomBytes(11 * MiB + 3), randomBytes(6 * MiB)];
      const m = await s3.store.commit('thread/c1', { 'model.safetensors': { bytes: w, sha256: sha256(w) }, 'optimizer.safetensors': o });
      expect(m.files.map((f) => [f.name, f.size, f.sha256])).toEqual([['model.safetensors', w.length, sha256(w)], ['optimizer.safetensors', o.length, sha256(o)]]);
      expectSameBytes(await s3.store.getVerified('thread/c1', 'model.safetensors'), w);
      expectSameBytes(await s3.store.getVerified('thread/c1', 'optimizer.safetensors'), o);
      // The caller's buffer is copied to the thread, not taken from it.
      expect(w.length).toBe(11 * MiB + 3);
      const other = new ArtifactStore({ ...s3.settings, bucket: `no-such-${kind}` }, { partSize: 5 * MiB });
      try {
        const err = await other.putHashed((h) => `x/${h}`, o).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(NotFoundError);
        expect(err).toMatchObject({ bucket: `no-such-${kind}` });
      } finally {
        other.close();
      }
    });

    test('a stream of unknown length is hashed on the way and uploaded in parts; a small one is one PutObject', async () => {
      const data = randomBytes(11 * MiB + 5);
      expect(await s3.store.put('big/stream.bin', chunked(data))).toMatchObject({ size: data.length, sha256: sha256(data), parts: 3 });
      expect((await s3.store.head('big/stream.bin')).sha256).toBe(sha256(data));
      expectSameBytes(await s3.store.get('big/stream.bin'), data);
      const small = randomBytes(300_000);
      expect(await s3.store.put('rt/small-stream.bin', chunked(small, 4096))).toMatchObject({ size: small.length, sha256: sha256(small), parts: 1 });
      expectSameBytes(await s3.store.get('rt/small-stream.bin'), small);
    });

    test('putFile sends a file in parts straight from disk', async () => {
      const data = randomBytes(5 * MiB + 17);
      const src = path.join(tmp, 'src.bin');
      await writeFile(src, data);
      expect(await s3.store.putFile('files/src.bin', src)).toMatchObject({ size: data.length, sha256: sha256(data), parts: 2 });
      expectSameBytes(await s3.store.get('files/src.bin'), data);
    });
  });

  describe('ranged reads', () => {
    const data = randomBytes(11 * MiB);
    beforeAll(() => s3.store.put('big/range.bin', data));

    test('exactly the requested bytes: across a part boundary, the first byte, the tail', async () => {
      const boundary = 5 * MiB;
      expectSameBytes(await s3.store.getRange('big/range.bin', boundary - 10, boundary + 9), data.subarray(boundary - 10, boundary + 10));
      expectSameBytes(await s3.store.getRange('big/range.bin', 0, 0), data.subarray(0, 1));
      expectSameBytes(await s3.store.getRange('big/range.bin', data.length - 10, data.length - 1), data.subarray(data.length - 10));
    });

    test('an end past the object is clipped; a start past it is a RangeNotSatisfiableError naming the key', async () => {
      expectSameBytes(await s3.store.getRange('big/range.bin', data.length - 5, data.length + 100), data.subarray(data.length - 5));
      const err = await s3.store.getRange('big/range.bin', data.length, data.length + 10).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RangeNotSatisfiableError);
      expect((err as Error).message).toBe(`range bytes=${data.length}-${data.length + 10} is outside s3://${bucket}/big/range.bin`);
      await expect(s3.store.getRange('big/range.bin', 5, 4)).rejects.toThrow('0 <= start <= endInclusive');
    });
  });

  describe('listing', () => {
    const keys = Array.from({ length: 23 }, (_, i) => `ls/a/${String(i).padStart(3, '0')}`).concat('ls/a/x/1', 'ls/a/x/2', 'ls/ab/1', 'ls/b/1');
    beforeAll(async () => {
      for (const k of keys) await s3.store.put(k, Buffer.from(k));
    });

    test('pages through more keys than a page with continuation tokens, in key order', async () => {
      const pages: string[][] = [];
      for await (const page of s3.store.pages('ls/a/', 10)) pages.push(page.map((o) => o.key));
      expect(pages.map((p) => p.length)).toEqual([10, 10, 5]);
      expect(pages.flat()).toEqual(keys.filter((k) => k.startsWith('ls/a/')));
      expect(await s3.store.list('ls/', 7)).toEqual(keys.map((key) => ({ key, size: key.length })));
      // A raw prefix, not a folder: 'ls/a' also matches 'ls/ab/...'.
      expect((await s3.store.list('ls/a', 1000)).length).toBe(26);
      expect(await s3.store.list('ls/none/')).toEqual([]);
    });

    test('deletePrefix removes every key under a prefix, across pages', async () => {
      expect(await s3.store.deletePrefix('ls/a/')).toBe(25);
      expect((await s3.store.list('ls/')).map((o) => o.key)).toEqual(['ls/ab/1', 'ls/b/1']);
      await expect(s3.store.deletePrefix('')).rejects.toThrow('refusing to delete the whole bucket');
    });
  });

  describe('checksums', () => {
    test("an object overwritten behind the store's back fails every full read, naming the key", async () => {
      const good = randomBytes(50_000);
      const put = await s3.store.put('corrupt/w.bin', good);
      const bad = Buffer.from(good);
      bad[1234] ^= 0xff;
      // A raw S3 write that keeps the old hash in the metadata, as a bit flip on disk would.
      await s3.store.client.send(new PutObjectCommand({ Bucket: bucket, Key: 'corrupt/w.bin', Body: bad, Metadata: { sha256: put.sha256 } }));

      const err = await s3.store.get('corrupt/w.bin').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(IntegrityError);
      expect(err).toMatchObject({ key: 'corrupt/w.bin', expected: put.sha256, actual: sha256(bad), source: 'object metadata' });
      expect((err as Error).message).toContain(`s3://${bucket}/corrupt/w.bin`);
      await expect(collect(await s3.store.getStream('corrupt/w.bin'))).rejects.toThrow(IntegrityError);
      const dst = path.join(tmp, 'corrupt.bin');
      await expect(s3.store.download('corrupt/w.bin', dst)).rejects.toThrow('corrupt/w.bin');
      await expect(readFile(dst)).rejects.toThrow('ENOENT');
    });

    test('a multipart object truncated on the server disk is caught on read', async () => {
      const data = randomBytes(6 * MiB);
      await s3.store.put('corrupt/big.bin', data);
      await writeFile(objectFile(s3, 'corrupt/big.bin'), data.subarray(0, 5 * MiB));
      await expect(s3.store.get('corrupt/big.bin')).rejects.toThrow(/integrity check failed for s3:\/\/truthgpt-test\/corrupt\/big\.bin/);
    });

    test('download checks the caller\'s sha256 too', async () => {
      const data = Buffer.from('expected bytes');
      await s3.store.put('rt/check.bin', data);
      const dst = path.join(tmp, 'check.bin');
      await expect(s3.store.download('rt/check.bin', dst, '0'.repeat(64))).rejects.toThrow(`but the caller says ${'0'.repeat(64)}`);
      await expect(readFile(dst)).rejects.toThrow('ENOENT');
    });
  });

  describe('commits', () => {
    test('a prefix is invisible until its manifest exists; files are content-addressed and verify against it', async () => {
      const weights = randomBytes(100_000);
      const optim = randomBytes(6 * MiB);
      const cfg = Buffer.from('{"n_layer":2}');
      const preUploaded = await s3.store.put('ckpt/v1-extra/notes.txt', Buffer.from('written before the commit'));
      const manifest = await s3.store.commit(
        'ckpt/v1/',
        { 'model.safetensors': weights, 'optim.safetensors': chunked(optim), 'config.json': cfg, 'notes.txt': preUploaded },
        { step: 100, bestValLoss: 2.5 },
      );
      expect(manifest.prefix).toBe('ckpt/v1');
      expect(manifest.files.map((f) => [f.name, f.key, f.size, f.sha256])).toEqual([
        ['model.safetensors', contentKeyOf('ckpt/v1', 'model.safetensors', sha256(weights)), weights.length, sha256(weights)],
        ['optim.safetensors', `ckpt/v1/sha256-${sha256(optim)}/optim.safetensors`, optim.length, sha256(optim)],
        ['config.json', `ckpt/v1/sha256-${sha256(cfg)}/config.json`, cfg.length, sha256(cfg)],
        // An object the caller uploaded itself keeps its key (checked, not copied).
        ['notes.txt', 'ckpt/v1-extra/notes.txt', preUploaded.size, preUploaded.sha256],
      ]);
      expect(await s3.store.readManifest('ckpt/v1')).toEqual(manifest);
      expect((await s3.store.list('ckpt/v1/')).map((o) => o.key).sort()).toEqual([...manifest.files.slice(0, 3).map((f) => f.key), `ckpt/v1/${MANIFEST_NAME}`].sort());
      expectSameBytes(await s3.store.getVerified('ckpt/v1', 'optim.safetensors'), optim);
      const local = path.join(tmp, 'model.safetensors');
      expect(await s3.store.downloadVerified('ckpt/v1', 'model.safetensors', local)).toEqual({ size: weights.length, sha256: sha256(weights) });
      expectSameBytes(await readFile(local), weights);
      await expect(s3.store.getVerified('ckpt/v1', 'rng.bin')).rejects.toThrow(
        'not in ckpt/v1/MANIFEST.json; it lists: model.safetensors, optim.safetensors, config.json, notes.txt',
      );
    });

    test('a commit that fails halfway leaves no manifest', async () => {
      const failing = new Readable({
        read() {
          this.destroy(new Error('worker lost its disk'));
        },
      });
      await expect(s3.store.commit('ckpt/v2', { 'model.safetensors': randomBytes(1000), 'optim.safetensors': failing })).rejects.toThrow('worker lost its disk');
      expect(await s3.store.readManifest('ckpt/v2')).toBeNull();
      // Files upload in parallel: the good one may or may not have landed before the failure ended
      // the commit (both seen on versitygw). What must never be there is the manifest.
      const left = (await s3.store.list('ckpt/v2/')).map((o) => o.key);
      expect(left.filter((k) => !/^ckpt\/v2\/sha256-[0-9a-f]{64}\/model\.safetensors$/.test(k))).toEqual([]);
    });

    test('a committed file replaced in place fails getVerified against the manifest', async () => {
      const m = await s3.store.commit('ckpt/v3', { 'model.safetensors': Buffer.from('original weights') });
      // A well-formed write (its own metadata is consistent) that the manifest does not vouch for.
      await s3.store.put(m.files[0]!.key, Buffer.from('other weights!!!'));
      await expect(s3.store.getVerified('ckpt/v3', 'model.safetensors')).rejects.toThrow(
        /integrity check failed for s3:\/\/truthgpt-test\/ckpt\/v3\/sha256-[0-9a-f]{64}\/model\.safetensors: sha256 is [0-9a-f]{64} but manifest ckpt\/v3\/MANIFEST.json says/,
      );
      const local = path.join(tmp, 'v3-model.safetensors');
      await expect(s3.store.downloadVerified('ckpt/v3', 'model.safetensors', local)).rejects.toThrow(m.files[0]!.key);
      await expect(readFile(local)).rejects.toThrow('ENOENT');
    });

    test('committing the same files again returns a manifest with the same files, the old one readable', async () => {
      const files = { 'model.safetensors': randomBytes(40_000), 'config.json': Buffer.from('{"step":3}') };
      const first = await s3.store.commit('ckpt/again', files, { attempt: 1 });
      const second = await s3.store.commit('ckpt/again', files, { attempt: 2 });
      expect(second.files).toEqual(first.files);
      const stored = (await s3.store.readManifest('ckpt/again'))!;
      // With conditional writes the first commit stands (its meta too); without, the last one written.
      expect(stored).toEqual(kind === 'versitygw' ? first : second);
      expect(second).toEqual(stored);
      expectSameBytes(await s3.store.getVerified('ckpt/again', 'model.safetensors'), files['model.safetensors']);
    });

    test(`conditional writes are probed: ${kind === 'versitygw' ? 'honoured' : 'ignored'}, and a commit of different files ${kind === 'versitygw' ? 'is refused' : 'replaces the first'}`, async () => {
      expect(await s3.store.conditionalWrites('probe')).toBe(kind === 'versitygw');
      expect(await s3.store.list('probe/')).toEqual([]);
      const a = { 'model.safetensors': randomBytes(30_000), 'config.json': Buffer.from('{"same":true}') };
      const b = { 'model.safetensors': randomBytes(30_000), 'config.json': Buffer.from('{"same":true}') };
      const first = await s3.store.commit('ckpt/differ', a);
      if (kind === 'versitygw') {
        const err = await s3.store.commit('ckpt/differ', b).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(CommitConflictError);
        expect(err).toMatchObject({
          prefix: 'ckpt/differ',
          manifestKey: 'ckpt/differ/MANIFEST.json',
          differences: [{ name: 'model.safetensors', ours: sha256(b['model.safetensors']), committed: sha256(a['model.safetensors']) }],
        });
        expect((err as Error).message).toMatch(/^commit ckpt\/differ: another commit created s3:\/\/truthgpt-test\/ckpt\/differ\/MANIFEST.json first with different files \(model\.safetensors sha256 [0-9a-f]{12}… \(ours\) vs [0-9a-f]{12}… \(committed\)\)/);
        expect(await s3.store.readManifest('ckpt/differ')).toEqual(first);
        // The loser's own file is gone again; the shared config.json stays.
        expect((await s3.store.list('ckpt/differ/')).map((o) => o.key).sort()).toEqual([...first.files.map((f) => f.key), 'ckpt/differ/MANIFEST.json'].sort());
      } else {
        // s3rver ignores If-None-Match: the last manifest wins. It still lists only intact files.
        const second = await s3.store.commit('ckpt/differ', b);
        expect(await s3.store.readManifest('ckpt/differ')).toEqual(second);
        expectSameBytes(await s3.store.getVerified('ckpt/differ', 'model.safetensors'), b['model.safetensors']);
      }
      expect(await s3.store.list('probe/')).toEqual([]);
    });
  });

  describe('racing commits', () => {
    /** One attempt's checkpoint: a multipart model, an optimizer state and a config naming the attempt. */
    const attempt = (n: number) => ({
      'model.safetensors': randomBytes(6 * MiB),
      'optimizer.safetensors': randomBytes(200_000),
      'checkpoint.json': Buffer.from(JSON.stringify({ step: 100, attempt: n })),
    });

    test('two attempts with different bytes: one manifest wins, its checkpoint reads back intact', async () => {
      for (let round = 0; round < 3; round++) {
        const prefix = `race/r${round}`;
        const tries = [attempt(1), attempt(2)];
        const settled = await Promise.allSettled(tries.map((files) => s3.store.commit(prefix, files, { by: files['checkpoint.json'].toString() })));
        const stored = (await s3.store.readManifest(prefix))!;
        const won = tries.findIndex((t) => sha256(t['model.safetensors']) === stored.files[0]!.sha256);
        expect(won).toBeGreaterThanOrEqual(0);
        // The reader sees one whole attempt: every file matches the manifest and the winner's bytes.
        const read = await readCommitted(s3.store, prefix, stored);
        for (const [name, bytes] of Object.entries(tries[won]!)) expectSameBytes(read.get(name)!, bytes);

        if (kind === 'versitygw') {
          expect(settled.map((s) => s.status).sort()).toEqual(['fulfilled', 'rejected']);
          expect(settled[won]).toEqual({ status: 'fulfilled', value: stored });
          const lost = settled[1 - won] as PromiseRejectedResult;
          expect(lost.reason).toBeInstanceOf(CommitConflictError);
          expect((lost.reason as CommitConflictError).differences.map((d) => d.name).sort()).toEqual(['checkpoint.json', 'model.safetensors', 'optimizer.safetensors']);
          // Nothing of the loser's is left under the prefix.
          expect((await s3.store.list(`${prefix}/`)).map((o) => o.key).sort()).toEqual([...stored.files.map((f) => f.key), `${prefix}/MANIFEST.json`].sort());
        } else {
          // Without conditional writes both "succeed" and the last manifest written stands.
          expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'fulfilled']);
        }
      }
    }, 60_000);

    test('two attempts with the same bytes both succeed with the same files', async () => {
      const files = attempt(0);
      const [x, y] = await Promise.all([s3.store.commit('race/same', files, { by: 'x' }), s3.store.commit('race/same', files, { by: 'y' })]);
      expect(x.files).toEqual(y.files);
      const stored = (await s3.store.readManifest('race/same'))!;
      expect(stored.files).toEqual(x.files);
      const read = await readCommitted(s3.store, 'race/same', stored);
      for (const [name, bytes] of Object.entries(files)) expectSameBytes(read.get(name)!, bytes);
      if (kind === 'versitygw') expect([x, y]).toEqual([stored, stored]);
    }, 60_000);

    test('create-only writes of one key: exactly one of eight racers creates it', async () => {
      if (kind === 's3rver') {
        // s3rver ignores the header, which is why commits probe for it instead of assuming it.
        expect(await s3.store.conditionalWrites('race')).toBe(false);
        return;
      }
      const bodies = Array.from({ length: 8 }, (_, i) => Buffer.from(`racer ${i}`));
      const results = await Promise.all(bodies.map((b) => s3.store.putIfAbsent('race/once.json', b)));
      const created = results.flatMap((r, i) => (r ? [i] : []));
      expect(created).toHaveLength(1);
      expect((await s3.store.get('race/once.json')).toString()).toBe(`racer ${created[0]}`);
    });
  });
});
