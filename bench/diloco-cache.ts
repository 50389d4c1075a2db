// What a GPU-pool worker's tensor cache (artifacts/tensor-cache.ts, the real class and budget)
// does over DiLoCo rounds at gpt2-small size when W shards run on one worker: the calls trainShard
// makes, in its order (read the global weights; read the shard's previous optimizer state; commit
// the result), replayed with the real file sizes and no transfers. Prints what each round reads from
// the store, with the shard's weights kept or not and the read optimizer state dropped or not. A
// replay of the activity's cache traffic, not a run: the gpt2-small step does not fit on this
// machine beside the stack (bench/RESULTS.md).
//
//   npm run bench -- diloco-cache [--workers 2,4,5] [--rounds 5] [--memory-gib 24]

import { parseArgs } from 'node:util';
import { TensorCache } from '../artifacts/tensor-cache';

const WEIGHTS = 495_399_936; // 123.8 M float32 values: gpt2-small with block 256, as diloco-io builds it
const MOMENTS = 2 * WEIGHTS; // AdamW m and v

async function main() {
  const { values } = parseArgs({ options: { workers: { type: 'string', default: '2,4,5' }, rounds: { type: 'string', default: '5' }, 'memory-gib': { type: 'string', default: '24' } } });
  const budget = Math.min(8 * 2 ** 30, Math.floor((Number(values['memory-gib']) * 2 ** 30) / 4)); // as tensorCache sizes itself
  const rows = [];
  for (const W of values.workers.split(',').map(Number)) {
    for (const [keepWeights, dropRead] of [[true, false], [false, true]] as const) {
      const cache = new TensorCache(budget);
      let read = 0;
      const get = async (sha: string, bytes: number) => {
        if (!cache.has(sha)) read += bytes;
        await cache.get(sha, bytes, async () => new Map());
      };
      for (let r = 0; r < Number(values.rounds); r++) {
        await get(`global-${r}`, WEIGHTS);
        for (let k = 0; k < W; k++) {
          if (r > 0) {
            await get(`moments-${k}-${r - 1}`, MOMENTS);
            if (dropRead) cache.drop(`moments-${k}-${r - 1}`);
          }
          if (keepWeights) cache.put(`weights-${k}-${r}`, new Map(), WEIGHTS);
          cache.put(`moments-${k}-${r}`, new Map(), MOMENTS);
        }
      }
      rows.push({ W, cacheGiB: +(budget / 2 ** 30).toFixed(2), code: keepWeights ? 'before: weights kept, read state kept' : 'after: weights not kept, read state dropped', readPerRoundGB: +(read / Number(values.rounds) / 1e9).toFixed(2) });
    }
  }
  console.table(rows);
}

void main();
