// s3rver vs versitygw as the local S3 server, each started as its own process the way
// `truthgpt up` starts it: time until it answers with the bucket created, memory idle and at peak,
// and the store's throughput on it (one multipart object up and down, many small objects, a
// checkpoint commit). Prints a table and writes bench/out/s3-servers.json.
//
//   npm run bench -- s3-servers [--mib 64] [--small 200] [--repeat 3]

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { freePort } from '../infra/ports';
import { LOCAL_S3_CREDENTIALS } from '../infra/s3server';
import { tsCommand } from '../infra/stack-spawn';
import { ArtifactStore } from '../infra/store';
import { ensureVersitygw, versitygwCommand, versitygwEndpoint, versitygwHealthy } from '../infra/versitygw';

type Kind = 's3rver' | 'versitygw';

interface Row {
  server: Kind;
  readyMs: number;
  rssIdleMiB: number;
  rssPeakMiB: number;
  putMiBps: number;
  getMiBps: number;
  smallPutsPerS: number;
  commitMs: number;
}

const BUCKET = 'bench';
const MiB = 1024 * 1024;

function memMiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return kb / 1024;
}

async function start(kind: Kind, dir: string, port: number): Promise<{ child: ChildProcess; store: ArtifactStore }> {
  const endpoint = versitygwEndpoint('127.0.0.1', port);
  const store = new ArtifactStore({ endpoint, region: 'us-east-1', bucket: BUCKET, ...LOCAL_S3_CREDENTIALS, forcePathStyle: true });
  let child: ChildProcess;
  if (kind === 'versitygw') {
    const cmd = versitygwCommand(await ensureVersitygw(), { dir, host: '127.0.0.1', port, credentials: LOCAL_S3_CREDENTIALS, region: 'us-east-1' });
    child = spawn(cmd.command, cmd.args, { env: { ...process.env, ...cmd.env }, stdio: 'ignore' });
    while (!(await versitygwHealthy(endpoint, 500)).ok) await new Promise((r) => setTimeout(r, 20));
    await store.ensureBucket();
  } else {
    const cmd = tsCommand('infra/s3server.ts', ['--dir', dir, '--port', String(port), '--bucket', BUCKET]);
    child = spawn(cmd.command, cmd.args, { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => d.toString().includes('s3 ready') && resolve());
      child.once('exit', (code) => reject(new Error(`s3rver exited with ${code}`)));
    });
  }
  return { child, store };
}

async function measure(kind: Kind, mib: number, small: number): Promise<Row> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `truthgpt-bench-${kind}-`));
  const port = await freePort();
  const t0 = performance.now();
  const { child, store } = await start(kind, dir, port);
  const readyMs = performance.now() - t0;
  try {
    await new Promise((r) => setTimeout(r, 500));
    const rssIdleMiB = memMiB(child.pid!, 'VmRSS');

    const big = randomBytes(mib * MiB);
    let t = performance.now();
    await store.put('big.bin', big);
    const putMiBps = mib / ((performance.now() - t) / 1000);
    t = performance.now();
    await store.get('big.bin');
    const getMiBps = mib / ((performance.now() - t) / 1000);

    const body = randomBytes(4096);
    t = performance.now();
    for (let i = 0; i < small; i++) await store.put(`small/${i}`, body);
    const smallPutsPerS = small / ((performance.now() - t) / 1000);

    const files = { 'model.safetensors': randomBytes(8 * MiB), 'optimizer.safetensors': randomBytes(16 * MiB), 'checkpoint.json': Buffer.from('{}') };
    await store.conditionalWrites('ckpt');
    t = performance.now();
    await store.commit('ckpt/r000001', files);
    const commitMs = performance.now() - t;
    return { server: kind, readyMs, rssIdleMiB, rssPeakMiB: memMiB(child.pid!, 'VmHWM'), putMiBps, getMiBps, smallPutsPerS, commitMs };
  } finally {
    store.close();
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { mib: { type: 'string', default: '64' }, small: { type: 'string', default: '200' }, repeat: { type: 'string', default: '3' } } });
  const [mib, small, repeat] = [Number(values.mib), Number(values.small), Number(values.repeat)];
  const rounds: Row[] = [];
  for (let r = 0; r < repeat; r++) for (const kind of ['s3rver', 'versitygw'] as Kind[]) rounds.push(await measure(kind, mib, small));
  // Best of the rounds per figure (the machine is shared): fastest times, highest rates, least memory.
  const best = (['s3rver', 'versitygw'] as Kind[]).map((server) => {
    const rs = rounds.filter((x) => x.server === server);
    const min = (f: (x: Row) => number) => Math.min(...rs.map(f));
    const max = (f: (x: Row) => number) => Math.max(...rs.map(f));
    return {
      server,
      readyMs: min((x) => x.readyMs),
      rssIdleMiB: min((x) => x.rssIdleMiB),
      rssPeakMiB: min((x) => x.rssPeakMiB),
      putMiBps: max((x) => x.putMiBps),
      getMiBps: max((x) => x.getMiBps),
      smallPutsPerS: max((x) => x.smallPutsPerS),
      commitMs: min((x) => x.commitMs),
    };
  });
  const load = os.loadavg().map((l) => l.toFixed(2)).join(' ');
  console.log(`best of ${repeat} rounds; ${mib} MiB object, ${small} × 4 KiB puts, 24 MiB checkpoint commit; load average ${load}\n`);
  console.log('| server | ready ms | RSS idle MiB | RSS peak MiB | put MiB/s | get MiB/s | 4 KiB puts/s | commit ms |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const b of best) {
    console.log(`| ${b.server} | ${b.readyMs.toFixed(0)} | ${b.rssIdleMiB.toFixed(0)} | ${b.rssPeakMiB.toFixed(0)} | ${b.putMiBps.toFixed(0)} | ${b.getMiBps.toFixed(0)} | ${b.smallPutsPerS.toFixed(0)} | ${b.commitMs.toFixed(0)} |`);
  }
  const out = path.join(__dirname, 'out');
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 's3-servers.json'), JSON.stringify({ date: new Date().toISOString(), load, mib, small, repeat, best, rounds }, null, 2) + '\n');
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
