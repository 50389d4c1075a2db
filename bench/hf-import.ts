// `npm run bench -- hf-import DIR [DIR...]`: peak memory of importing a Hugging Face folder, against
// the model's float32 bytes. Each folder and phase runs in its own process, which reports VmHWM from
// /proc/self/status, so a peak is that import's alone:
//   engine  readHfFolder (tensors read one at a time) + packCheckpoint (the bytes a commit uploads)
//   store   importHfModel into an s3rver started in the same process (the whole `truthgpt import`)
// Make a gpt2-small-sized folder with random weights (124M parameters, not committed) with:
//   python -c "from transformers import GPT2Config, GPT2LMHeadModel as M; m = M(GPT2Config()); \
//     m.save_pretrained('bench/out/hf/gpt2-small-fp32'); m.bfloat16().save_pretrained('bench/out/hf/gpt2-small-bf16')"
//   npm run bench -- hf-import bench/out/hf/gpt2-small-fp32 bench/out/hf/gpt2-small-bf16

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command } from 'commander';
import { importHfModel } from '../artifacts/hf-models';
import { packCheckpoint } from '../engine/checkpoint/checkpoint';
import { readHfFolder } from '../engine/hf';
import { LOCAL_S3_CREDENTIALS, startS3Server } from '../infra/s3server';
import { ArtifactStore } from '../infra/store';

const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN) * 1024;
const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;

async function child(dir: string, phase: string): Promise<void> {
  const base = kib('VmRSS');
  const t0 = performance.now();
  let params = 0;
  let dtypes: string[] = [];
  if (phase === 'engine') {
    const m = readHfFolder(dir);
    params = m.params;
    dtypes = m.sourceDtypes;
    const shapes = new Map(m.specs.map((s) => [s.name, s.shape]));
    const weights = new Map([...m.weights].map(([n, data]) => [n, { dtype: 'float32' as const, dims: shapes.get(n)!, data }]));
    const files = packCheckpoint({ weights, optimizer: new Map(), state: { modelConfig: m.config, runConfig: {}, step: 0, round: 0, bestValLoss: null, dataCursor: null, rng: [] } });
    if (files.size !== 3) throw new Error('packCheckpoint: expected 3 files');
  } else {
    const s3dir = mkdtempSync(path.join(os.tmpdir(), 'bench-hf-s3-'));
    const server = await startS3Server({ dir: s3dir, port: 0, bucket: 'bench' });
    const store = new ArtifactStore({ endpoint: server.endpoint, region: 'us-east-1', bucket: 'bench', ...LOCAL_S3_CREDENTIALS, forcePathStyle: true });
    try {
      const r = await importHfModel(store, dir, { name: 'bench' });
      params = r.import.params;
      dtypes = r.import.sourceDtypes;
    } finally {
      store.close();
      await server.close();
      rmSync(s3dir, { recursive: true, force: true });
    }
  }
  console.log(JSON.stringify({ dir, phase, params, dtypes, base, hwm: kib('VmHWM'), seconds: (performance.now() - t0) / 1000 }));
}

function parent(dirs: string[], phases: string[]): void {
  const rows = [];
  for (const dir of dirs) {
    for (const phase of phases) {
      const r = spawnSync(process.execPath, [...process.execArgv, __filename, '--child', phase, dir], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`bench hf-import ${dir} ${phase}: ${r.stderr}`);
      const m = JSON.parse(r.stdout.trim().split('\n').pop()!) as { params: number; dtypes: string[]; base: number; hwm: number; seconds: number };
      const fp32 = m.params * 4;
      rows.push({
        folder: `${path.basename(dir)} (${m.dtypes.join('+')})`,
        phase,
        params: `${(m.params / 1e6).toFixed(1)} M`,
        'fp32 bytes': gib(fp32),
        'peak RSS (VmHWM)': gib(m.hwm),
        'RSS at start': gib(m.base),
        '(peak - start) / fp32': ((m.hwm - m.base) / fp32).toFixed(2),
        seconds: m.seconds.toFixed(1),
      });
    }
  }
  console.log(`bench hf-import: ${new Date().toISOString()}, ${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}, load ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  console.table(rows);
  console.log(JSON.stringify(rows));
}

const program = new Command('hf-import')
  .argument('<dirs...>', 'Hugging Face model folders')
  .option('--phases <list>', 'engine, store (comma-separated)', 'engine,store')
  .option('--child <phase>', 'internal: measure one folder and phase in this process')
  .action(async (dirs: string[], o: { phases: string; child?: string }) => {
    if (o.child) return child(dirs[0]!, o.child);
    parent(dirs, o.phases.split(','));
  });
program.parseAsync(process.argv).catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
