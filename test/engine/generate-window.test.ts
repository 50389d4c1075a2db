// Generation past block_size (engine/eval/generate.ts): the sliding-window policy gives the same
// tokens with the KV cache as without it, for learned positions and for RoPE, greedy and seeded;
// the window restarts where the policy says; a prompt longer than block_size is cropped and said so.
//
// Tiny models with non-trivial weights: our init scaled up (x4 on every matrix, seed 5) and an
// untied head, so the logits are peaked and a greedy run wanders over many tokens instead of
// repeating one (a tied head with small weights mostly predicts the token it was fed).

import '../../engine/graph';
import { Decoder, pickToken, windowKeep } from '../../engine/eval';
import { initParams } from '../../engine/models/blocks';
import { decoderInfo, exportGpt } from '../../engine/models/export';
import { GptConfigSchema, gptParams, type GptConfig } from '../../engine/models/gpt';
import { EngineError } from '../../engine/errors';

const threads = { intraOpThreads: 1 };
const BLOCK = 16;

const configs: Record<string, GptConfig> = {
  learned: GptConfigSchema.parse({ vocab_size: 61, block_size: BLOCK, n_layer: 2, n_head: 2, n_embd: 32, tie_embeddings: false }),
  rope: GptConfigSchema.parse({ vocab_size: 61, block_size: BLOCK, n_layer: 2, n_head: 4, n_embd: 32, n_kv_head: 2, pos: 'rope', norm: 'rmsnorm', mlp: 'swiglu', bias: false, tie_embeddings: false }),
};

function weightsOf(cfg: GptConfig): Map<string, Float32Array> {
  const w = initParams(gptParams(cfg), 5);
  for (const [, data] of w) if (data.length > cfg.n_embd) for (let i = 0; i < data.length; i++) data[i] *= 4; // matrices only, norms stay 1
  return w;
}

/** The window each step of a run sees under the policy, replayed independently of the Decoder. */
function windowsOf(promptLength: number, steps: number, block: number, keep: number): number[] {
  let start = Math.max(0, promptLength - block);
  const sizes: number[] = [];
  for (let len = promptLength; sizes.length < steps; len++) {
    if (len - start > block) start = len - keep;
    sizes.push(len - start);
  }
  return sizes;
}

describe.each(Object.keys(configs))('generation past block_size, %s positions', (kind) => {
  const cfg = configs[kind];
  let plain: Decoder;
  let cached: Decoder;
  beforeAll(async () => {
    const w = weightsOf(cfg);
    plain = await Decoder.create(exportGpt(cfg, w), decoderInfo(cfg, false), threads);
    cached = await Decoder.create(exportGpt(cfg, w, { kvCache: true }), decoderInfo(cfg, true), threads);
  });
  afterAll(async () => {
    await plain.release();
    await cached.release();
  });

  const prompt = [3, 14, 15, 9, 26, 5];
  const N = 5 * BLOCK; // 80 new tokens after a 6-token prompt in a 16-token context

  test('greedy with the cache equals greedy without it, token for token, well past block_size', async () => {
    const a = await plain.decode(prompt, { maxNewTokens: N });
    const b = await cached.decode(prompt, { maxNewTokens: N });
    expect(b.tokens).toEqual(a.tokens);
    expect(a.tokens).toHaveLength(N);
    // Slides at the default keep (12 of 16): the window grows 6→16, then restarts at 12 every 5 tokens.
    const sizes = windowsOf(prompt.length, N, BLOCK, windowKeep(BLOCK));
    expect(Math.max(...sizes)).toBe(BLOCK);
    expect(a.slides).toBe(sizes.filter((s, i) => i > 0 && s < sizes[i - 1]).length);
    expect(b.slides).toBe(a.slides);
    expect(a.slides).toBe(14); // the first at step 11 (6 + 11 > 16), then steps 16, 21, …, 76
    expect(a.promptCropped).toBe(0);
    // The weights are non-trivial: the run is not one token repeated.
    expect(new Set(a.tokens).size).toBeGreaterThan(15); // 22 distinct tokens (learned), 38 (RoPE)
  });

  test('seeded sampling gives the same text with and without the cache; keep = block_size is nanoGPT’s crop-every-step', async () => {
    const sampled = { maxNewTokens: N, temperature: 0.8, topK: 40, topP: 0.95, seed: 7 };
    const a = await plain.decode(prompt, sampled);
    expect((await cached.decode(prompt, sampled)).tokens).toEqual(a.tokens);
    expect(await plain.generate(prompt, sampled)).toEqual(a.tokens); // seeded: a rerun is identical
    const crop = { maxNewTokens: 3 * BLOCK, windowKeep: BLOCK };
    const c = await plain.decode(prompt, crop);
    const d = await cached.decode(prompt, crop);
    expect(d.tokens).toEqual(c.tokens);
    expect(c.slides).toBe(3 * BLOCK - (BLOCK - prompt.length + 1)); // every step from step 11 on: the window stays at 16
    expect(windowsOf(prompt.length, 3 * BLOCK, BLOCK, BLOCK).slice(BLOCK - prompt.length)).toEqual(new Array(2 * BLOCK + prompt.length).fill(BLOCK));
  });

  test('a prompt longer than block_size is cropped to its last block_size tokens, and the result says so', async () => {
    const long = Array.from({ length: 2 * BLOCK + 3 }, (_, i) => (i * 7 + 2) % 61);
    const a = await plain.decode(long, { maxNewTokens: 20 });
    const b = await cached.decode(long, { maxNewTokens: 20 });
    expect(a.promptCropped).toBe(BLOCK + 3);
    expect(b).toEqual(a);
    // Exactly the continuation of the cropped prompt.
    expect((await cached.decode(long.slice(-BLOCK), { maxNewTokens: 20 })).tokens).toEqual(a.tokens);
  });
});

describe('window options', () => {
  test('windowKeep defaults to ⌊3·block_size/4⌋ and is checked against block_size', () => {
    expect(windowKeep(64)).toBe(48);
    expect(windowKeep(1)).toBe(1);
    expect(windowKeep(16, 16)).toBe(16);
    expect(() => windowKeep(16, 17)).toThrow(EngineError);
    expect(() => windowKeep(16, 0)).toThrow('generate: windowKeep must be an integer in [1, 16] (at most block_size), got 0');
  });

  test('the policy replay above matches its description', () => {
    // Prompt 6, block 16, keep 12: sizes 6..16, then 12..16 after each restart.
    expect(windowsOf(6, 18, 16, 12)).toEqual([6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 12, 13, 14, 15, 16, 12, 13]);
    expect(pickToken(Float32Array.from([0, 3, 1]), { maxNewTokens: 1 }, 0.5)).toBe(1);
  });
});
